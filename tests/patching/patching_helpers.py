"""Helpers of the patching tests: paired utterances (imported by conftest.py and the tests)."""

from __future__ import annotations

from slm_transformerlens.speech.inputs import Speech, Text

PREFIX = Text(" the little")
SUFFIX = Text(" who lived in a village")


def spoken(word: str, units: list[int]) -> Speech:
    """A spoken word: one unit per 40 ms frame, aligned to ``word``."""
    return Speech(units=units, words=[(word, 0.0, 0.04 * len(units))])


def unequal_utterances() -> tuple[list, list]:
    """'girl' spoken with 4 units (clean) vs 'fox' spoken with 7 units (corrupted)."""
    clean = [PREFIX, spoken("girl", [3, 5, 7, 9]), SUFFIX]
    corrupted = [PREFIX, spoken("fox", [11, 12, 13, 14, 15, 16, 17]), SUFFIX]
    return clean, corrupted
