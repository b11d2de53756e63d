"""Rebuild tests/fixtures/knowledge/facts_espeak.parquet: spoken facts in the common-sense-facts-audio layout.

The facts (prompt, correct and same-category counterfactual completion) are
``slm_transformerlens.knowledge.facts.FACTS`` (written for this project). Each part is synthesized with
espeak-ng through its C API (PyPI ``espeakng-loader``; see ``make_speech_fixtures.espeak_synthesize``):
word events give the exact sample where each word starts, a word ends where the next word, a pause or
the utterance end starts. Audio is resampled to 16 kHz and stored as 16-bit PCM WAV bytes.

The parquet follows the Hugging Face ``datasets`` schema: audio columns are structs
``{bytes: binary, path: string}`` with the ``Audio`` feature recorded in the schema's ``huggingface``
metadata; word timings are ``list<struct<word: string, start: double, end: double>>``.

Usage: ``python scripts/make_knowledge_fixture.py [--n 24] [--out tests/fixtures/knowledge/facts_espeak.parquet]``
(needs ``pip install espeakng-loader``; tests only read the committed output).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from slm_transformerlens.knowledge.facts import FACTS
from slm_transformerlens.speech.audio import resample, write_wav

ROOT = Path(__file__).resolve().parents[1]
TARGET_RATE = 16_000
PARTS = ("prompt", "correct", "counterfactual")


def _espeak():
    spec = importlib.util.spec_from_file_location(
        "make_speech_fixtures", ROOT / "scripts/make_speech_fixtures.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.espeak_synthesize


def _wav_bytes(audio: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    write_wav(buffer, audio, TARGET_RATE)
    return buffer.getvalue()


def main() -> None:
    """Synthesize the first ``--n`` facts and write the parquet."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=24, help="how many facts (default 24, < 2 MB)")
    parser.add_argument("--out", type=Path, default=ROOT / "tests/fixtures/knowledge/facts_espeak.parquet")
    args = parser.parse_args()
    synthesize = _espeak()
    word = pa.struct([("word", pa.string()), ("start", pa.float64()), ("end", pa.float64())])
    audio_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    columns: dict[str, list] = {"id": [], "category": []}
    for part in PARTS:
        columns[f"{part}_text"], columns[f"{part}_audio"], columns[f"{part}_words"] = [], [], []
    for fact in FACTS[: args.n]:
        columns["id"].append(fact.fact_id)
        columns["category"].append(fact.category)
        for part in PARTS:
            text = getattr(fact, part)
            audio, rate, words = synthesize(text)
            if len(words) != len(text.split()):
                raise SystemExit(f"espeak gave {len(words)} word events for {text!r}")
            audio16 = resample(torch.from_numpy(audio), rate, TARGET_RATE).numpy()
            columns[f"{part}_text"].append(text)
            columns[f"{part}_audio"].append(
                {"bytes": _wav_bytes(audio16), "path": f"{fact.fact_id}_{part}.wav"}
            )
            columns[f"{part}_words"].append(
                [{"word": w, "start": round(s, 5), "end": round(e, 5)} for w, s, e in words]
            )
    fields = [pa.field("id", pa.string()), pa.field("category", pa.string())]
    for part in PARTS:
        fields += [
            pa.field(f"{part}_text", pa.string()),
            pa.field(f"{part}_audio", audio_type),
            pa.field(f"{part}_words", pa.list_(word)),
        ]
    features = {
        "id": {"dtype": "string", "_type": "Value"},
        "category": {"dtype": "string", "_type": "Value"},
    }
    for part in PARTS:
        features[f"{part}_text"] = {"dtype": "string", "_type": "Value"}
        features[f"{part}_audio"] = {"sampling_rate": TARGET_RATE, "_type": "Audio"}
        features[f"{part}_words"] = [
            {
                "word": {"dtype": "string", "_type": "Value"},
                "start": {"dtype": "float64", "_type": "Value"},
                "end": {"dtype": "float64", "_type": "Value"},
            }
        ]
    schema = pa.schema(fields, metadata={"huggingface": json.dumps({"info": {"features": features}})})
    table = pa.Table.from_pydict(columns, schema=schema)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, args.out, compression="zstd")
    print(f"{args.out}: {table.num_rows} facts, {args.out.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
