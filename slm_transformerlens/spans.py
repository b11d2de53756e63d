"""The word-span contract: where each word of an encoded batch lies in its token tensor.

``speech`` produces an :class:`EncodedBatch` (tokens, attention mask, word-span table); ``lens``,
``patching`` and the applications consume it through :class:`WordSpans`, which owns the column schema,
validates a table once, and answers what consumers ask (a word's positions, its next word, the words of
one utterance or one modality). ``EncodedBatch.word_spans`` stays a plain ``pandas.DataFrame`` (one row per
word, columns :data:`WORD_SPAN_COLUMNS`) so user code can slice it as before; ``EncodedBatch.spans`` is the
same table as a validated :class:`WordSpans`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from jaxtyping import Int
from torch import Tensor

from slm_transformerlens._deprecation import warn_deprecated
from slm_transformerlens.errors import SLMError
from slm_transformerlens.protocols import SpeechLM

__all__ = [
    "REQUIRED_SPAN_COLUMNS",
    "WORD_SPAN_COLUMNS",
    "EncodedBatch",
    "WordSpan",
    "WordSpanError",
    "WordSpans",
    "as_encoded_batch",
]

#: Every column of a word-span table made by ``model.encode`` (``start``/``stop`` half-open token positions,
#: ``last = stop - 1``; a word that owns no token has ``start == stop == last == -1``).
WORD_SPAN_COLUMNS: tuple[str, ...] = (
    "utterance",
    "word_index",
    "word",
    "modality",
    "start",
    "stop",
    "last",
    "n_tokens",
    "n_units",
    "start_s",
    "end_s",
    "token_text",
)
#: The columns a table must have to be read as word spans (``utterance`` defaults to 0: one utterance).
REQUIRED_SPAN_COLUMNS: tuple[str, ...] = ("word_index", "word", "modality", "start", "stop")


class WordSpanError(SLMError, ValueError):
    """A word-span table that does not follow the contract (missing columns, unknown word)."""


@dataclass(frozen=True)
class WordSpan:
    """One word of one utterance: tokens ``start..stop-1`` of batch row ``utterance``."""

    utterance: int
    word_index: int
    word: str
    modality: str
    start: int
    stop: int

    @property
    def positions(self) -> range:
        """The word's token positions (empty when it owns no token)."""
        return range(self.start, self.stop) if self.start >= 0 else range(0)

    @property
    def last(self) -> int:
        """Its last token position (for a spoken word, its last unit)."""
        return self.stop - 1


class WordSpans:
    """A validated word-span table: one row per word, columns :data:`WORD_SPAN_COLUMNS`.

    Build it from a DataFrame (``WordSpans(frame)``; missing required columns raise ``error``), or get it as
    ``model.encode(x).spans``. The table is available as :attr:`frame`; indexing (``spans["word"]``) and
    ``len`` act on it.
    """

    def __init__(self, frame: pd.DataFrame, *, error: type[SLMError] = WordSpanError) -> None:
        missing = [c for c in REQUIRED_SPAN_COLUMNS if c not in frame.columns]
        if missing:
            raise error(
                f"the word-span table lacks columns {missing}; it needs {list(REQUIRED_SPAN_COLUMNS)} "
                "(as model.encode(...).word_spans gives)"
            )
        if "utterance" not in frame.columns:
            frame = frame.assign(utterance=0)
        self._frame = frame

    @classmethod
    def coerce(cls, spans: WordSpans | pd.DataFrame, *, error: type[SLMError] = WordSpanError) -> WordSpans:
        """``spans`` itself, or a DataFrame validated as word spans."""
        return spans if isinstance(spans, WordSpans) else cls(spans, error=error)

    # ------------------------------------------------------------------ the table
    @property
    def frame(self) -> pd.DataFrame:
        """The table (a DataFrame with at least :data:`REQUIRED_SPAN_COLUMNS` and ``utterance``)."""
        return self._frame

    def __len__(self) -> int:
        return len(self._frame)

    def __getitem__(self, key: Any) -> Any:
        return self._frame[key]

    def __iter__(self) -> Iterator[WordSpan]:
        for row in self._frame.itertuples(index=False):
            yield WordSpan(
                int(row.utterance),
                int(row.word_index),
                str(row.word),
                str(row.modality),
                int(row.start),
                int(row.stop),
            )

    def __repr__(self) -> str:
        return f"WordSpans({len(self)} words, {self.n_utterances} utterances)"

    @property
    def n_utterances(self) -> int:
        """Number of distinct utterances (batch rows) in the table."""
        return int(self._frame["utterance"].nunique())

    # ------------------------------------------------------------------ selections
    def _select(self, mask: Any) -> WordSpans:
        return WordSpans(self._frame[mask])

    def of_utterance(self, utterance: int) -> WordSpans:
        """The words of one batch row."""
        return self._select(self._frame["utterance"] == int(utterance))

    def of_modality(self, *modalities: str) -> WordSpans:
        """The words of these modalities (``"speech"``, ``"text"``)."""
        return self._select(self._frame["modality"].isin(list(modalities)))

    def with_tokens(self) -> WordSpans:
        """The words that own at least one token (``stop > start``)."""
        return self._select(self._frame["stop"] > self._frame["start"])

    def in_token_order(self) -> WordSpans:
        """Sorted by (utterance, start), stable, with a fresh 0..n-1 index."""
        ordered = self._frame.sort_values(["utterance", "start"], kind="stable").reset_index(drop=True)
        return WordSpans(ordered)

    # ------------------------------------------------------------------ words
    def word(self, word_index: int, utterance: int = 0) -> WordSpan:
        """Word ``word_index`` of ``utterance``.

        Raises:
            WordSpanError: no such word in the table.
        """
        frame = self._frame
        hit = frame[(frame["word_index"] == int(word_index)) & (frame["utterance"] == int(utterance))]
        if hit.empty:
            raise WordSpanError(f"utterance {utterance} has no word with word_index {word_index}")
        return next(iter(WordSpans(hit.iloc[:1])))

    def positions(self, word_index: int, utterance: int = 0) -> range:
        """The token positions of word ``word_index`` of ``utterance``."""
        return self.word(word_index, utterance).positions

    def next_word(self, word_index: int, utterance: int = 0) -> WordSpan | None:
        """The word after ``word_index`` in ``utterance`` (by ``word_index``), or ``None`` for the last."""
        frame = self._frame
        later = frame[(frame["utterance"] == int(utterance)) & (frame["word_index"] > int(word_index))]
        if later.empty:
            return None
        return next(iter(WordSpans(later.sort_values("word_index").iloc[:1])))

    def next_words(self) -> list[str | None]:
        """For every row (in table order), the next word of the same utterance (``None`` for the last)."""
        ordered = self._frame.sort_values(["utterance", "word_index"])
        following = ordered.groupby("utterance")["word"].shift(-1)
        return [None if pd.isna(w) else str(w) for w in following.reindex(self._frame.index)]

    def check_within(self, batch: int, length: int, *, error: type[SLMError] = WordSpanError) -> None:
        """Raise ``error`` if a span with tokens lies outside a ``[batch, length]`` token tensor."""
        spans = self.with_tokens()._frame
        if len(spans) and (
            int(spans["start"].min()) < 0
            or int(spans["stop"].max()) > length
            or int(spans["utterance"].max()) >= batch
            or int(spans["utterance"].min()) < 0
        ):
            raise error(
                f"word spans reach outside the token tensor [batch={batch}, pos={length}]; "
                "was the span table made for these tokens?"
            )


