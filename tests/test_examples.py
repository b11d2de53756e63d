"""The scripts in examples/ run on the shipped main organism, their default (so they cannot rot unnoticed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

pytestmark = pytest.mark.slow


def run_example(name: str, cache: Path | None, cwd: Path, *args: str) -> str:
    root = str(EXAMPLES.parent)  # this checkout's package, whatever the interpreter has installed
    pythonpath = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    env = {
        **os.environ,
        "SLM_LENS_CACHE": str(cache or cwd / "no-demo-cache"),  # the organism needs no cache
        "HF_HUB_OFFLINE": "1",
        "TQDM_DISABLE": "1",
        "PYTHONPATH": pythonpath,
    }
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_logit_lens_on_speech(tmp_path: Path) -> None:
    argv = ["--sentences", "16", "--out", str(tmp_path / "o")]
    out = run_example("logit_lens_on_speech.py", None, tmp_path, *argv)
    assert "capital" in out and "transcription" in out and "next_word" in out
    # every rate beside its chance level (the shuffled control, also for the any-position read-out), and
    # no pooled read-out beside a single-guess frequency prior
    assert "positions='max'" in out and "positions='any'" in out
    assert "chance (shuffled control)" in out and "no shuffled control" not in out
    assert "frequency prior" not in out and "prior_rate" not in out
    assert "transcription peaks at layer" in out and "the interval" in out
    assert (tmp_path / "o" / "heatmap.html").stat().st_size > 100_000
    assert not (tmp_path / "no-demo-cache").exists()  # SmolLM2 was not built


@pytest.mark.realmodel
def test_logit_lens_on_speech_smollm2(demo_cache: Path, tmp_path: Path) -> None:
    argv = ["--model", "smollm2", "--positions", "max", "--out", str(tmp_path / "o")]
    out = run_example("logit_lens_on_speech.py", demo_cache, tmp_path, *argv)
    assert "capital" in out and "shuffled control" in out
    assert (tmp_path / "o" / "heatmap.html").is_file()


def test_tuned_lens(tmp_path: Path) -> None:
    argv = ["--steps", "3", "--sentences", "16", "--out", str(tmp_path / "lens")]
    out = run_example("tuned_lens.py", None, tmp_path, *argv)
    assert "tuned" in out and "logit" in out and "top_token" in out and "capital" in out
    assert sorted(p.name for p in (tmp_path / "lens").iterdir()) == ["config.json", "params.safetensors"]


def test_word_aligned_patching(tmp_path: Path) -> None:
    out = run_example("word_aligned_patching.py", None, tmp_path, "--layers", "0", "3", "6")
    assert "attribution" in out and "activation" in out and "lens6_paris" in out
    assert (tmp_path / "out" / "examples" / "patching.html").is_file()
