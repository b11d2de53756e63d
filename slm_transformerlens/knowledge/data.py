"""Spoken-knowledge items: read the ``common-sense-facts-audio`` layout from local parquet, or our JSON.

An item is a prompt with a correct and a counterfactual completion, each as text and (optionally) as
audio with word timings. The parquet reader follows the Hugging Face ``datasets`` schema: an audio
column is a struct ``{bytes: binary, path: string}`` (WAV bytes), word timings are a list of structs
``{word, start, end}`` (seconds) or of ``[word, start, end]`` lists. Every column name is configurable
(:class:`KnowledgeColumns`), because the released data set's own names are not fixed here.

Our JSON format is a list of objects ``{"id", "category", "prompt", "correct", "counterfactual"}`` with,
per part ``P`` in ``prompt`` / ``correct`` / ``counterfactual``, optional ``P_units`` (de-duplicated unit
ids), ``P_durations``, ``P_words`` (``[[word, start_s, end_s], ...]``) and ``P_audio`` (a WAV path
relative to the JSON file).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from slm_transformerlens.errors import SpeechInputError
from slm_transformerlens.speech.alignment import WordTiming, as_word_timings
from slm_transformerlens.speech.audio import read_wav
from slm_transformerlens.speech.inputs import Speech

__all__ = [
    "PARTS",
    "KnowledgeColumns",
    "KnowledgeItem",
    "SpokenPart",
    "items_from_facts",
    "read_knowledge",
    "read_knowledge_json",
    "read_knowledge_parquet",
]

#: The three parts of an item.
PARTS: tuple[str, ...] = ("prompt", "correct", "counterfactual")


@dataclass(frozen=True)
class SpokenPart:
    """A part of an item as speech: its audio (float32 mono) and word timings, and / or its units."""

    audio: np.ndarray | None = field(default=None, repr=False, compare=False)
    sample_rate: int | None = None
    words: tuple[WordTiming, ...] | None = None
    speech: Speech | None = None


@dataclass(frozen=True)
class KnowledgeItem:
    """One fact: ``prompt`` + ``correct`` is true, ``prompt`` + ``counterfactual`` is not."""

    item_id: str
    prompt: str
    correct: str
    counterfactual: str
    category: str | None = None
    spoken: Mapping[str, SpokenPart] = field(default_factory=dict, repr=False, compare=False)

    def text(self, part: str) -> str:
        """The written form of ``part`` (one of :data:`PARTS`)."""
        return str(getattr(self, part))


@dataclass(frozen=True)
class KnowledgeColumns:
    """Column names of a knowledge parquet (defaults: our fixture's; set them for another layout).

    Text columns are required; ``id``, ``category``, audio and word columns are optional (``None`` or
    absent = not used). ``word_fields`` names the fields of a word-timing struct.
    """

    item_id: str | None = "id"
    category: str | None = "category"
    prompt_text: str = "prompt_text"
    correct_text: str = "correct_text"
    counterfactual_text: str = "counterfactual_text"
    prompt_audio: str | None = "prompt_audio"
    correct_audio: str | None = "correct_audio"
    counterfactual_audio: str | None = "counterfactual_audio"
    prompt_words: str | None = "prompt_words"
    correct_words: str | None = "correct_words"
    counterfactual_words: str | None = "counterfactual_words"
    word_fields: tuple[str, str, str] = ("word", "start", "end")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> KnowledgeColumns:
        """Defaults overridden by ``mapping`` (e.g. parsed from ``--columns '{"prompt_text": "prompt"}'``)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(mapping) - known)
        if unknown:
            raise SpeechInputError(f"unknown knowledge column keys {unknown}; known: {sorted(known)}")
        values = dict(mapping)
        if "word_fields" in values:
            values["word_fields"] = tuple(values["word_fields"])
        return cls(**values)


def _decode_audio(value: Any, where: str) -> tuple[np.ndarray, int] | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        data = value.get("bytes")
        if data is None and value.get("path"):
            return read_wav(value["path"])
        if data is None:
            return None
    elif isinstance(value, bytes | bytearray):
        data = value
    else:
        raise SpeechInputError(
            f"{where}: an audio cell must be {{bytes, path}} or bytes, got {type(value).__name__}"
        )
    try:
        return read_wav(io.BytesIO(bytes(data)))
    except SpeechInputError as error:
        raise SpeechInputError(f"{where}: {error}") from None


def _word_timings(value: Any, names: tuple[str, str, str], where: str) -> tuple[WordTiming, ...] | None:
    if value is None:
        return None
    rows = []
    for entry in list(value):
        if isinstance(entry, Mapping):
            try:
                rows.append((str(entry[names[0]]), float(entry[names[1]]), float(entry[names[2]])))
            except KeyError as error:
                raise SpeechInputError(
                    f"{where}: a word-timing struct lacks field {error}; set KnowledgeColumns.word_fields "
                    f"(now {names}) to its (word, start, end) field names"
                ) from None
        else:
            word, start, end = list(entry)
            rows.append((str(word), float(start), float(end)))
    return as_word_timings(rows)


