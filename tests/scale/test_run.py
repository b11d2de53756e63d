"""Streamed, resumable, sharded ``slm-lens analyze``: parts, manifest, SIGINT + --resume, bad items, torchrun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from slm_transformerlens.apps.run import RunError, claim_output_folder, shard
from slm_transformerlens.cli import main
from slm_transformerlens.errors import OutputError

from .conftest import write_unit_files

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_unit_files(tmp_path_factory.mktemp("data") / "units", 24, seed=7)[0].parent


def analyze(checkpoint: Path, inputs: Path, out: Path, *extra: str) -> list[str]:
    return ["analyze", str(checkpoint), str(inputs), "--out", str(out), "--no-charts", "--quiet", *extra]


def final_table(out: Path) -> pd.DataFrame:
    table = pd.read_parquet(out / "transcription.parquet")
    keys = ["utterance", "word_index", "layer", "site", "view"]
    return table.sort_values(keys, kind="stable").reset_index(drop=True)


def logged_items(out: Path) -> list[str]:
    lines = [
        line for log in (out / "parts").glob("done-rank*.jsonl") for line in log.read_text().splitlines()
    ]
    return [item for line in lines for item in json.loads(line)["items"]]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def reference(spiritlm_checkpoint, data, tmp_path_factory) -> pd.DataFrame:
    """One uninterrupted single-process run."""
    out = tmp_path_factory.mktemp("reference") / "out"
    assert main(analyze(spiritlm_checkpoint, data, out, "--part-size", "2")) == 0
    assert json.loads((out / "manifest.json").read_text())["part_size"] == 2
    assert sorted(logged_items(out)) == sorted(str(p) for p in data.iterdir())
    return final_table(out)


def test_shards_are_contiguous_and_cover_every_item_once() -> None:
    for n, world in ((10, 3), (2, 4), (0, 2), (7, 1)):
        shards = [shard(n, rank, world) for rank in range(world)]
        assert [i for s in shards for i in s] == list(range(n))
        assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_output_folder_is_checked_before_compute(tmp_path) -> None:
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="did not write"):
        claim_output_folder(tmp_path / "other", overwrite=True)
    assert (tmp_path / "other" / "notes.txt").exists()  # never cleared
    with pytest.raises(RunError, match="nothing to resume"):
        claim_output_folder(tmp_path / "new", resume=True)
    with pytest.raises(RunError, match="pass one of them"):
        claim_output_folder(tmp_path / "new", resume=True, overwrite=True)


def test_second_run_needs_overwrite_which_clears_the_runs_stale_files(
    spiritlm_checkpoint, data, reference, tmp_path, capsys
) -> None:
    out = tmp_path / "out"
    with_charts = analyze(spiritlm_checkpoint, data, out, "--no-png")
    with_charts.remove("--no-charts")
    assert main(with_charts) == 0
    assert (out / "modality_mass.html").is_file()  # charts this time
    assert main(analyze(spiritlm_checkpoint, data, out)) == 2
    assert "holds another run" in capsys.readouterr().err
    assert main(analyze(spiritlm_checkpoint, data, out, "--overwrite")) == 0
    assert not (out / "modality_mass.html").exists()  # the first run's chart: removed
    pd.testing.assert_frame_equal(final_table(out).drop(columns="item"), reference.drop(columns="item"))
    # other settings are refused on resume, naming what changed
    assert main(analyze(spiritlm_checkpoint, data, out, "--resume", "--positions", "first")) == 2
    assert "positions: 'last' then, 'first' now" in capsys.readouterr().err


def test_bad_items_are_named_and_never_lose_the_rest(spiritlm_checkpoint, tmp_path, capsys) -> None:
    inputs = write_unit_files(tmp_path / "units", 6, seed=3)[0].parent
    (inputs / "utt002.json").write_text("{units: broken")
    (inputs / "utt004.json").write_text(
        json.dumps({"units": [1, 2, 99999], "aligned_text": [[" a", 0, 0.1]]})
    )
    out = tmp_path / "out"
    assert main(analyze(spiritlm_checkpoint, inputs, out, "--part-size", "2")) == 2
    err = capsys.readouterr().err
    assert "utt002.json" in err and "--resume" in err and "--on-error skip" in err
    assert len(logged_items(out)) == 2  # the first part is kept
    assert (
        main(analyze(spiritlm_checkpoint, inputs, out, "--part-size", "2", "--resume", "--on-error", "skip"))
        == 0
    )
    err = capsys.readouterr().err
    assert "2 item(s) could not be analysed" in err
    failed = pd.read_csv(out / "failed_items.csv")
    assert sorted(Path(i).name for i in failed["id"]) == ["utt002.json", "utt004.json"]
    assert "out of range" in " ".join(failed["error"])
    table = final_table(out)
    assert sorted(Path(i).name for i in table["item"].unique()) == [f"utt00{i}.json" for i in (0, 1, 3, 5)]
    assert "2 item(s) could not be analysed" in (out / "report.md").read_text()


@pytest.mark.slow
def test_sigint_then_resume_gives_the_uninterrupted_table(
    spiritlm_checkpoint, data, reference, tmp_path
) -> None:
    out = tmp_path / "out"
    argv = analyze(spiritlm_checkpoint, data, out, "--part-size", "2", "--batch-tokens", "64")
    # The child takes SIGINT as Python does by default (a shell that starts a job in the background
    # without job control, as `cmd &` in a script, makes it ignored, and a child inherits that), and
    # pauses 0.5 s after each written part, so that the SIGINT sent once 4 items are logged lands mid-run.
    paced = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "import slm_transformerlens.apps.run as run\n"
        "write = run._write_part\n"
        "run._write_part = lambda *a, **k: (write(*a, **k), time.sleep(0.5))[0]\n"
        "from slm_transformerlens.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", paced, *argv],
        cwd=ROOT,
        env=env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while len(logged_items(out) if (out / "parts").is_dir() else []) < 4 and time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "interrupted" in err and "--resume" in err
    finished = logged_items(out)
    assert 4 <= len(finished) < 24 and not (out / "transcription.parquet").exists()
    assert main(analyze(spiritlm_checkpoint, data, out, "--part-size", "2", "--resume")) == 0
    items = logged_items(out)
    assert len(items) == len(set(items)) == 24  # no item twice
    pd.testing.assert_frame_equal(final_table(out), reference)


@pytest.mark.slow
def test_two_gloo_processes_merge_to_the_one_process_table(
    spiritlm_checkpoint, data, reference, tmp_path
) -> None:
    out = tmp_path / "out"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    argv = analyze(spiritlm_checkpoint, data, out, "--part-size", "2")
    # each rank runs the CLI, then says whether the run left its process group alive: a rank that exits
    # with it alive can abort in gloo's teardown (SIGABRT) after its work is done, as happened in CI
    entry = tmp_path / "entry.py"
    entry.write_text(
        "import sys\n"
        "import torch.distributed as dist\n"
        "from slm_transformerlens.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "print(f'process group alive after the run: {dist.is_initialized()}', flush=True)\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run(
        [*launcher, str(entry), *argv],
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("report:") == 1  # rank 0 reports
    assert result.stdout.count("process group alive after the run: False") == 2
    logs = sorted(p.name for p in (out / "parts").glob("done-rank*.jsonl"))
    assert logs == ["done-rank0.jsonl", "done-rank1.jsonl"]
    items = logged_items(out)
    assert len(items) == len(set(items)) == 24
    pd.testing.assert_frame_equal(final_table(out), reference)


@pytest.mark.slow
def test_rank_0_progress_counts_other_ranks_promptly_and_while_it_waits(
    spiritlm_checkpoint, tmp_path
) -> None:
    """The gates of ``progress_worker`` order the ranks; the old bar (counted only when rank 0 finished a
    part) never reported before rank 0's first part nor the count between rank 0's end and rank 1's."""
    data = write_unit_files(tmp_path / "units", 12, seed=5)[0].parent
    record = tmp_path / "progress.json"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    worker = ["-m", "tests.scale.progress_worker", str(spiritlm_checkpoint), str(data), str(tmp_path / "out")]
    result = subprocess.run(
        [*launcher, *worker, str(record)], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    facts = json.loads(record.read_text())
    calls = facts["calls"]
    done = [int(d) for d, _, _ in calls]
    assert done == sorted(done) and done[-1] == calls[-1][1] == 12  # the final count is the total
    # rank 1's items, before rank 0's first part
    assert any(d > 0 and t < facts["released"] for d, _, t in calls)
    assert 12 - facts["part_size"] in done  # rank 1's second-to-last part, logged while rank 0 waited
