"""SpeechVocab: which token ids are text, speech units, modality markers and the rest.

A speech LM's vocabulary is a text LM's vocabulary extended with discrete speech units
(and, for some families, pitch and style tokens and modality markers). Every analysis
needs to know these partitions exactly, so :class:`SpeechVocab` is computed from the
checkpoint's tokenizer and embedding size (never from hard-coded ids) and is a plain,
serialisable object.

Groups (every id in ``[0, vocab_size)`` belongs to exactly one):

- ``speech``: the speech units, contiguous, unit ``u`` at ``units.start + u``;
- ``marker``: the modality markers (``{"text": id, "speech": id}``);
- one group per extra family-specific range (``pitch``, ``style`` for SpiritLM Expressive);
- ``special``: the base tokenizer's special tokens (BOS, EOS, padding, chat tokens);
- ``padding``: embedding rows beyond the tokenizer (never produced by the tokenizer);
- ``text``: everything else below ``tokenizer_size``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from slm_transformerlens.errors import VocabularyError

__all__ = [
    "KNOWN_UNIT_FORMATS",
    "SpeechVocab",
    "TokenRange",
    "find_numbered_tokens",
]

#: Unit token formats seen in public speech LMs, tried in order by the generic loader.
KNOWN_UNIT_FORMATS: tuple[str, ...] = ("<Un{}>", "[Hu{}]", "<|audio_{}|>", "<{}>")


@dataclass(frozen=True)
class TokenRange:
    """A contiguous, half-open range of token ids ``[start, stop)``."""

    start: int
    stop: int

    def __post_init__(self) -> None:
        if self.stop < self.start or self.start < 0:
            raise VocabularyError(f"invalid token range [{self.start}, {self.stop})")

    def __len__(self) -> int:
        return self.stop - self.start

    def __contains__(self, token_id: object) -> bool:
        return isinstance(token_id, int) and self.start <= token_id < self.stop

    def to_list(self) -> list[int]:
        """``[start, stop]`` as a JSON-friendly list."""
        return [self.start, self.stop]


def _format_to_regex(token_format: str) -> re.Pattern[str]:
    if token_format.count("{}") != 1:
        raise VocabularyError(
            f"token format {token_format!r} must contain exactly one '{{}}' where the number goes, "
            "e.g. '<Un{}>' or '[Hu{}]'"
        )
    prefix, suffix = token_format.split("{}")
    return re.compile(re.escape(prefix) + r"(0|[1-9][0-9]*)" + re.escape(suffix))


def find_numbered_tokens(
    token_to_id: Mapping[str, int], token_format: str, *, group: str = "unit"
) -> TokenRange | None:
    """Find the tokens ``format.format(0..n-1)`` in a vocabulary and check they are contiguous.

    Args:
        token_to_id: the tokenizer's vocabulary (``tokenizer.get_vocab()``).
        token_format: a format with one ``{}`` for the number, e.g. ``"<Un{}>"``.
        group: a name for error messages (``unit``, ``pitch``, ``style``).

    Returns:
        The id range, with token ``n`` at ``range.start + n``; ``None`` when nothing matches.

    Raises:
        VocabularyError: numbers that do not start at 0, have gaps or duplicates, or ids
            that are not consecutive in number order.
    """
    pattern = _format_to_regex(token_format)
    numbered: dict[int, int] = {}
    for token, token_id in token_to_id.items():
        match = pattern.fullmatch(token)
        if match is None:
            continue
        number = int(match.group(1))
        if number in numbered and numbered[number] != token_id:
            raise VocabularyError(
                f"{group} {number} appears twice in the tokenizer ({token_format.format(number)!r} "
                f"has ids {numbered[number]} and {token_id}); the tokenizer is corrupt"
            )
        numbered[number] = token_id
    if not numbered:
        return None
    numbers = sorted(numbered)
    if numbers != list(range(len(numbers))):
        missing = sorted(set(range(numbers[-1] + 1)) - set(numbers))[:5]
        raise VocabularyError(
            f"{group} tokens {token_format!r} must be numbered 0..n-1 without gaps; "
            f"missing {missing} (found {len(numbers)} tokens up to {numbers[-1]})"
        )
    start = numbered[0]
    ids = [numbered[n] for n in numbers]
    if ids != list(range(start, start + len(ids))):
        bad = next(n for n, i in zip(numbers, ids, strict=True) if i != start + n)
        raise VocabularyError(
            f"{group} token ids are not contiguous: {token_format.format(bad)!r} has id "
            f"{numbered[bad]}, expected {start + bad}; a speech vocabulary needs "
            f"{group} n at id start+n"
        )
    return TokenRange(start, start + len(ids))


@dataclass(frozen=True)
class SpeechVocab:
    """The vocabulary layout of an interleaved speech-text LM.

    Build one with :meth:`from_tokenizer` (what the loaders do) or :meth:`from_dict`.

    Attributes:
        family: checkpoint family (``"sims"``, ``"spiritlm"``, ``"generic"``).
        vocab_size: rows of the embedding / unembedding matrix (``d_vocab``).
        tokenizer_size: ``len(tokenizer)``; ids at or above it are padding rows.
        units: the id range of the speech units.
        markers: modality marker ids, ``{"text": id, "speech": id}`` (may be empty).
        extra_groups: other contiguous token groups (SpiritLM Expressive ``pitch``, ``style``).
        special_ids: the base tokenizer's special tokens (not text, not speech).
        unit_format: how a unit is written as a token string, e.g. ``"<Un{}>"``.
        extra_formats: the token format of each extra group.
        marker_tokens: the marker token strings, ``{"text": "<text>", ...}``.
        bos_token_id: the id the family's convention puts at the start of every sequence,
            or ``None`` when it prepends nothing (Qwen).
    """

    family: str
    vocab_size: int
    tokenizer_size: int
    units: TokenRange
    markers: Mapping[str, int] = field(default_factory=dict)
    extra_groups: Mapping[str, TokenRange] = field(default_factory=dict)
    special_ids: tuple[int, ...] = ()
    unit_format: str = "<Un{}>"
    extra_formats: Mapping[str, str] = field(default_factory=dict)
    marker_tokens: Mapping[str, str] = field(default_factory=dict)
    bos_token_id: int | None = None

    def __post_init__(self) -> None:
        if self.tokenizer_size > self.vocab_size:
            raise VocabularyError(
                f"the tokenizer has {self.tokenizer_size} tokens but the model's embedding has only "
                f"{self.vocab_size} rows: ids {self.vocab_size}..{self.tokenizer_size - 1} would index "
                "past the embedding. Use the tokenizer this checkpoint was trained with."
            )
        if len(self.units) == 0:
            raise VocabularyError("a speech vocabulary needs at least one speech unit token")
        taken: dict[int, str] = {}
        for name, token_range in [("speech", self.units), *self.extra_groups.items()]:
            if token_range.stop > self.tokenizer_size:
                raise VocabularyError(
                    f"{name} ids [{token_range.start}, {token_range.stop}) reach past the tokenizer "
                    f"({self.tokenizer_size} tokens)"
                )
            for other_name, other in [("speech", self.units), *self.extra_groups.items()]:
                if (
                    other is not token_range
                    and token_range.start < other.stop
                    and other.start < token_range.stop
                ):
                    raise VocabularyError(f"token groups {name!r} and {other_name!r} overlap")
        for name, token_id in self.markers.items():
            if not 0 <= token_id < self.tokenizer_size:
                raise VocabularyError(f"marker {name!r} has id {token_id}, outside the tokenizer")
            if self.group_of(token_id) not in ("text", "special", "marker"):
                raise VocabularyError(
                    f"marker {name!r} (id {token_id}) overlaps the {self.group_of(token_id)} group"
                )
            if token_id in taken:
                raise VocabularyError(f"markers {taken[token_id]!r} and {name!r} share id {token_id}")
            taken[token_id] = name

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_tokenizer(
        cls,
        tokenizer: Any,
        *,
        vocab_size: int,
        family: str,
        unit_format: str,
        marker_tokens: Mapping[str, str] | None = None,
        extra_formats: Mapping[str, str] | None = None,
        bos_token_id: int | None = None,
    ) -> SpeechVocab:
        """Compute the layout from a Hugging Face tokenizer and the embedding size.

        Args:
            tokenizer: a ``transformers`` tokenizer holding the unit tokens.
            vocab_size: the model's embedding rows.
            family: the checkpoint family name, recorded on the vocab.
            unit_format: the unit token format with one ``{}``, e.g. ``"<Un{}>"``.
            marker_tokens: marker token strings by role, e.g. ``{"text": "<text>", "speech": "<speech>"}``.
            extra_formats: formats of extra numbered groups, e.g. ``{"pitch": "[Pi{}]"}``; a group
                that matches nothing is left out.
            bos_token_id: the id the family prepends to every sequence, if any.

        Raises:
            VocabularyError: no unit matches ``unit_format``, units are malformed, a marker is
                missing, or the tokenizer is larger than the embedding.
        """
        token_to_id = dict(tokenizer.get_vocab())
        units = find_numbered_tokens(token_to_id, unit_format, group="unit")
        if units is None:
            examples = sorted(t for t in token_to_id if not t.isalnum())[-5:]
            raise VocabularyError(
                f"no speech unit token matches {unit_format!r} in the tokenizer ({len(token_to_id)} tokens, "
                f"e.g. {examples}). Pass unit_format= with the format this checkpoint uses, such as "
                f"one of {list(KNOWN_UNIT_FORMATS)}."
            )
        markers: dict[str, int] = {}
        for role, token in (marker_tokens or {}).items():
            if token not in token_to_id:
                raise VocabularyError(
                    f"the {role} marker {token!r} is not in the tokenizer; this is not a "
                    "tokenizer of this checkpoint family"
                )
            markers[role] = token_to_id[token]
        extras: dict[str, TokenRange] = {}
        formats: dict[str, str] = {}
        for name, token_format in (extra_formats or {}).items():
            found = find_numbered_tokens(token_to_id, token_format, group=name)
            if found is not None:
                extras[name] = found
                formats[name] = token_format
        grouped = set(range(units.start, units.stop)) | set(markers.values())
        for token_range in extras.values():
            grouped |= set(range(token_range.start, token_range.stop))
        special = sorted(
            {int(i) for i in _special_token_ids(tokenizer) if 0 <= int(i) < vocab_size} - grouped
        )
        return cls(
            family=family,
            vocab_size=int(vocab_size),
            tokenizer_size=len(tokenizer),
            units=units,
            markers=markers,
            extra_groups=extras,
            special_ids=tuple(special),
            unit_format=unit_format,
            extra_formats=formats,
            marker_tokens=dict(marker_tokens or {}),
            bos_token_id=bos_token_id,
        )

    # ------------------------------------------------------------------ units
    @property
    def n_units(self) -> int:
        """The number of speech units (the quantizer's codebook size)."""
        return len(self.units)

    def unit_token_id(self, unit: int) -> int:
        """The token id of speech unit ``unit``.

        Raises:
            VocabularyError: the unit is outside ``[0, n_units)``.
        """
        unit = int(unit)
        if not 0 <= unit < self.n_units:
            raise VocabularyError(
                f"speech unit {unit} is out of range: this model has {self.n_units} units "
                f"(0..{self.n_units - 1}). Were the units made by a quantizer with a different codebook size?"
            )
        return self.units.start + unit

    def unit_token_ids(self, units: Sequence[int] | Int[Tensor, " n"]) -> Int[Tensor, " n"]:
        """Token ids of many units at once (vectorised :meth:`unit_token_id`)."""
        units_tensor = torch.as_tensor(units, dtype=torch.long).reshape(-1)
        if units_tensor.numel() and (units_tensor.min() < 0 or units_tensor.max() >= self.n_units):
            bad = units_tensor[(units_tensor < 0) | (units_tensor >= self.n_units)][0].item()
            self.unit_token_id(int(bad))  # raises with the standard message
        return units_tensor + self.units.start

    def unit_of(self, token_id: int) -> int | None:
        """The unit number of a token id, or ``None`` for a token that is not a speech unit."""
        token_id = int(token_id)
        return token_id - self.units.start if token_id in self.units else None

    def unit_token(self, unit: int) -> str:
        """The token string of a unit, e.g. ``"<Un17>"``."""
        self.unit_token_id(unit)
        return self.unit_format.format(int(unit))

    # ------------------------------------------------------------------ groups
    @property
    def group_names(self) -> tuple[str, ...]:
        """All group names, in the order of the codes of :attr:`group_labels`."""
        return ("text", "speech", "marker", *self.extra_groups, "special", "padding")

    @cached_property
    def group_labels(self) -> Int[Tensor, " vocab"]:
        """For every id in ``[0, vocab_size)``, the index of its group in :attr:`group_names`."""
        names = self.group_names
        labels = torch.zeros(self.vocab_size, dtype=torch.long)
        labels[self.tokenizer_size :] = names.index("padding")
        labels[list(self.special_ids)] = names.index("special")
        labels[self.units.start : self.units.stop] = names.index("speech")
        for name, token_range in self.extra_groups.items():
            labels[token_range.start : token_range.stop] = names.index(name)
        labels[list(self.markers.values())] = names.index("marker")
        return labels

    def group_mask(self, name: str) -> Bool[Tensor, " vocab"]:
        """A boolean mask over the vocabulary selecting group ``name``."""
        if name not in self.group_names:
            raise VocabularyError(f"unknown token group {name!r}; groups are {list(self.group_names)}")
        return self.group_labels == self.group_names.index(name)

    def group_ids(self, name: str) -> Int[Tensor, " n"]:
        """The ids of group ``name`` in increasing order."""
        return torch.nonzero(self.group_mask(name)).reshape(-1)

    def group_of(self, token_id: int) -> str:
        """The group name of one token id."""
        token_id = int(token_id)
        if not 0 <= token_id < self.vocab_size:
            raise VocabularyError(f"token id {token_id} is outside the vocabulary [0, {self.vocab_size})")
        if token_id in self.units:
            return "speech"
        if token_id in self.markers.values():
            return "marker"
        for name, token_range in self.extra_groups.items():
            if token_id in token_range:
                return name
        if token_id >= self.tokenizer_size:
            return "padding"
        if token_id in self.special_ids:
            return "special"
        return "text"

    @cached_property
    def text_token_ids(self) -> Int[Tensor, " n_text"]:
        """The text sub-vocabulary (excludes units, markers, extra groups, specials, padding)."""
        return self.group_ids("text")

    @property
    def speech_token_ids(self) -> Int[Tensor, " n_units"]:
        """The speech unit ids in unit order."""
        return torch.arange(self.units.start, self.units.stop)

    @property
    def marker_token_ids(self) -> dict[str, int]:
        """The modality marker ids, e.g. ``{"text": 151666, "speech": 151665}``."""
        return dict(self.markers)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description (inverse of :meth:`from_dict`)."""
        return {
            "family": self.family,
            "vocab_size": self.vocab_size,
            "tokenizer_size": self.tokenizer_size,
            "units": self.units.to_list(),
            "markers": dict(self.markers),
            "extra_groups": {name: r.to_list() for name, r in self.extra_groups.items()},
            "special_ids": list(self.special_ids),
            "unit_format": self.unit_format,
            "extra_formats": dict(self.extra_formats),
            "marker_tokens": dict(self.marker_tokens),
            "bos_token_id": self.bos_token_id,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SpeechVocab:
        """Rebuild from :meth:`to_dict` output; unknown keys are ignored."""
        return cls(
            family=str(data["family"]),
            vocab_size=int(data["vocab_size"]),
            tokenizer_size=int(data["tokenizer_size"]),
            units=TokenRange(*data["units"]),
            markers={str(k): int(v) for k, v in data.get("markers", {}).items()},
            extra_groups={str(k): TokenRange(*v) for k, v in data.get("extra_groups", {}).items()},
            special_ids=tuple(int(i) for i in data.get("special_ids", ())),
            unit_format=str(data.get("unit_format", "<Un{}>")),
            extra_formats={str(k): str(v) for k, v in data.get("extra_formats", {}).items()},
            marker_tokens={str(k): str(v) for k, v in data.get("marker_tokens", {}).items()},
            bos_token_id=None if data.get("bos_token_id") is None else int(data["bos_token_id"]),
        )

    def fingerprint(self) -> str:
        """A stable SHA-256 of the layout, to check that artefacts belong to this vocabulary."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def summary(self) -> dict[str, Any]:
        """A human-oriented description: id ranges and sizes of every group."""
        text = self.text_token_ids
        return {
            "family": self.family,
            "vocab_size": self.vocab_size,
            "tokenizer_size": self.tokenizer_size,
            "text": {
                "count": int(text.numel()),
                "range": [int(text.min()), int(text.max()) + 1] if text.numel() else None,
            },
            "speech": {"count": self.n_units, "range": self.units.to_list(), "format": self.unit_format},
            "markers": {
                role: {"token": self.marker_tokens.get(role), "id": i} for role, i in self.markers.items()
            },
            **{
                name: {"count": len(r), "range": r.to_list(), "format": self.extra_formats.get(name)}
                for name, r in self.extra_groups.items()
            },
            "special": {"count": len(self.special_ids), "ids": list(self.special_ids)[:20]},
            "padding_rows": self.vocab_size - self.tokenizer_size,
            "bos_token_id": self.bos_token_id,
        }


def _special_token_ids(tokenizer: Any) -> Iterable[int]:
    """Ids of the tokenizer's special tokens, including added tokens flagged special."""
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    for token_id, added in (getattr(tokenizer, "added_tokens_decoder", {}) or {}).items():
        if getattr(added, "special", False):
            ids.add(int(token_id))
    return ids
