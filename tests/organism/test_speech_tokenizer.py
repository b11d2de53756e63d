"""From a WAV to the model organism's units (issue 18): ``organism_speech_tokenizer`` and ``--units organism``.

The reference is written here by hand: the WAV read with the standard library, the organism's MFCC
frames (its feature definition, ``organism.units.mfcc_frames``), the nearest of the shipped centres
by an explicit distance per frame, and runs merged with ``itertools.groupby``.
"""

from __future__ import annotations

import itertools
import json
import wave
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from slm_transformerlens.cli import main
from slm_transformerlens.errors import SpeechInputError
from slm_transformerlens.organism.shipped import shipped_checkpoint, shipped_root
from slm_transformerlens.organism.speech_tokenizer import organism_speech_tokenizer
from slm_transformerlens.organism.units import KMeansUnits, mfcc_frames

SPEECH = Path(__file__).resolve().parents[2] / "slm_transformerlens" / "data" / "speech"
WAVS = sorted(SPEECH.glob("*.wav"))


def _read_pcm16(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as handle:
        assert handle.getsampwidth() == 2 and handle.getnchannels() == 1 and handle.getframerate() == 16_000
        data = np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2")
    return data.astype(np.float32) / 32768.0


def _hand_units(audio: np.ndarray, centres: np.ndarray) -> tuple[list[int], list[int]]:
    features = mfcc_frames(audio)
    frames = [int(np.argmin([np.sum((f - c) ** 2) for c in centres])) for f in features]
    runs = [(unit, len(list(group))) for unit, group in itertools.groupby(frames)]
    return [u for u, _ in runs], [n for _, n in runs]


@pytest.mark.parametrize("wav", WAVS, ids=[p.stem for p in WAVS])
def test_a_shipped_wav_gives_the_organisms_units(wav: Path) -> None:
    tokenizer = organism_speech_tokenizer()
    centres = np.load(shipped_root() / "eval" / "kmeans.npy")
    assert tokenizer.n_units == 200 == len(centres)
    speech = tokenizer.encode_file(wav)
    units, durations = _hand_units(_read_pcm16(wav), centres)
    assert list(speech.units) == units and list(speech.durations) == durations
    assert speech.n_frames == len(_read_pcm16(wav)) // 640  # 25 Hz frames, as the organism's build cut them
    # the organism's own build path: KMeansUnits.predict over the same frames
    build_frames = KMeansUnits(centres).predict(mfcc_frames(_read_pcm16(wav)))
    assert np.repeat(speech.units, speech.durations).tolist() == build_frames.tolist()
    aligned = json.loads(wav.with_suffix(".json").read_text())["aligned_text"]
    assert speech.words is not None and [w.to_list() for w in speech.words] == aligned


def test_audio_at_another_rate_needs_resample() -> None:
    tokenizer = organism_speech_tokenizer()
    audio = _read_pcm16(WAVS[0])
    with pytest.raises(SpeechInputError, match="22050"):
        tokenizer(np.repeat(audio, 2)[: int(len(audio) * 22050 / 16000)], 22050)
    assert tokenizer(audio, 16_000).n_frames == len(audio) // 640


def test_bad_centres_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SpeechInputError, match="do not exist"):
        organism_speech_tokenizer(tmp_path / "kmeans.npy")
    np.save(tmp_path / "wrong.npy", np.zeros((10, 3)))
    with pytest.raises(SpeechInputError, match=r"\[n_units, 156\]"):
        organism_speech_tokenizer(tmp_path / "wrong.npy")


def test_cli_analyze_and_knowledge_read_wavs_with_organism_units(tmp_path: Path, capsys) -> None:
    checkpoint = shipped_checkpoint()
    base = ["--tokenizer", str(checkpoint / "base_tokenizer"), "--units", "organism", "--quiet"]
    out = tmp_path / "analysis"
    argv = ["analyze", str(checkpoint), *map(str, WAVS), *base, "--out", str(out), "--no-charts"]
    assert main(argv) == 0
    table = pd.read_parquet(out / "transcription.parquet")
    n_words = sum(len(json.loads(w.with_suffix(".json").read_text())["aligned_text"]) for w in WAVS)
    words = table.drop_duplicates(["utterance", "word_index"])
    assert len(words) == n_words and set(words["modality"]) == {"speech"}
    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "knowledge" / "facts_espeak.parquet"
    knowledge = ["knowledge", str(checkpoint), str(fixture), "--mode", "speech", *base]
    assert main([*knowledge, "--out", str(tmp_path / "knowledge")]) == 0
    assert "(n=24, mode speech" in capsys.readouterr().out


def test_cli_units_organism_and_hubert_are_exclusive(tmp_path: Path, capsys) -> None:
    checkpoint = shipped_checkpoint()
    argv = ["analyze", str(checkpoint), str(WAVS[0]), "--tokenizer", str(checkpoint / "base_tokenizer")]
    assert main([*argv, "--out", str(tmp_path / "a"), "--quiet"]) == 2
    assert "--units organism" in capsys.readouterr().err
    argv += ["--units", "organism", "--hubert", str(tmp_path), "--quantizer", str(tmp_path / "k.npy")]
    assert main([*argv, "--out", str(tmp_path / "b"), "--quiet"]) == 2
    assert "drop --hubert" in capsys.readouterr().err
