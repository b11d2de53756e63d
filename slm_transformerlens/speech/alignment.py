"""Word time alignments: read slamkit JSON, Praat TextGrid (MFA) and plain lists; validate them.

A word alignment is an ordered list of :class:`WordTiming` ``(word, start_s, end_s)``. Valid means:
``0 <= start <= end``, words in time order, no two words overlapping, and (when the audio duration is
known) every word inside the audio, with a tolerance of ``tolerance_s`` (default one 25 Hz frame) for
aligners that round to their own frame grid.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slm_transformerlens.errors import SpeechInputError
from slm_transformerlens.jsonfile import read_json_object

__all__ = [
    "DEFAULT_SILENCE_LABELS",
    "END_TOLERANCE_S",
    "WordTiming",
    "as_word_timings",
    "end_tolerance",
    "read_alignment",
    "read_slamkit_json",
    "read_textgrid",
    "validate_words",
    "write_slamkit_json",
]

#: Interval labels that mean "no word" in MFA / pocketsphinx output.
DEFAULT_SILENCE_LABELS: tuple[str, ...] = ("", "sil", "sp", "<sil>", "<s>", "</s>")
#: How far past the end of the audio a word may end (one 25 Hz frame): aligners round to their own grid.
END_TOLERANCE_S: float = 0.04


def end_tolerance(frame_duration: float) -> float:
    """The end tolerance for an encoder with frames of ``frame_duration`` s: one frame, at least 0.04 s."""
    return max(END_TOLERANCE_S, float(frame_duration))


@dataclass(frozen=True)
class WordTiming:
    """One aligned word: its text and its start / end time in seconds."""

    #: The generated ``__init__`` accepts looser inputs (lists, arrays, tuples) that ``__post_init__`` coerces
    #: to the annotated types or rejects with a ``SpeechInputError``; run-time type checkers must not reject
    #: them first (the fields hold the annotated types once constructed).
    __no_type_check__ = True

    word: str
    start: float
    end: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", float(self.start))
        object.__setattr__(self, "end", float(self.end))
        if not isinstance(self.word, str):
            raise SpeechInputError(f"a word must be a string, got {type(self.word).__name__}: {self.word!r}")
        if not self.word.strip():
            raise SpeechInputError(
                f"an aligned word is empty ({self.word!r} at {self.start}-{self.end} s); drop silence "
                "intervals from the alignment (the file readers skip them)"
            )
        if not (math.isfinite(self.start) and math.isfinite(self.end)):
            raise SpeechInputError(f"word {self.word!r} has a non-finite time ({self.start}, {self.end})")
        if self.start < 0 or self.end < self.start:
            raise SpeechInputError(
                f"word {self.word!r} has invalid times start={self.start} s, end={self.end} s "
                "(need 0 <= start <= end)"
            )

    def to_list(self) -> list[Any]:
        """``[word, start, end]`` as in slamkit's ``aligned_text``."""
        return [self.word, self.start, self.end]


def as_word_timings(words: Iterable[Any]) -> tuple[WordTiming, ...]:
    """Convert ``(word, start, end)`` tuples / lists, dicts with those keys, or WordTimings.

    Raises:
        SpeechInputError: an entry that is none of these.
    """
    out: list[WordTiming] = []
    for entry in words:
        if isinstance(entry, WordTiming):
            out.append(entry)
        elif isinstance(entry, Mapping):
            try:
                out.append(WordTiming(entry["word"], entry["start"], entry["end"]))
            except KeyError as error:
                raise SpeechInputError(f"alignment entry {entry!r} lacks key {error}") from None
        elif isinstance(entry, Sequence) and not isinstance(entry, str) and len(entry) == 3:
            out.append(WordTiming(entry[0], entry[1], entry[2]))
        else:
            raise SpeechInputError(
                f"cannot read a word alignment entry from {entry!r}; expected (word, start_s, end_s)"
            )
    return tuple(out)


def validate_words(
    words: Sequence[WordTiming], *, duration_s: float | None = None, tolerance_s: float = END_TOLERANCE_S
) -> None:
    """Check that words are ordered, non-overlapping and inside the audio.

    Args:
        words: the alignment.
        duration_s: the audio (or unit) duration, if known.
        tolerance_s: how far past ``duration_s`` a word may end (aligner frame rounding).

    Raises:
        SpeechInputError: naming the first offending word.
    """
    eps = 1e-6
    for index, word in enumerate(words):
        if index and word.start < words[index - 1].start - eps:
            raise SpeechInputError(
                f"words are not in time order: word {index} {word.word!r} starts at {word.start} s, before word "
                f"{index - 1} {words[index - 1].word!r} ({words[index - 1].start} s)"
            )
        if index and word.start < words[index - 1].end - eps:
            raise SpeechInputError(
                f"words overlap: word {index} {word.word!r} starts at {word.start} s, before word {index - 1} "
                f"{words[index - 1].word!r} ends ({words[index - 1].end} s)"
            )
        if duration_s is not None and word.end > duration_s + tolerance_s + eps:
            raise SpeechInputError(
                f"word {index} {word.word!r} ends at {word.end} s, outside the audio ({duration_s:.3f} s long); "
                "is this the alignment of another file or of audio at another sample rate?"
            )


