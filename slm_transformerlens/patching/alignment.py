"""Paired clean / corrupted utterances of different lengths, aligned word by word.

TransformerLens' patching assumes that position ``p`` of the clean run corresponds to position ``p`` of
the corrupted run. Two spoken words almost never have the same number of units, so here the two runs are
aligned through their word-span tables (columns ``utterance, word_index, word, modality, start, stop,
last, n_tokens``): both utterances must have the same number of words; words whose token ids are equal
("shared" words) and the tokens between words (BOS, markers, silence units: "context" tokens) align
position by position; a word whose tokens differ (a "diff" word, e.g. one spoken word replaced by another
of a different length, or a written word by a spoken one) is aligned by an explicit ``span_mode``:

- ``"last"``: its last token (for a spoken word, its last unit) in one run maps to its last token in the
  other; the other positions of its span are not patched.
- ``"mean"``: every position of the target span receives the mean of the source span (one slot).
- ``"resample"``: target position ``j`` of an ``n_t``-token span receives source position
  ``round(j * (n_s - 1) / (n_t - 1))`` (halves rounded up) of the ``n_s``-token span (a linear index
  map; one slot per target position). With equal lengths this is the identity.

Context tokens between two words whose counts differ in the two runs are aligned with the same rule.

A *slot* is one patchable unit on the aligned position axis: a set of target-run positions and, for each,
the source-run positions whose mean is written there. Slots depend on the direction: ``"denoise"`` patches
clean activations into the corrupted run (target = corrupted), ``"noise"`` the reverse.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from slm_transformerlens.errors import SLMError
from slm_transformerlens.protocols import SpeechLM
from slm_transformerlens.spans import WordSpanError, WordSpans

__all__ = [
    "SPAN_MODES",
    "Direction",
    "PatchPair",
    "PatchingError",
    "Slot",
    "SpanMode",
    "source_run",
    "target_run",
]

SpanMode = Literal["last", "mean", "resample"]
Direction = Literal["denoise", "noise"]
Run = Literal["clean", "corrupted"]
SPAN_MODES: tuple[str, ...] = ("last", "mean", "resample")


class PatchingError(SLMError, ValueError):
    """Bad input to word-aligned patching (unalignable pair, unknown component, bad metric)."""


def target_run(direction: str) -> Run:
    """The run that is patched: corrupted for ``"denoise"``, clean for ``"noise"``."""
    _check_direction(direction)
    return "corrupted" if direction == "denoise" else "clean"


def source_run(direction: str) -> Run:
    """The run whose activations are written in: clean for ``"denoise"``, corrupted for ``"noise"``."""
    return "clean" if target_run(direction) == "corrupted" else "corrupted"


def _check_direction(direction: str) -> None:
    if direction not in ("denoise", "noise"):
        raise PatchingError(
            f"direction must be 'denoise' (clean into corrupted) or 'noise', got {direction!r}"
        )


@dataclass(frozen=True)
class Slot:
    """One patchable unit of the aligned position axis, for one direction.

    Attributes:
        index: the slot's place on the aligned axis (0-based, in token order).
        role: ``"diff"`` (a differing word), ``"word"`` (a shared word) or ``"context"`` (BOS, markers,
            silence units and other tokens that belong to no word).
        relative: ``"before"``, ``"diff"`` or ``"after"`` the first differing word.
        word_index: the word's index in the span tables (``-1`` for context tokens).
        word: the word in the target run (``""`` for context tokens).
        modality: the word's modality in the target run (``"speech"``, ``"text"``, ``""``).
        targets: the target-run positions written by this slot.
        sources: for each target position, the source-run positions whose mean is written there.
    """

    index: int
    role: str
    relative: str
    word_index: int
    word: str
    modality: str
    targets: tuple[int, ...]
    sources: tuple[tuple[int, ...], ...]

    @property
    def position(self) -> int:
        """The slot's last target position (the label position on plots)."""
        return self.targets[-1]

    @property
    def source_position(self) -> int:
        """The last source position feeding the slot's last target position."""
        return self.sources[-1][-1]


@dataclass(frozen=True)
class _Chunk:
    kind: str  # "word" | "context"
    key: tuple[int, int]  # (order, 0 = gap before word `order` / 1 = the word itself)
    positions: tuple[int, ...]
    word_index: int
    word: str
    modality: str


