"""Units (dedup, frame times, word -> unit ranges) and word alignments (slamkit JSON, TextGrid, checks)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from speech_helpers import FIXTURE_NAMES, FIXTURES, load_fixture

from slm_transformerlens.errors import SpeechInputError
from slm_transformerlens.speech import (
    Speech,
    WordTiming,
    dedup_units,
    read_alignment,
    read_slamkit_json,
    read_textgrid,
    unit_end_times,
    validate_words,
    word_unit_ranges,
    write_slamkit_json,
)


def test_dedup_keeps_run_lengths() -> None:
    assert dedup_units([5, 5, 5, 2, 2, 7, 5]) == ([5, 2, 7, 5], [3, 2, 1, 1])
    assert dedup_units([]) == ([], [])


def test_unit_end_times_25hz_and_slices_are_exact() -> None:
    durations = [3, 2, 1, 4]
    ends = unit_end_times(durations, 0.04)
    assert ends.tolist() == pytest.approx([0.12, 0.2, 0.24, 0.4])
    # a slice starting at unit 2 has frame_offset 5 and bit-identical times
    assert unit_end_times(durations[2:], 0.04, frame_offset=5).tolist() == ends[2:].tolist()


def test_word_unit_ranges_follow_slamkit_bisect() -> None:
    durations = [1, 2, 1, 3, 2]  # ends 0.04 0.12 0.16 0.28 0.36
    assert word_unit_ranges(durations, [(0.0, 0.12), (0.16, 0.36)], 0.04) == [(0, 2), (2, 5)]
    # touching words: the unit ending on the boundary goes to the earlier word (no overlap)
    assert word_unit_ranges(durations, [(0.0, 0.16), (0.16, 0.36)], 0.04) == [(0, 3), (3, 5)]
    # a word shorter than a frame owns nothing
    assert word_unit_ranges(durations, [(0.05, 0.07)], 0.04) == [(1, 1)]


def test_speech_validates_units_and_words() -> None:
    with pytest.raises(SpeechInputError, match="at least one unit"):
        Speech(units=[])
    with pytest.raises(SpeechInputError, match="non-negative"):
        Speech(units=[3, -1])
    with pytest.raises(SpeechInputError, match="durations"):
        Speech(units=[1, 2], durations=[1])
    with pytest.raises(SpeechInputError, match="outside the audio"):
        Speech(units=[1, 2, 3], words=[("a", 0.0, 0.05), ("b", 0.06, 1.0)])
    with pytest.raises(SpeechInputError, match="overlap"):
        Speech(units=[1] * 10, words=[("a", 0.0, 0.2), ("b", 0.1, 0.3)])
    with pytest.raises(SpeechInputError, match="time order"):
        Speech(units=[1] * 10, words=[("a", 0.2, 0.3), ("b", 0.0, 0.1)])
    with pytest.raises(SpeechInputError, match="invalid times"):
        Speech(units=[1] * 10, words=[("a", 0.3, 0.2)])


def test_empty_word_error_message() -> None:
    speech = Speech(units=[1, 2, 3], durations=[1, 2, 1], words=[("a", 0.0, 0.04), ("b", 0.05, 0.07)])
    assert speech.word_unit_ranges() == [(0, 1), (1, 1)]
    with pytest.raises(SpeechInputError, match="owns no speech unit"):
        speech.word_unit_ranges("error")


def test_slamkit_json_roundtrip(tmp_path: Path) -> None:
    words = (WordTiming(" hello", 0.1, 0.4), WordTiming(" world", 0.5, 0.9))
    write_slamkit_json(tmp_path / "a.json", words, audio="a.wav")
    assert read_slamkit_json(tmp_path / "a.json") == words
    assert read_alignment(tmp_path / "a.json") == words
    with pytest.raises(SpeechInputError, match="aligned_text"):
        read_slamkit_json({"words": []})


def _textgrid_long(words: list[tuple[str, float, float]], xmax: float) -> str:
    intervals = []
    t = 0.0
    items = []
    for w, s, e in words:
        if s > t:
            items.append(("", t, s))
        items.append((w, s, e))
        t = e
    if t < xmax:
        items.append(("", t, xmax))
    for i, (w, s, e) in enumerate(items, 1):
        intervals.append(
            f'        intervals [{i}]:\n            xmin = {s}\n            xmax = {e}\n            text = "{w}"'
        )
    phones = (
        '    item [1]:\n        class = "IntervalTier"\n        name = "phones"\n        xmin = 0\n        xmax = {x}\n'
        '        intervals: size = 1\n        intervals [1]:\n            xmin = 0\n            xmax = {x}\n            text = "AH"\n'
    )
    return (
        f'File type = "ooTextFile"\nObject class = "TextGrid"\n\nxmin = 0\nxmax = {xmax}\ntiers? <exists>\nsize = 2\nitem []:\n'
        + phones.format(x=xmax)
        + f'    item [2]:\n        class = "IntervalTier"\n        name = "words"\n        xmin = 0\n        xmax = {xmax}\n'
        + f"        intervals: size = {len(items)}\n"
        + "\n".join(intervals)
        + "\n"
    )


def _textgrid_short(words: list[tuple[str, float, float]], xmax: float) -> str:
    lines = [
        'File type = "ooTextFile"',
        'Object class = "TextGrid"',
        "",
        "0",
        str(xmax),
        "<exists>",
        "1",
        '"IntervalTier"',
        '"words"',
        "0",
        str(xmax),
        str(len(words)),
    ]
    for w, s, e in words:
        lines += [str(s), str(e), f'"{w}"']
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("fmt", ["long", "short"])
def test_textgrid_long_and_short(tmp_path: Path, fmt: str) -> None:
    _, _rate, aligned, _ = load_fixture("librivox_0880")
    words = [(w, s, e) for w, s, e in aligned]
    text = _textgrid_long(words, 2.99) if fmt == "long" else _textgrid_short(words, 2.99)
    path = tmp_path / "a.TextGrid"
    path.write_text(text)
    got = read_textgrid(path)
    assert [(w.word, w.start, w.end) for w in got] == words
    assert read_alignment(path) == got
    path.write_bytes(text.encode("utf-16"))  # Praat's own UTF-16 output
    assert read_textgrid(path) == got
    with pytest.raises(SpeechInputError, match="no tier named"):
        read_textgrid(path, tier="syllables")


def test_textgrid_garbage(tmp_path: Path) -> None:
    path = tmp_path / "x.TextGrid"
    path.write_text("hello")
    with pytest.raises(SpeechInputError):
        read_textgrid(path)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_committed_fixture_alignments_are_valid(name: str) -> None:
    audio, rate, _aligned, meta = load_fixture(name)
    assert rate == 16_000 and audio.ndim == 1
    words = read_slamkit_json(FIXTURES / f"{name}.json")
    assert len(words) == len(meta["text"].split())
    validate_words(words, duration_s=len(audio) / rate)


def test_validate_words_outside_audio() -> None:
    with pytest.raises(SpeechInputError, match="outside the audio"):
        validate_words([WordTiming("a", 0.0, 2.0)], duration_s=1.0)
    validate_words([WordTiming("a", 0.0, 1.03)], duration_s=1.0)  # within one frame of tolerance
    assert math.isclose(WordTiming("a", 1, 2).end, 2.0)
