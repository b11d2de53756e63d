"""Metrics for word-aligned patching: output log-probs and logit differences, and lens read-outs.

A metric is evaluated on a run of the model that is either the clean or the corrupted utterance (patched
or not), so it knows its read-out position in BOTH runs (positions differ when the words differ in
length). Every metric returns one value per batch row.

- :class:`TokenLogProb`: log-probability (over the full vocabulary) of target token(s) at the output.
- :class:`LogitDiff`: ``logit[correct] - logit[incorrect]`` at the output.
- :class:`LensMetric`: the rank, probability or log-probability of a token read through a
  :class:`~slm_transformerlens.lens.Lens` (the model's ``LogitLens`` by default, or a ``TunedLens``) from the
  residual stream at a given layer and position: "which layer writes the transcription that layer m
  reads out".

The normalised form ``(value - corrupted) / (clean - corrupted)`` (0 = corrupted, 1 = clean) is added to
every result by the sweeps.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from slm_transformerlens._deprecation import deprecated_attributes, warn_deprecated
from slm_transformerlens.hooks import hook_name
from slm_transformerlens.lens.base import SITES, Lens, LensError
from slm_transformerlens.lens.logit_lens import LogitLens
from slm_transformerlens.patching.alignment import PatchingError, Run
from slm_transformerlens.protocols import SpeechLM

__all__ = [
    "LensMetric",
    "LogitDiff",
    "PatchMetric",
    "Positions",
    "TokenLogProb",
    "as_lens",
    "resolve_lens",
    "text_token_id",
]

#: A read-out position: the same int in both runs, or ``{"clean": p, "corrupted": q}`` / ``(p, q)``.
Positions = int | tuple[int, int] | Mapping[str, int]


def _positions(value: Positions) -> dict[str, int]:
    if isinstance(value, int):
        return {"clean": value, "corrupted": value}
    if isinstance(value, Mapping):
        if set(value) != {"clean", "corrupted"}:
            raise PatchingError(f"positions mapping needs keys 'clean' and 'corrupted', got {sorted(value)}")
        return {"clean": int(value["clean"]), "corrupted": int(value["corrupted"])}
    if isinstance(value, Sequence) and len(value) == 2:
        return {"clean": int(value[0]), "corrupted": int(value[1])}
    raise PatchingError(f"a position is an int, a (clean, corrupted) pair or a mapping, got {value!r}")


def _token_ids(tokens: int | Sequence[int]) -> list[int]:
    ids = [int(tokens)] if isinstance(tokens, int) else [int(t) for t in tokens]
    if not ids:
        raise PatchingError("a metric needs at least one target token id")
    return ids


class PatchMetric(ABC):
    """A scalar per batch row, computed from one run's output logits and captured activations.

    Subclasses set :attr:`name`, return their read-out :meth:`positions` (used to skip patches that
    cannot reach them, by causality), list the hook points they read in :meth:`hooks`, and say whether
    they need the output logits (:attr:`needs_logits`) and whether they are differentiable
    (:attr:`differentiable`, required by attribution patching).
    """

    name: str
    needs_logits: bool = True
    differentiable: bool = True

    def positions(self, run: Run) -> list[int] | None:
        """Positions read in ``run`` (``None``: unknown, so no causal pruning)."""
        return None

    def hooks(self) -> list[str]:
        """Standard hook names whose activations the metric reads (captured during the same forward)."""
        return []

    def max_layer(self) -> int | None:
        """The last layer the metric reads, when it reads no output logits (lets the forward stop early)."""
        return None

    @abstractmethod
    def __call__(
        self, logits: Float[Tensor, "batch pos d_vocab"] | None, captured: Mapping[str, Tensor], run: Run
    ) -> Float[Tensor, " batch"]:
        """The metric for every batch row of a run of ``run`` (``"clean"`` or ``"corrupted"`` tokens)."""


@dataclass
class TokenLogProb(PatchMetric):
    """Log-probability of ``tokens`` (log-sum-exp over them when several) at the output ``position``.

    Args:
        tokens: one token id, or several whose probabilities are summed (e.g. case variants).
        position: the read-out position (e.g. ``pair.word_position(k, run, "before")`` for word ``k``),
            the same int in both runs or ``{"clean": p, "corrupted": q}``.
        name: the metric's name in result tables.
    """

    tokens: int | Sequence[int]
    position: Positions
    name: str = "logprob"

    def __post_init__(self) -> None:
        self._ids = _token_ids(self.tokens)
        self._pos = _positions(self.position)

    def positions(self, run: Run) -> list[int]:
        return [self._pos[run]]

    def __call__(self, logits: Tensor | None, captured: Mapping[str, Tensor], run: Run) -> Tensor:
        assert logits is not None
        logprobs = logits[:, self._pos[run]].float().log_softmax(dim=-1)
        return torch.logsumexp(logprobs[:, self._ids], dim=-1)


@dataclass
class LogitDiff(PatchMetric):
    """``logit[correct] - logit[incorrect]`` at the output ``position`` (mean over several ids each).

    Args:
        correct: the clean run's answer token id(s).
        incorrect: the corrupted run's answer token id(s).
        position: the read-out position (an int or ``{"clean": p, "corrupted": q}``).
        name: the metric's name in result tables.
    """

    correct: int | Sequence[int]
    incorrect: int | Sequence[int]
    position: Positions
    name: str = "logit_diff"

    def __post_init__(self) -> None:
        self._good = _token_ids(self.correct)
        self._bad = _token_ids(self.incorrect)
        self._pos = _positions(self.position)

    def positions(self, run: Run) -> list[int]:
        return [self._pos[run]]

    def __call__(self, logits: Tensor | None, captured: Mapping[str, Tensor], run: Run) -> Tensor:
        assert logits is not None
        row = logits[:, self._pos[run]].float()
        return row[:, self._good].mean(dim=-1) - row[:, self._bad].mean(dim=-1)


def as_lens(lens: Lens | Any) -> Lens:
    """``lens`` itself when it is a :class:`~slm_transformerlens.lens.Lens`, else the logit lens of a model.

    Raises:
        PatchingError: neither a ``Lens`` nor a model with a final norm and an unembedding.
    """
    if isinstance(lens, Lens):
        return lens
    if not isinstance(lens, SpeechLM):
        raise PatchingError(
            f"lens must be a Lens (LogitLens, TunedLens) or a model, got {type(lens).__name__}"
        )
    try:
        return LogitLens(lens)
    except LensError as error:
        raise PatchingError(
            f"lens must be a Lens (LogitLens, TunedLens) or a model, got {type(lens).__name__}: {error}"
        ) from None


def resolve_lens(model: SpeechLM, lens: Lens | None = None) -> Lens:
    """Deprecated: use :func:`as_lens` (``lens`` when given, else ``LogitLens(model)``)."""
    warn_deprecated("patching.metrics.resolve_lens(model, lens)", "patching.metrics.as_lens(lens or model)")
    return as_lens(lens if lens is not None else model)


#: ``FinalNormLens`` was a second logit lens (use ``LogitLens``); ``LensLike`` its protocol (use ``Lens``).
__getattr__ = deprecated_attributes(
    __name__,
    {"FinalNormLens": "slm_transformerlens.lens:LogitLens", "LensLike": "slm_transformerlens.lens:Lens"},
)


def text_token_id(model: SpeechLM, word: str, *, leading_space: bool = True) -> int:
    """The first token id of ``word`` as the model's tokenizer writes it in running text.

    With ``leading_space`` the word is tokenized as ``" word"`` (the paper's convention for target
    tokens). SentencePiece tokenizers may emit a lone ``▁`` first; it is skipped.
    """
    text = (" " + word.strip()) if leading_space else word.strip()
    ids = list(model.tokenizer(text, add_special_tokens=False)["input_ids"])
    pieces = model.tokenizer.convert_ids_to_tokens(ids)
    while len(ids) > 1 and pieces[0] in ("▁", " ", "Ġ"):
        ids, pieces = ids[1:], pieces[1:]
    if not ids:
        raise PatchingError(f"the tokenizer gives no token for {word!r}")
    return int(ids[0])


@dataclass
class LensMetric(PatchMetric):
    """A token read through a lens from the residual stream at ``layer`` and ``position``.

    Args:
        lens: a :class:`~slm_transformerlens.lens.Lens` (``LogitLens``, ``TunedLens``), or a model: then
            its ``LogitLens``.
        layer: the layer read.
        tokens: the token id(s) scored (e.g. ``text_token_id(model, "girl")``, the spoken word's text
            token); several ids: probabilities summed, best rank.
        position: where to read (e.g. the spoken word's last unit in each run).
        kind: ``"logprob"``, ``"prob"`` or ``"rank"`` (0 = top; not differentiable).
        vocab: restrict the softmax / ranking to these token ids (e.g. ``model.speech_vocab.text_token_ids``
            for the paper's text-restricted view); ``None``: the full vocabulary.
        hook: ``"resid_post"`` (default), ``"resid_pre"`` or ``"resid_mid"`` (read as
            ``resid_pre + attn_out``; the bridge's ``hook_resid_mid`` is the MLP norm's input).
        name: the metric's name in result tables (default ``lens_{kind}_L{layer}``).
    """

    lens: Lens | Any
    layer: int
    tokens: int | Sequence[int]
    position: Positions
    kind: Literal["logprob", "prob", "rank"] = "logprob"
    vocab: Tensor | Sequence[int] | None = None
    hook: Literal["resid_pre", "resid_mid", "resid_post"] = "resid_post"
    name: str = ""
    _lens: Lens = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in ("logprob", "prob", "rank"):
            raise PatchingError(f"kind must be 'logprob', 'prob' or 'rank', got {self.kind!r}")
        if self.hook not in SITES:
            raise PatchingError(f"hook must be one of {sorted(SITES)}, got {self.hook!r}")
        self._ids = _token_ids(self.tokens)
        self._pos = _positions(self.position)
        self._lens = as_lens(self.lens)
        n_layers = int(self._lens.n_layers)
        if (
            isinstance(self.layer, bool)
            or not isinstance(self.layer, Integral)
            or not 0 <= self.layer < n_layers
        ):
            raise PatchingError(
                f"layer={self.layer!r} is not a layer of this model: it has {n_layers} layers, so pass "
                f"layer= 0..{n_layers - 1}"
            )
        self.needs_logits = False
        self.differentiable = self.kind != "rank"
        if not self.name:
            self.name = f"lens_{self.kind}_L{self.layer}"
        self._vocab = None if self.vocab is None else torch.as_tensor(self.vocab, dtype=torch.long)
        if self._vocab is not None:
            where = {int(v): i for i, v in enumerate(self._vocab.tolist())}
            missing = [t for t in self._ids if t not in where]
            if missing:
                raise PatchingError(f"target tokens {missing} are not in the restricted vocabulary")
            self._ids_in_vocab = [where[t] for t in self._ids]

    def positions(self, run: Run) -> list[int]:
        return [self._pos[run]]

    def hooks(self) -> list[str]:
        if self.hook == "resid_mid":
            return [hook_name("resid_pre", self.layer), hook_name("attn_out", self.layer)]
        return [hook_name(self.hook, self.layer)]

    def max_layer(self) -> int:
        return self.layer

    def resid(self, captured: Mapping[str, Tensor], run: Run) -> Float[Tensor, "batch d_model"]:
        """The read residual vector of every batch row."""
        p = self._pos[run]
        if self.hook == "resid_mid":
            pre, attn = self.hooks()
            return captured[pre][:, p] + captured[attn][:, p]
        return captured[self.hooks()[0]][:, p]

    def __call__(self, logits: Tensor | None, captured: Mapping[str, Tensor], run: Run) -> Tensor:
        resid = self.resid(captured, run)
        read = self._lens.logits(resid, self.layer, self.hook).float()
        ids = self._ids
        if self._vocab is not None:
            read = read[:, self._vocab.to(read.device)]
            ids = self._ids_in_vocab
        if self.kind == "rank":
            best = read[:, ids].max(dim=-1).values
            return (read > best[:, None]).sum(dim=-1).float()
        logprobs = torch.logsumexp(read.log_softmax(dim=-1)[:, ids], dim=-1)
        return logprobs if self.kind == "logprob" else logprobs.exp()