@dataclass(frozen=True)
class EncodedBatch:
    """Token ids of a batch of utterances and where each word is.

    Attributes:
        tokens: ``[batch, pos]`` ids, right-padded with the pad id.
        attention_mask: ``[batch, pos]``, 1 for real tokens, 0 for padding (``None``: no padding).
        word_spans: one row per word; columns :data:`WORD_SPAN_COLUMNS` (``start``/``stop`` half-open
            token positions, ``last`` = ``stop - 1``, for a spoken word its last unit). ``None`` for bare
            tokens without a table.
    """

    tokens: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"] | None = None
    word_spans: pd.DataFrame | None = None
    _spans: WordSpans | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        if self.word_spans is not None:
            object.__setattr__(self, "_spans", WordSpans(self.word_spans))

    @property
    def spans(self) -> WordSpans | None:
        """The word spans as a validated :class:`WordSpans` (``None`` without a table)."""
        return self._spans

    @property
    def lengths(self) -> list[int]:
        """Real (unpadded) length of each utterance."""
        if self.attention_mask is None:
            return [int(self.tokens.shape[-1])] * int(self.tokens.shape[0])
        return [int(n) for n in self.attention_mask.sum(dim=1)]


def _as_2d(tokens: Tensor) -> Tensor:
    return (tokens if tokens.ndim == 2 else tokens.reshape(1, -1)).long()


def as_encoded_batch(model: SpeechLM, inputs: Any, word_spans: pd.DataFrame | None = None) -> EncodedBatch:
    """What analyses accept, as an :class:`EncodedBatch`.

    ``inputs`` is an ``EncodedBatch``, a token tensor (with ``word_spans=`` when spans are needed) or
    ``Speech`` / ``Text`` inputs (encoded with ``model.encode``). ``(tokens, word_spans)`` pairs and
    ``{"tokens", "word_spans"}`` mappings still work but are deprecated.

    Raises:
        WordSpanError: anything else.
    """
    if isinstance(inputs, EncodedBatch):
        return inputs
    if isinstance(inputs, Tensor):
        return EncodedBatch(_as_2d(inputs), None, word_spans)
    if isinstance(inputs, Mapping):
        warn_deprecated("a {'tokens', 'word_spans'} mapping as input", "an EncodedBatch (model.encode(...))")
        tokens = torch.as_tensor(inputs["tokens"])
        return EncodedBatch(
            _as_2d(tokens), inputs.get("attention_mask"), inputs.get("word_spans", word_spans)
        )
    if isinstance(inputs, tuple) and len(inputs) == 2 and isinstance(inputs[0], Tensor):
        warn_deprecated("a (tokens, word_spans) pair as input", "an EncodedBatch (model.encode(...))")
        return EncodedBatch(_as_2d(inputs[0]), None, inputs[1])
    if hasattr(inputs, "tokens") and hasattr(inputs, "word_spans"):  # an EncodedBatch of another version
        return EncodedBatch(inputs.tokens, getattr(inputs, "attention_mask", None), inputs.word_spans)
    if hasattr(model, "encode"):
        return model.encode(inputs)  # type: ignore[no-any-return]
    raise WordSpanError(
        f"cannot read {type(inputs).__name__} as model input: pass a token tensor with word_spans=..., "
        "an EncodedBatch, or Speech/Text inputs"
    )