def _chunks(tokens: Sequence[int], spans: pd.DataFrame, run: str) -> list[_Chunk]:
    """Cut one run into word chunks and the context chunks between them."""
    chunks: list[_Chunk] = []
    cursor = 0
    n = len(tokens)
    for order, row in enumerate(spans.itertuples(index=False)):
        start, stop = int(row.start), int(row.stop)
        if start < 0 or stop <= start:  # a word that owns no token: nothing to align
            continue
        if start < cursor or stop > n:
            raise PatchingError(
                f"{run} word-span table: word {row.word!r} spans [{start}, {stop}) which overlaps the previous "
                f"word or runs past the {n} tokens; pass the span table that was made with these tokens"
            )
        if start > cursor:
            chunks.append(_Chunk("context", (order, 0), tuple(range(cursor, start)), -1, "", ""))
        chunks.append(
            _Chunk(
                "word",
                (order, 1),
                tuple(range(start, stop)),
                int(row.word_index),
                str(row.word),
                str(row.modality),
            )
        )
        cursor = stop
    if cursor < n:
        chunks.append(_Chunk("context", (len(spans), 0), tuple(range(cursor, n)), -1, "", ""))
    return chunks


def _resample(n_target: int, n_source: int) -> list[int]:
    if n_target == 1:
        return [n_source - 1]
    # round half up, in integers: j * (n_s - 1) / (n_t - 1) + 1/2, floored
    return [(2 * j * (n_source - 1) + (n_target - 1)) // (2 * (n_target - 1)) for j in range(n_target)]


def _normalise_spans(spans: WordSpans | pd.DataFrame, run: str) -> pd.DataFrame:
    try:
        table = WordSpans.coerce(spans, error=PatchingError)
    except PatchingError as error:
        raise PatchingError(f"{run} run: {error}") from None
    if table.n_utterances > 1:
        raise PatchingError(
            f"the {run} word-span table holds {table.n_utterances} utterances; a PatchPair is one "
            "clean and one corrupted utterance: select one with spans[spans.utterance == k]"
        )
    return table.in_token_order().frame


def _as_1d(tokens: Tensor | Sequence[int], run: str) -> Int[Tensor, " pos"]:
    tensor = torch.as_tensor(tokens, dtype=torch.long).detach().cpu()
    if tensor.ndim == 2:
        if tensor.shape[0] != 1:
            raise PatchingError(
                f"{run} tokens have batch size {tensor.shape[0]}; a PatchPair holds one utterance per run"
            )
        tensor = tensor[0]
    if tensor.ndim != 1 or tensor.numel() == 0:
        raise PatchingError(
            f"{run} tokens must be a non-empty [pos] or [1, pos] tensor, got shape {tuple(tensor.shape)}"
        )
    return tensor


@dataclass(frozen=True)
class PatchPair:
    """A clean and a corrupted utterance and the map between their positions.

    Build one with :meth:`from_inputs` (``Speech`` / ``Text`` inputs, encoded with ``model.encode``) or
    :meth:`from_tokens` (token tensors + word-span tables).

    Attributes:
        clean_tokens: ``[pos_clean]`` token ids of the clean run.
        corrupted_tokens: ``[pos_corrupted]`` token ids of the corrupted run.
        clean_spans: the clean run's word-span table.
        corrupted_spans: the corrupted run's word-span table.
        span_mode: how a differing word's span is aligned (``"last"``, ``"mean"``, ``"resample"``).
        diff_words: the ``word_index`` values of the words that differ.
        clean_labels: readable token strings of the clean run (token ids as strings without a tokenizer).
        corrupted_labels: the same for the corrupted run.
    """

    clean_tokens: Int[Tensor, " pos_clean"]
    corrupted_tokens: Int[Tensor, " pos_corrupted"]
    clean_spans: pd.DataFrame = field(repr=False)
    corrupted_spans: pd.DataFrame = field(repr=False)
    span_mode: SpanMode
    diff_words: tuple[int, ...]
    clean_labels: tuple[str, ...] = field(repr=False)
    corrupted_labels: tuple[str, ...] = field(repr=False)
    _pairs: tuple[tuple[_Chunk, _Chunk], ...] = field(repr=False, compare=False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_tokens(
        cls,
        clean_tokens: Int[Tensor, "... pos_clean"] | Sequence[int],
        corrupted_tokens: Int[Tensor, "... pos_corrupted"] | Sequence[int],
        clean_spans: WordSpans | pd.DataFrame,
        corrupted_spans: WordSpans | pd.DataFrame,
        *,
        span_mode: str = "last",
        tokenizer: Any = None,
    ) -> PatchPair:
        """Pair two token sequences through their word-span tables.

        Args:
            clean_tokens: ``[pos]`` or ``[1, pos]`` ids of the clean utterance (no padding).
            corrupted_tokens: the same for the corrupted utterance.
            clean_spans: word spans of the clean utterance (``model.encode(...).word_spans``, one utterance).
            corrupted_spans: word spans of the corrupted utterance; same number of words as the clean one.
            span_mode: ``"last"``, ``"mean"`` or ``"resample"`` (see the module docstring).
            tokenizer: used only for readable token labels.

        Raises:
            PatchingError: different word counts, overlapping spans, an unknown span mode.
        """
        if span_mode not in SPAN_MODES:
            raise PatchingError(f"span_mode must be one of {SPAN_MODES}, got {span_mode!r}")
        clean = _as_1d(clean_tokens, "clean")
        corrupted = _as_1d(corrupted_tokens, "corrupted")
        clean_spans = _normalise_spans(clean_spans, "clean")
        corrupted_spans = _normalise_spans(corrupted_spans, "corrupted")
        clean_chunks = _chunks(clean.tolist(), clean_spans, "clean")
        corrupted_chunks = _chunks(corrupted.tolist(), corrupted_spans, "corrupted")
        n_clean_words = sum(c.kind == "word" for c in clean_chunks)
        n_corrupted_words = sum(c.kind == "word" for c in corrupted_chunks)
        if n_clean_words != n_corrupted_words:
            raise PatchingError(
                f"the clean utterance has {n_clean_words} words with tokens and the corrupted one {n_corrupted_words}; "
                "word-aligned patching pairs words one to one: replace words (spoken or written) rather than "
                "inserting or deleting them"
            )
        by_key = {c.key: c for c in corrupted_chunks}
        keys = sorted({c.key for c in clean_chunks} | set(by_key))
        clean_by_key = {c.key: c for c in clean_chunks}
        empty = _Chunk("context", (0, 0), (), -1, "", "")
        pairs = tuple((clean_by_key.get(k, empty), by_key.get(k, empty)) for k in keys)
        diff = tuple(
            a.word_index
            for a, b in pairs
            if a.kind == "word" and clean[list(a.positions)].tolist() != corrupted[list(b.positions)].tolist()
        )
        return cls(
            clean_tokens=clean,
            corrupted_tokens=corrupted,
            clean_spans=clean_spans,
            corrupted_spans=corrupted_spans,
            span_mode=span_mode,
            diff_words=diff,
            clean_labels=_labels(clean, tokenizer),
            corrupted_labels=_labels(corrupted, tokenizer),
            _pairs=pairs,
        )

    @classmethod
    def from_inputs(
        cls, model: SpeechLM, clean: Any, corrupted: Any, *, span_mode: str = "last"
    ) -> PatchPair:
        """Encode two utterances (``Speech`` / ``Text`` segments) with ``model.encode`` and pair them.

        Args:
            model: a ``HookedSLM`` (anything with ``encode`` and ``tokenizer``).
            clean: the clean utterance: a Speech, a Text or a list of them.
            corrupted: the corrupted utterance, with the same number of words.
            span_mode: how the differing words are aligned.
        """
        encoded = []
        for run, utterance in (("clean", clean), ("corrupted", corrupted)):
            batch = model.encode(utterance)
            if batch.tokens.shape[0] != 1:
                raise PatchingError(
                    f"the {run} input encodes to {batch.tokens.shape[0]} utterances; pass one utterance"
                )
            length = batch.lengths[0]
            encoded.append((batch.tokens[0, :length], batch.spans))
        (ct, cs), (rt, rs) = encoded
        return cls.from_tokens(
            ct, rt, cs, rs, span_mode=span_mode, tokenizer=getattr(model, "tokenizer", None)
        )

    # ------------------------------------------------------------------ queries
    def tokens(self, run: Run) -> Int[Tensor, " pos"]:
        """The ``[pos]`` tokens of ``"clean"`` or ``"corrupted"``."""
        return self.clean_tokens if run == "clean" else self.corrupted_tokens

    def labels(self, run: Run) -> tuple[str, ...]:
        """Readable token strings of one run."""
        return self.clean_labels if run == "clean" else self.corrupted_labels

    def spans(self, run: Run) -> pd.DataFrame:
        """The word-span table of one run."""
        return self.clean_spans if run == "clean" else self.corrupted_spans

    def word_position(
        self, word_index: int, run: Run, which: Literal["first", "last", "before"] = "last"
    ) -> int:
        """A position of a word in one run.

        ``"first"`` / ``"last"``: its first / last token; ``"before"``: the position just before its first
        token (where the model PREDICTS the word, e.g. to score the next text word).
        """
        spans = WordSpans(self.spans(run))
        try:
            word = spans.word(word_index, int(spans["utterance"].iloc[0]) if len(spans) else 0)
        except WordSpanError:
            word = None
        if word is None or word.start < 0:
            raise PatchingError(f"word_index {word_index} has no tokens in the {run} run")
        start, stop = word.start, word.stop
        if which == "first":
            return start
        if which == "last":
            return stop - 1
        if which == "before":
            if start == 0:
                raise PatchingError(f"word_index {word_index} starts the {run} run: no position predicts it")
            return start - 1
        raise PatchingError(f"which must be 'first', 'last' or 'before', got {which!r}")

    def word_tokens(self, word_index: int, run: Run) -> list[int]:
        """The token ids of a word in one run."""
        first = self.word_position(word_index, run, "first")
        last = self.word_position(word_index, run, "last")
        return self.tokens(run)[first : last + 1].tolist()

    def slots(self, direction: str) -> list[Slot]:
        """The patchable slots of one direction, in token order of the target run."""
        target = target_run(direction)
        first_diff = min(
            (
                i
                for i, (a, b) in enumerate(self._pairs)
                if a.kind == "word" and a.word_index in self.diff_words
            ),
            default=None,
        )
        slots: list[Slot] = []
        for i, (clean_chunk, corrupted_chunk) in enumerate(self._pairs):
            tgt, src = (
                (corrupted_chunk, clean_chunk) if target == "corrupted" else (clean_chunk, corrupted_chunk)
            )
            if not tgt.positions or not src.positions:
                continue
            is_diff = clean_chunk.kind == "word" and clean_chunk.word_index in self.diff_words
            same_length = len(tgt.positions) == len(src.positions)
            role = "diff" if is_diff else ("word" if tgt.kind == "word" else "context")
            relative = "before" if first_diff is None or i < first_diff else "diff" if is_diff else "after"
            common = dict(
                role=role, relative=relative, word_index=tgt.word_index, word=tgt.word, modality=tgt.modality
            )
            if not is_diff and same_length:
                for t, s in zip(tgt.positions, src.positions, strict=True):
                    slots.append(Slot(len(slots), targets=(t,), sources=((s,),), **common))  # type: ignore[arg-type]
            elif self.span_mode == "last":
                slots.append(
                    Slot(len(slots), targets=(tgt.positions[-1],), sources=((src.positions[-1],),), **common)
                )  # type: ignore[arg-type]
            elif self.span_mode == "mean":
                slots.append(
                    Slot(
                        len(slots),
                        targets=tgt.positions,
                        sources=(src.positions,) * len(tgt.positions),
                        **common,
                    )  # type: ignore[arg-type]
                )
            else:
                index = _resample(len(tgt.positions), len(src.positions))
                for t, j in zip(tgt.positions, index, strict=True):
                    slots.append(Slot(len(slots), targets=(t,), sources=((src.positions[j],),), **common))  # type: ignore[arg-type]
        return slots

    def position_map(self, direction: str) -> Float[Tensor, "pos_target pos_source"]:
        """The ``[pos_target, pos_source]`` matrix that maps source activations onto target positions.

        Row ``t`` holds the weights (summing to 1) of the source positions written at target position
        ``t``; a zero row is a target position no slot patches. ``map @ source_act`` gives, at every
        patched position, the value written there.
        """
        target = target_run(direction)
        n_t, n_s = len(self.tokens(target)), len(self.tokens(source_run(direction)))
        matrix = torch.zeros(n_t, n_s)
        for slot in self.slots(direction):
            for t, sources in zip(slot.targets, slot.sources, strict=True):
                matrix[t] = 0.0
                matrix[t, list(sources)] = 1.0 / len(sources)
        return matrix

    def slots_frame(self, direction: str) -> pd.DataFrame:
        """One row per slot: index, role, word, target and source positions and token labels."""
        target, source = target_run(direction), source_run(direction)
        rows = []
        for slot in self.slots(direction):
            position, source_position = slot.position, slot.source_position
            rows.append(
                {
                    "slot": slot.index,
                    "role": slot.role,
                    "relative": slot.relative,
                    "word_index": slot.word_index,
                    "word": slot.word,
                    "modality": slot.modality,
                    "position": position,
                    "source_position": source_position,
                    "clean_position": position if target == "clean" else source_position,
                    "corrupted_position": position if target == "corrupted" else source_position,
                    "n_positions": len(slot.targets),
                    "token": self.labels(target)[position],
                    "source_token": self.labels(source)[source_position],
                }
            )
        return pd.DataFrame(rows)


def _labels(tokens: Tensor, tokenizer: Any) -> tuple[str, ...]:
    ids = tokens.tolist()
    if tokenizer is None:
        return tuple(str(i) for i in ids)
    return tuple(str(t) for t in tokenizer.convert_ids_to_tokens(ids))
