"""Speech units: de-duplication with run lengths, frame times, and word -> unit ranges.

Conventions (slamkit, SpiritLM): a speech encoder emits one unit per frame (25 Hz => 0.04 s per frame).
Consecutive equal units are merged and their run lengths (``durations``, in frames) kept. Unit ``k`` ends
at ``(frame_offset + cumsum(durations)[k]) * frame_duration`` seconds. A word spoken from ``start`` to
``end`` owns the units whose END time lies in ``[start, end]`` (``bisect_left`` / ``bisect_right`` over the
end times, exactly as slamkit's interleaving tokeniser does).

Two words that touch (``end_k == start_{k+1}``) could both claim the unit ending exactly on the boundary;
that unit is given to the earlier word, so word spans never overlap.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from slm_transformerlens.errors import SpeechInputError

__all__ = [
    "FRAME_DURATION_25HZ",
    "dedup_units",
    "unit_end_times",
    "unit_start_frames",
    "word_unit_ranges",
]

#: Seconds per frame of mHuBERT-25Hz (hop 640 samples at 16 kHz).
FRAME_DURATION_25HZ: float = 0.04


def dedup_units(frames: Sequence[int] | Int[Tensor, " frames"] | np.ndarray) -> tuple[list[int], list[int]]:
    """Merge consecutive equal units, keeping their run lengths.

    Args:
        frames: one unit per frame.

    Returns:
        ``(units, durations)``: the de-duplicated units and how many frames each one lasted.
    """
    values = torch.as_tensor(frames).reshape(-1).tolist() if not isinstance(frames, list) else frames
    units: list[int] = []
    durations: list[int] = []
    for value in values:
        value = int(value)
        if units and units[-1] == value:
            durations[-1] += 1
        else:
            units.append(value)
            durations.append(1)
    return units, durations


def unit_end_times(durations: Sequence[int], frame_duration: float, frame_offset: int = 0) -> np.ndarray:
    """End time in seconds of each (de-duplicated) unit.

    Computed from integer frame counts so that a slice of an utterance (``frame_offset`` > 0) gives
    bit-identical times to the full utterance.
    """
    frames = frame_offset + np.cumsum(np.asarray(durations, dtype=np.int64))
    return frames * float(frame_duration)


def unit_start_frames(durations: Sequence[int], frame_offset: int = 0) -> np.ndarray:
    """Index of the first frame of each unit (before de-duplication), counted from the audio start."""
    durations_arr = np.asarray(durations, dtype=np.int64)
    return frame_offset + np.concatenate([[0], np.cumsum(durations_arr)[:-1]]).astype(np.int64)


def word_unit_ranges(
    durations: Sequence[int],
    words: Sequence[tuple[float, float]],
    frame_duration: float,
    frame_offset: int = 0,
) -> list[tuple[int, int]]:
    """For each word ``(start_s, end_s)``, the half-open range of unit indices it owns.

    A unit belongs to a word when its end time is in ``[start, end]`` (slamkit's rule). Words must be
    ordered; a unit ending exactly on a shared boundary goes to the earlier word. A word may get an empty
    range (``start == stop``) when it is shorter than a frame: callers decide what to do with it.

    Raises:
        SpeechInputError: the words are not in time order.
    """
    ends = unit_end_times(durations, frame_duration, frame_offset).tolist()
    ranges: list[tuple[int, int]] = []
    previous_stop = 0
    previous_end = -np.inf
    for index, (start, end) in enumerate(words):
        if start < previous_end - 1e-9:
            raise SpeechInputError(
                f"word {index} starts at {start} s, before the previous word ends ({previous_end} s)"
            )
        lo = max(bisect_left(ends, start), previous_stop)
        hi = max(bisect_right(ends, end), lo)
        ranges.append((lo, hi))
        previous_stop = hi
        previous_end = end
    return ranges
