"""Seeded folders of small unit files (``units``, ``durations``, ``aligned_text``) for tests and benchmarks."""

from __future__ import annotations

import json
import random
from pathlib import Path

__all__ = ["UNIT_FILE_WORDS", "write_unit_files"]

#: The words of :func:`write_unit_files`.
UNIT_FILE_WORDS = ("red", "hood", "the", "girl", "wolf", "riding", "forest", "grandmother", "basket", "door")


def write_unit_files(directory: str | Path, n: int, *, seed: int = 0, max_words: int = 6) -> list[Path]:
    """``n`` unit files (``utt000.json``...) of 1..``max_words`` spoken words of 1-4 units (2 frames each)
    with units below 90, seeded; read them with ``slm-lens analyze`` or ``load_speech_dataset``."""
    rng = random.Random(seed)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        units: list[int] = []
        durations: list[int] = []
        aligned: list[list[object]] = []
        frame = 0
        for _ in range(rng.randint(1, max_words)):
            k = rng.randint(1, 4)
            units += [rng.randrange(0, 90) for _ in range(k)]
            durations += [2] * k
            word = " " + rng.choice(UNIT_FILE_WORDS)
            aligned.append([word, round(frame * 0.04, 2), round((frame + 2 * k) * 0.04, 2)])
            frame += 2 * k
        path = directory / f"utt{i:03d}.json"
        path.write_text(json.dumps({"units": units, "durations": durations, "aligned_text": aligned}))
        paths.append(path)
    return paths
