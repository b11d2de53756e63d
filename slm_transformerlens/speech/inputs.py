"""Public input types: :class:`Speech` and :class:`Text`.

An *utterance* is a list of segments (``[Text(" once upon a"), Speech(...), Text(" there was")]``); a
*batch* is a list of utterances. A bare ``Speech`` or ``Text`` is a one-segment utterance.

``Speech`` holds de-duplicated units with their run lengths (frames), optionally the word alignment
(absolute times in seconds from the start of the audio), SpiritLM Expressive pitch / style tokens with
times, and the audio itself (kept for reference, never re-encoded implicitly).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from slm_transformerlens.errors import SpeechInputError
from slm_transformerlens.speech.alignment import WordTiming, as_word_timings, end_tolerance, validate_words
from slm_transformerlens.speech.units import FRAME_DURATION_25HZ, dedup_units, word_unit_ranges

__all__ = ["EmptyWordPolicy", "Speech", "Text", "TimedToken", "timed_tokens"]

#: What to do with an aligned word that owns no unit (shorter than a frame):
#: ``"warn"`` drop it from the span table with a warning (default), ``"error"`` raise, ``"keep"`` keep a
#: row with ``n_tokens == 0`` and ``last == -1``.
EmptyWordPolicy = Literal["warn", "error", "keep"]


@dataclass(frozen=True)
class TimedToken:
    """A pitch or style token (SpiritLM Expressive) and its time in seconds from the audio start."""

    value: int
    time: float


def timed_tokens(values: Sequence[int], rate: float, *, dedup: bool) -> tuple[TimedToken, ...]:
    """Time-stamp a per-frame token stream as SpiritLM does (``_toks_positions``).

    Token ``i`` gets time ``i / rate``; with ``dedup`` a repeat of the previous token is dropped and the
    first occurrence's time kept. SpiritLM uses pitch: rate 12.5, dedup; style: rate 1, no dedup.
    """
    out: list[TimedToken] = []
    previous = None
    for index, value in enumerate(values):
        if not dedup or previous is None or value != previous:
            out.append(TimedToken(int(value), index / rate))
        previous = value
    return tuple(out)


def _int_tuple(values: Any, name: str) -> tuple[int, ...]:
    array = np.asarray(values.tolist() if hasattr(values, "tolist") else list(values))
    if array.size == 0:
        return ()
    if array.ndim != 1 or not (np.issubdtype(array.dtype, np.integer) or np.all(np.mod(array, 1) == 0)):
        raise SpeechInputError(
            f"{name} must be a 1-D sequence of integers, got shape {array.shape} dtype {array.dtype}"
        )
    return tuple(int(v) for v in array)


@dataclass(frozen=True)
class Speech:
    """A spoken segment as discrete units.

    Attributes:
        units: de-duplicated unit ids (``0 <= u < n_units`` of the model).
        durations: run length in frames of each unit (all 1 when not given).
        words: word alignment, absolute seconds from the audio start (optional).
        transcript: a label for the whole segment when there is no word alignment.
        frame_duration: seconds per frame (0.04 for mHuBERT-25Hz).
        frame_offset: frames of the audio before this segment's first unit (non-zero for a slice).
        pitch: SpiritLM Expressive pitch tokens with times (merged with the units by time).
        style: SpiritLM Expressive style tokens with times.
        audio: the waveform the units came from (reference only), 16 kHz mono.
        sample_rate: the rate of ``audio``.
    """

    #: The generated ``__init__`` accepts looser inputs (lists, arrays, tuples) that ``__post_init__`` coerces
    #: to the annotated types or rejects with a ``SpeechInputError``; run-time type checkers must not reject
    #: them first (the fields hold the annotated types once constructed).
    __no_type_check__ = True

    units: tuple[int, ...]
    durations: tuple[int, ...] | None = None
    words: tuple[WordTiming, ...] | None = None
    transcript: str | None = None
    frame_duration: float = FRAME_DURATION_25HZ
    frame_offset: int = 0
    pitch: tuple[TimedToken, ...] = ()
    style: tuple[TimedToken, ...] = ()
    audio: np.ndarray | None = field(default=None, repr=False, compare=False)
    sample_rate: int | None = None

    def __post_init__(self) -> None:
        units = _int_tuple(self.units, "units")
        if not units:
            raise SpeechInputError(
                "a Speech segment needs at least one unit (was the audio empty or silent-trimmed?)"
            )
        if min(units) < 0:
            raise SpeechInputError(f"speech units must be non-negative, got {min(units)}")
        durations = (1,) * len(units) if self.durations is None else _int_tuple(self.durations, "durations")
        if len(durations) != len(units):
            raise SpeechInputError(
                f"{len(units)} units but {len(durations)} durations; give one run length per unit"
            )
        if min(durations) < 1:
            raise SpeechInputError("unit durations (run lengths in frames) must be >= 1")
        if not (self.frame_duration > 0 and math.isfinite(self.frame_duration)):
            raise SpeechInputError(
                f"frame_duration must be a positive number of seconds, got {self.frame_duration}"
            )
        if self.frame_offset < 0:
            raise SpeechInputError("frame_offset must be >= 0")
        object.__setattr__(self, "units", units)
        object.__setattr__(self, "durations", durations)
        for name in ("pitch", "style"):
            tokens = tuple(
                t if isinstance(t, TimedToken) else TimedToken(int(t[0]), float(t[1]))
                for t in getattr(self, name)
            )
            object.__setattr__(self, name, tokens)
        if self.audio is not None:
            if self.sample_rate is None:
                raise SpeechInputError("Speech.audio needs its sample_rate")
            object.__setattr__(self, "audio", np.asarray(self.audio, dtype=np.float32))
        if self.words is not None:
            words = as_word_timings(self.words)
            object.__setattr__(self, "words", words)
            validate_words(words, duration_s=self.duration_s, tolerance_s=end_tolerance(self.frame_duration))

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_frames(cls, frames: Sequence[int] | Any, *, dedup: bool = True, **kwargs: Any) -> Speech:
        """Build from one unit per frame; ``dedup`` merges repeats and keeps run lengths (the SLM convention)."""
        values = _int_tuple(frames, "frames")
        if not values:
            raise SpeechInputError("no frames: the audio is shorter than one encoder frame")
        if dedup:
            units, durations = dedup_units(list(values))
        else:
            units, durations = list(values), [1] * len(values)
        return cls(units=tuple(units), durations=tuple(durations), **kwargs)

    # ------------------------------------------------------------------ times
    @property
    def n_frames(self) -> int:
        """Frames covered by the units (sum of run lengths)."""
        return int(sum(self.durations or ()))

    @property
    def duration_s(self) -> float:
        """End time of the segment in seconds from the audio start (the audio length when audio is given)."""
        if self.audio is not None and self.sample_rate:
            return max(
                self.audio.shape[-1] / self.sample_rate,
                (self.frame_offset + self.n_frames) * self.frame_duration,
            )
        return (self.frame_offset + self.n_frames) * self.frame_duration

    @property
    def start_s(self) -> float:
        """Start time of the first unit in seconds."""
        return self.frame_offset * self.frame_duration

    def word_unit_ranges(self, on_empty: EmptyWordPolicy = "warn") -> list[tuple[int, int]]:
        """Unit index range ``[lo, hi)`` of each aligned word (see :func:`units.word_unit_ranges`).

        Args:
            on_empty: ``"error"`` raises for a word that owns no unit; other values return the empty range
                (the encoder then applies the policy to the span table).

        Raises:
            SpeechInputError: no word alignment, or an empty word with ``on_empty="error"``.
        """
        if self.words is None:
            raise SpeechInputError(
                "this Speech has no word alignment; pass words=[(word, start_s, end_s), ...]"
            )
        ranges = word_unit_ranges(
            self.durations or (),
            [(w.start, w.end) for w in self.words],
            self.frame_duration,
            self.frame_offset,
        )
        for word, (lo, hi) in zip(self.words, ranges, strict=True):
            if lo == hi and on_empty == "error":
                raise SpeechInputError(
                    f"word {word.word!r} ({word.start:.3f}-{word.end:.3f} s) owns no speech unit: no unit's frame ends "
                    f"inside it (frames are {self.frame_duration} s). Use on_empty_word='warn' to drop such words "
                    "from the span table or 'keep' to keep them with zero tokens."
                )
        return ranges

    def slice_units(self, lo: int, hi: int, words: Iterable[WordTiming] | None = None) -> Speech:
        """The units ``[lo, hi)`` as a new segment with the right ``frame_offset`` (times stay absolute).

        Pitch / style tokens are kept when their time falls inside the slice.
        """
        if not 0 <= lo < hi <= len(self.units):
            raise SpeechInputError(
                f"cannot slice units [{lo}, {hi}) of a segment with {len(self.units)} units"
            )
        durations = self.durations or ()
        offset = self.frame_offset + int(sum(durations[:lo]))
        n_frames = int(sum(durations[lo:hi]))
        t0, t1 = offset * self.frame_duration, (offset + n_frames) * self.frame_duration

        def keep(tokens: tuple[TimedToken, ...]) -> tuple[TimedToken, ...]:
            return tuple(t for t in tokens if t0 <= t.time < t1)

        piece = Speech(
            units=self.units[lo:hi],
            durations=durations[lo:hi],
            frame_duration=self.frame_duration,
            frame_offset=offset,
            pitch=keep(self.pitch),
            style=keep(self.style),
        )
        if words is not None:
            # words were validated against the whole utterance; a slice may end inside a long unit run
            object.__setattr__(piece, "words", as_word_timings(words))
        return piece


_WORD_SPLIT = re.compile(r"\S+")


@dataclass(frozen=True)
class Text:
    """A text segment.

    ``Text(" once upon a")`` splits on whitespace; ``Text(["once", "upon", "a"])`` takes the words as
    given. Every word is stored with exactly one leading space (``" once"``), the convention of both SIMS
    (words carry their leading space) and SpiritLM (text after ``[Text]`` starts with a space).

    Attributes:
        text: what was passed.
        words: the words, each with one leading space (computed).
        times: optional ``(start_s, end_s)`` per word (when the text came from an aligned utterance).
    """

    #: The generated ``__init__`` accepts looser inputs (lists, arrays, tuples) that ``__post_init__`` coerces
    #: to the annotated types or rejects with a ``SpeechInputError``; run-time type checkers must not reject
    #: them first (the fields hold the annotated types once constructed).
    __no_type_check__ = True

    text: str | tuple[str, ...]
    times: tuple[tuple[float, float], ...] | None = None
    words: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        if isinstance(self.text, str):
            raw = _WORD_SPLIT.findall(self.text)
        else:
            raw = [str(w) for w in self.text]
            object.__setattr__(self, "text", tuple(raw))
        words = tuple(" " + w.strip() for w in raw if w.strip())
        if len(words) != len(raw):
            warnings.warn("Text: empty words were dropped", stacklevel=3)
        if not words:
            raise SpeechInputError("a Text segment needs at least one word")
        object.__setattr__(self, "words", words)
        if self.times is not None:
            times = tuple((float(s), float(e)) for s, e in self.times)
            if len(times) != len(words):
                raise SpeechInputError(f"Text has {len(words)} words but {len(times)} times")
            object.__setattr__(self, "times", times)
