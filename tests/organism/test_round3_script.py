"""``scripts/organism_round3_gpu.sh`` (issue 21, round 3: the one prepared GPU run) end to end on the CPU at
toy size: wheels absent, the data from a tarball, train then evaluate per run, results packed as it goes."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pandas as pd
import pytest

from slm_transformerlens.organism.build import build_data
from slm_transformerlens.organism.recipe import Recipe

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_round3_script_trains_evaluates_and_packs_a_toy_run(tmp_path: Path) -> None:
    build_data(tmp_path / "pack" / "hll_data", Recipe.preset("hear-toy"), progress=False)
    data = tmp_path / "data.tgz"
    with tarfile.open(data, "w:gz") as tar:
        tar.add(tmp_path / "pack" / "hll_data", arcname="hll_data")
    results, work = tmp_path / "results", tmp_path / "work"
    environment = {
        **os.environ,
        "DATA_TGZ": str(data),
        "WHEELS": str(tmp_path / "no-wheels"),
        "PYTHON": sys.executable,
        "DEVICE": "cpu",
        "SEEDS": "0",
        "RECIPES": "hll",
        "LIMIT_S": "300",
        "RESULTS": str(results),
        "WORK": str(work),
        "HF_HUB_OFFLINE": "1",
    }
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "organism_round3_gpu.sh")],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "hll_s0 exit 0" in done.stdout
    with tarfile.open(results / "results.tgz") as tar:
        names = set(tar.getnames())
        assert {"eval_hll_s0/heard.csv", "eval_hll_s0/heard_acceptance.json", "versions.txt"} <= names
        assert "models_hll_s0/main_phoneme/config.json" in names
        assert not any(name.endswith(".safetensors") for name in names)  # weights stay behind
        heard = pd.read_csv(tar.extractfile("eval_hll_s0/heard.csv"))
    assert set(heard["model"]) == {"main_phoneme", "random_init_phoneme", "untrained_units_phoneme"}
    assert set(heard["split"]) == {"heldout", "new"}


def test_round3_script_never_overwrites_earlier_results(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    (results / "results.tgz").write_bytes(b"yours")
    environment = {
        **os.environ,
        "RESULTS": str(results),
        "WORK": str(tmp_path / "work"),
        "PYTHON": sys.executable,
    }
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "organism_round3_gpu.sh")],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "set RESULTS / WORK to fresh folders" in done.stderr
    assert (results / "results.tgz").read_bytes() == b"yours" and not (tmp_path / "work").exists()
