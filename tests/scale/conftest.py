"""Fixtures for the scaling tests: folders of small unit files of mixed lengths."""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = ("red", "hood", "the", "girl", "wolf", "riding", "forest", "grandmother", "basket", "door")


def write_unit_files(directory: Path, n: int, *, seed: int = 0, max_words: int = 6) -> list[Path]:
    """``n`` unit files (``utt000.json``...) with 1..``max_words`` words of 1-4 units each, seeded."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        units, durations, aligned, frame = [], [], [], 0
        for _ in range(rng.randint(1, max_words)):
            k = rng.randint(1, 4)
            units += [rng.randrange(0, 90) for _ in range(k)]
            durations += [2] * k
            aligned.append(
                [" " + rng.choice(WORDS), round(frame * 0.04, 2), round((frame + 2 * k) * 0.04, 2)]
            )
            frame += 2 * k
        path = directory / f"utt{i:03d}.json"
        path.write_text(json.dumps({"units": units, "durations": durations, "aligned_text": aligned}))
        paths.append(path)
    return paths


def speech_utterances(model, paths: list[Path]) -> list:
    """The unit files as all-speech utterances (as ``slm-lens analyze`` reads them)."""
    from slm_transformerlens.speech.dataset import load_speech_dataset

    return load_speech_dataset(paths, model.speech_vocab, progress=False)