def _parquet_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(path.rglob("*.parquet"))
        if not files:
            raise SpeechInputError(f"no .parquet files under {path}")
        return files
    if not path.is_file():
        raise SpeechInputError(f"{path} does not exist")
    return [path]


def read_knowledge_parquet(
    path: str | Path, columns: KnowledgeColumns | None = None, *, audio: bool = True
) -> list[KnowledgeItem]:
    """Read knowledge items from a parquet file (or a folder of them, e.g. a data set's ``data/``).

    Args:
        path: a ``.parquet`` file or a folder searched recursively.
        columns: the column names (:class:`KnowledgeColumns`).
        audio: decode the audio columns (WAV bytes); ``False`` reads text and timings only.

    Raises:
        SpeechInputError: a missing file or required column, an undecodable audio cell.
    """
    import pyarrow.parquet as pq

    columns = columns or KnowledgeColumns()
    items: list[KnowledgeItem] = []
    for file in _parquet_files(Path(path)):
        table = pq.read_table(file)
        names = set(table.column_names)
        required = [columns.prompt_text, columns.correct_text, columns.counterfactual_text]
        missing = [c for c in required if c not in names]
        if missing:
            raise SpeechInputError(
                f"{file} has no columns {missing} (it has {sorted(names)}); pass KnowledgeColumns(...) "
                '(CLI: --columns \'{"prompt_text": "..."}\') naming its text columns'
            )

        def column(name: str | None, names: set[str] = names, table: Any = table) -> list[Any] | None:
            return table.column(name).to_pylist() if name is not None and name in names else None

        texts = {part: column(getattr(columns, f"{part}_text")) for part in PARTS}
        audios = {part: column(getattr(columns, f"{part}_audio")) if audio else None for part in PARTS}
        words = {part: column(getattr(columns, f"{part}_words")) for part in PARTS}
        ids, categories = column(columns.item_id), column(columns.category)
        for row in range(table.num_rows):
            where = f"{file.name} row {row}"
            spoken = {}
            for part in PARTS:
                decoded = (
                    None if audios[part] is None else _decode_audio(audios[part][row], f"{where} {part}")
                )
                timing = None if words[part] is None else words[part][row]
                timings = _word_timings(timing, columns.word_fields, f"{where} {part}")
                if decoded is not None or timings is not None:
                    samples, rate = decoded if decoded is not None else (None, None)
                    spoken[part] = SpokenPart(samples, rate, timings)
            texts_row = {part: texts[part][row] for part in PARTS}  # type: ignore[index]
            items.append(
                KnowledgeItem(
                    item_id=str(ids[row]) if ids is not None else f"{file.stem}-{row}",
                    category=None if categories is None else categories[row],
                    spoken=spoken,
                    **{part: str(text).strip() for part, text in texts_row.items()},
                )
            )
    return items


def read_knowledge_json(path: str | Path) -> list[KnowledgeItem]:
    """Read knowledge items from our JSON format (see the module docstring)."""
    path = Path(path)
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise SpeechInputError(f"cannot read {path} as knowledge JSON: {error}") from None
    if not isinstance(records, list):
        raise SpeechInputError(
            f"{path}: expected a JSON list of items with prompt / correct / counterfactual"
        )
    items = []
    for i, record in enumerate(records):
        missing = [p for p in PARTS if p not in record]
        if missing:
            raise SpeechInputError(f"{path} item {i} lacks {missing}")
        spoken = {}
        for part in PARTS:
            words = record.get(f"{part}_words")
            timings = None if words is None else as_word_timings([tuple(w) for w in words])
            speech = None
            if f"{part}_units" in record:
                speech = Speech(
                    units=record[f"{part}_units"], durations=record.get(f"{part}_durations"), words=timings
                )
            samples = rate = None
            if record.get(f"{part}_audio"):
                samples, rate = read_wav(path.parent / record[f"{part}_audio"])
            if speech is not None or samples is not None or timings is not None:
                spoken[part] = SpokenPart(samples, rate, timings, speech)
        items.append(
            KnowledgeItem(
                item_id=str(record.get("id", i)),
                category=record.get("category"),
                spoken=spoken,
                **{part: str(record[part]) for part in PARTS},
            )
        )
    return items


def read_knowledge(path: str | Path, columns: KnowledgeColumns | None = None) -> list[KnowledgeItem]:
    """:func:`read_knowledge_json` for a ``.json`` file, :func:`read_knowledge_parquet` otherwise."""
    if Path(path).suffix.lower() == ".json":
        return read_knowledge_json(path)
    return read_knowledge_parquet(path, columns)


def items_from_facts(facts: Iterable[Any] | None = None) -> list[KnowledgeItem]:
    """Text-only items from :data:`~slm_transformerlens.knowledge.facts.FACTS` (or other ``Fact`` objects)."""
    from slm_transformerlens.knowledge.facts import FACTS

    return [
        KnowledgeItem(f.fact_id, f.prompt, f.correct, f.counterfactual, f.category)
        for f in (FACTS if facts is None else facts)
    ]
