"""Interleaving plans: which words of an aligned utterance are spoken (units) and which are written (text).

A plan is a boolean mask over the words (``True`` = speech). :func:`interleave` turns an aligned
:class:`Speech` and a mask into an utterance ``[Text | Speech, ...]``. A run of consecutive spoken words
becomes one Speech slice holding the units from the first word's start to the last word's end (slamkit's
``bisect_left(start)`` .. ``bisect_right(end)``, inter-word silences inside the run included); text words
become Text segments carrying their times.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from slm_transformerlens.errors import SpeechInputError
from slm_transformerlens.speech.inputs import Speech, Text
from slm_transformerlens.speech.units import unit_end_times

__all__ = ["interleave", "plan_mask", "poisson_span_mask"]


def poisson_span_mask(
    n_words: int, *, mean_span: float = 10, speech_fraction: float = 0.3, seed: int | None = None
) -> np.ndarray:
    """slamkit's ``select_spans_poisson``: Poisson-length spans of spoken words, about ``speech_fraction``.

    Draws exactly as slamkit does (``choice`` of an eligible start, ``poisson`` span length, reject
    overlaps, drop the index after a span from the eligible set), with a private
    ``np.random.RandomState(seed)`` so that ``np.random.seed(seed)`` + slamkit gives the same mask.

    Returns:
        ``bool[n_words]``, True for spoken words.
    """
    rng = np.random.RandomState(seed)
    total_to_select = math.ceil(n_words * speech_fraction)
    mask = np.zeros(n_words, dtype=int)
    eligible = set(range(n_words))
    selected = 0
    while selected < total_to_select and eligible:
        start = rng.choice(list(eligible))
        length = rng.poisson(mean_span)
        end = min(start + length, n_words)
        if np.any(mask[start:end] == 1):
            continue
        mask[start:end] = 1
        selected += end - start
        for i in range(start, end):
            eligible.discard(i)
        if end < n_words:
            eligible.discard(end)
    return mask.astype(bool)


def plan_mask(
    n_words: int,
    plan: str | Sequence[bool | int] | np.ndarray,
    *,
    mean_span: float = 10,
    speech_fraction: float = 0.3,
    seed: int | None = None,
) -> np.ndarray:
    """The speech mask of a plan: ``"speech"`` (all spoken), ``"text"`` (all written), ``"poisson"``
    (:func:`poisson_span_mask`) or an explicit per-word mask."""
    if isinstance(plan, str):
        if plan == "speech":
            return np.ones(n_words, dtype=bool)
        if plan == "text":
            return np.zeros(n_words, dtype=bool)
        if plan == "poisson":
            return poisson_span_mask(n_words, mean_span=mean_span, speech_fraction=speech_fraction, seed=seed)
        raise SpeechInputError(f"unknown plan {plan!r}; use 'speech', 'text', 'poisson' or a per-word mask")
    mask = np.asarray(plan, dtype=bool).reshape(-1)
    if mask.shape[0] != n_words:
        raise SpeechInputError(f"the mask has {mask.shape[0]} entries for {n_words} words")
    return mask


def interleave(
    speech: Speech,
    plan: str | Sequence[bool | int] | np.ndarray = "speech",
    *,
    mean_span: float = 10,
    speech_fraction: float = 0.3,
    seed: int | None = None,
) -> list[Speech | Text]:
    """Split an aligned utterance into text and speech segments following a plan.

    Raises:
        SpeechInputError: the Speech has no word alignment, or a run of spoken words owns no unit.
    """
    if not speech.words:
        raise SpeechInputError("interleaving needs a word alignment (Speech(words=...))")
    words = speech.words
    mask = plan_mask(len(words), plan, mean_span=mean_span, speech_fraction=speech_fraction, seed=seed)
    ends = unit_end_times(speech.durations or (), speech.frame_duration, speech.frame_offset).tolist()
    from bisect import bisect_left, bisect_right

    segments: list[Speech | Text] = []
    i = 0
    while i < len(words):
        j = i
        while j + 1 < len(words) and mask[j + 1] == mask[i]:
            j += 1
        run = words[i : j + 1]
        if mask[i]:
            lo, hi = bisect_left(ends, run[0].start), bisect_right(ends, run[-1].end)
            if hi <= lo:
                raise SpeechInputError(
                    f"spoken words {[w.word for w in run]} ({run[0].start:.3f}-{run[-1].end:.3f} s) own no unit"
                )
            segments.append(speech.slice_units(lo, hi, words=run))
        else:
            segments.append(Text(tuple(w.word for w in run), times=tuple((w.start, w.end) for w in run)))
        i = j + 1
    return segments