def read_slamkit_json(
    source: str | Path | Mapping[str, Any], *, silence_labels: Sequence[str] = DEFAULT_SILENCE_LABELS
) -> tuple[WordTiming, ...]:
    """Read slamkit's alignment format: a JSON object with ``aligned_text`` = ``[[word, start, end], ...]``.

    Entries whose word is in ``silence_labels`` after stripping (e.g. empty) are dropped, as in
    :func:`read_textgrid`.

    Args:
        source: a path to a ``.json`` file, or the already-parsed object.
    """
    fix = "it should hold {'aligned_text': [[word, start_s, end_s], ...]} (slamkit's alignment format)"
    if isinstance(source, (str, Path)):
        data: Any = read_json_object(source, what="alignment", error=SpeechInputError, fix=fix)
    else:
        data = source
    if not isinstance(data, Mapping) or "aligned_text" not in data:
        where = f"{source}: " if isinstance(source, (str, Path)) else ""
        raise SpeechInputError(
            f"{where}a slamkit alignment is a JSON object with an 'aligned_text' list of [word, start_s, end_s]"
        )
    entries = data["aligned_text"]
    if not isinstance(entries, list | tuple):
        raise SpeechInputError(
            f"'aligned_text' must be a list of [word, start_s, end_s], not {type(entries).__name__}"
        )
    silence = {label.strip() for label in silence_labels}
    return as_word_timings(entry for entry in entries if not _is_silence(entry, silence))


def _is_silence(entry: Any, silence: set[str]) -> bool:
    """Whether an alignment entry (``[word, start, end]`` or a dict) is a silence label such as ``""``."""
    if isinstance(entry, Mapping):
        word = entry.get("word")
    elif isinstance(entry, list | tuple) and entry:
        word = entry[0]
    else:
        return False  # malformed: as_word_timings names it
    return isinstance(word, str) and word.strip() in silence


def write_slamkit_json(path: str | Path, words: Sequence[WordTiming], **extra: Any) -> None:
    """Write ``{"aligned_text": [[word, start, end], ...], **extra}`` as slamkit does."""
    payload = {**extra, "aligned_text": [w.to_list() for w in words]}
    Path(path).write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


_TEXTGRID_TOKEN = re.compile(
    r'"((?:[^"]|"")*)"'  # a quoted string ("" escapes a quote)
    r"|(<exists>|<absent>)"  # flags
    r"|\[\s*\d*\s*\]"  # item [1]: / intervals [3]: indices, skipped
    r"|(?<![\w.])([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?![\w.])"  # a number
)


def _textgrid_tokens(text: str) -> list[str | float]:
    tokens: list[str | float] = []
    for match in _TEXTGRID_TOKEN.finditer(text):
        quoted, flag, number = match.groups()
        if quoted is not None:
            tokens.append(quoted.replace('""', '"'))
        elif flag is not None:
            tokens.append(flag)
        elif number is not None:
            tokens.append(float(number))
    return tokens


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16")
    return raw.decode("utf-8-sig")


def read_textgrid(
    path: str | Path,
    *,
    tier: str = "words",
    silence_labels: Sequence[str] = DEFAULT_SILENCE_LABELS,
) -> tuple[WordTiming, ...]:
    """Read the word tier of a Praat TextGrid (long or short text format, UTF-8 or UTF-16), e.g. MFA output.

    Intervals whose label is in ``silence_labels`` (after stripping) are dropped.

    Raises:
        SpeechInputError: the file is not a TextGrid or has no interval tier named ``tier``.
    """
    tokens = _textgrid_tokens(_read_text(Path(path)))
    try:
        if tokens[:2] != ["ooTextFile", "TextGrid"]:
            raise SpeechInputError(f"{path} is not a Praat TextGrid text file")
        position = 4  # file type, object class, xmin, xmax
        if tokens[position] != "<exists>":
            raise SpeechInputError(f"{path} has no tiers")
        n_tiers = int(tokens[position + 1])
        position += 2
        names = []
        for _ in range(n_tiers):
            tier_class, name = tokens[position], tokens[position + 1]
            count = int(tokens[position + 4])
            position += 5
            width = 3 if tier_class == "IntervalTier" else 2
            items = tokens[position : position + width * count]
            position += width * count
            names.append(name)
            if name != tier:
                continue
            if tier_class != "IntervalTier":
                raise SpeechInputError(f"tier {tier!r} of {path} is a {tier_class}, not an IntervalTier")
            words = []
            for i in range(count):
                start, end, label = items[3 * i : 3 * i + 3]
                label = str(label).strip()
                if label in silence_labels:
                    continue
                words.append(WordTiming(label, float(start), float(end)))
            return tuple(words)
    except (IndexError, TypeError, ValueError) as error:
        if isinstance(error, SpeechInputError):
            raise
        raise SpeechInputError(f"{path} is not a well-formed TextGrid ({error})") from None
    raise SpeechInputError(f"{path} has no tier named {tier!r}; its tiers are {names}")


def read_alignment(path: str | Path, **kwargs: Any) -> tuple[WordTiming, ...]:
    """Read an alignment file by extension: ``.json`` (slamkit) or ``.TextGrid`` (Praat / MFA).

    Raises:
        SpeechInputError: the file does not exist, is a folder, or is in neither format.
    """
    suffix = Path(path).suffix.lower()
    if not Path(path).is_file():
        what = "is a folder, not a file" if Path(path).is_dir() else "does not exist"
        raise SpeechInputError(
            f"alignment file {path} {what}; pass the path of a word alignment: a slamkit .json "
            "({'aligned_text': [[word, start_s, end_s], ...]}) or a Praat / MFA .TextGrid"
        )
    if suffix == ".json":
        return read_slamkit_json(path)
    if suffix == ".textgrid":
        return read_textgrid(path, **kwargs)
    raise SpeechInputError(
        f"unknown alignment format {suffix!r} for {path}; use .json (slamkit) or .TextGrid"
    )
