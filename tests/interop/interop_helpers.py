"""Helpers of the interop tests (a uniquely named module): one interleaved utterance and its batch sibling."""

from __future__ import annotations

from typing import Any

from slm_transformerlens import Speech, Text


def utterance() -> list[Any]:
    """Text, a spoken word (with repeated units), text: every modality change of an interleaved input."""
    return [
        Text("the capital of france is"),
        Speech(units=[71, 12, 12, 408, 5, 33], words=[(" paris", 0.0, 0.24)]),
        Text("and rome"),
    ]


def short_utterance() -> list[Any]:
    """A shorter utterance, to batch with :func:`utterance` (different lengths)."""
    return [Text("once upon"), Speech(units=[7, 8, 9], words=[(" a", 0.0, 0.12)])]
