"""The scripts in examples/ run on the embedded default (so they cannot rot unnoticed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

pytestmark = [pytest.mark.slow, pytest.mark.realmodel]


def run_example(name: str, cache: Path, cwd: Path, *args: str) -> str:
    root = str(EXAMPLES.parent)  # this checkout's package, whatever the interpreter has installed
    pythonpath = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    env = {
        **os.environ,
        "SLM_LENS_CACHE": str(cache),
        "HF_HUB_OFFLINE": "1",
        "TQDM_DISABLE": "1",
        "PYTHONPATH": pythonpath,
    }
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_logit_lens_on_speech(demo_cache: Path, tmp_path: Path) -> None:
    out = run_example("logit_lens_on_speech.py", demo_cache, tmp_path, "--out", str(tmp_path / "o"))
    assert "capital" in out and "transcription" in out and "next_word" in out
    assert (tmp_path / "o" / "heatmap.html").stat().st_size > 100_000


def test_tuned_lens(demo_cache: Path, tmp_path: Path) -> None:
    out = run_example("tuned_lens.py", demo_cache, tmp_path, "--steps", "3", "--out", str(tmp_path / "lens"))
    assert "tuned" in out and "logit" in out and "top_token" in out
    assert sorted(p.name for p in (tmp_path / "lens").iterdir()) == ["config.json", "params.safetensors"]


def test_word_aligned_patching(demo_cache: Path, tmp_path: Path) -> None:
    out = run_example("word_aligned_patching.py", demo_cache, tmp_path, "--layers", "0", "10", "20")
    assert "attribution" in out and "activation" in out
    assert (tmp_path / "out" / "examples" / "patching.html").is_file()
