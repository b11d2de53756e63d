"""Report writers never overwrite a file the package did not write (issue 18, "Data loss").

A folder holding the user's ``report.md`` / ``notes.csv`` / ``figure.png``: every writer that would
overwrite one of them refuses before writing anything, and leaves every byte as it was; the same command
run again into its own folder succeeds; files not in a writer's way are never touched.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from slm_transformerlens import outputs as output
from slm_transformerlens.apps.compare import compare_models
from slm_transformerlens.apps.report import write_lens_report
from slm_transformerlens.errors import OutputError
from slm_transformerlens.lens import LensProtocol
from slm_transformerlens.outputs import RECORD, claim_output_files, output_path
from slm_transformerlens.speech.inputs import Speech, Text

WORDS = ["the", "little", "girl", "went", "to", "the", "forest"]
USER = {"report.md": b"my own report\n", "notes.csv": b"a,b\n1,2\n", "figure.png": b"\x89PNG my figure"}
QUICK = LensProtocol(controls=False, swapped_audio=False, n_boot=50)


def _user_folder(path: Path, names: tuple[str, ...] = tuple(USER)) -> Path:
    path.mkdir(parents=True)
    for name in names:
        (path / name).write_bytes(USER[name])
    return path


def _contents(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}


def _utterances(model, n: int = 2) -> list:
    rng = np.random.default_rng(0)
    words = [(w, 0.12 * i, 0.12 * (i + 1)) for i, w in enumerate(WORDS)]
    units = [rng.integers(0, model.speech_vocab.n_units, 3 * len(WORDS)).tolist() for _ in range(n)]
    return [[Text("once upon a time"), Speech(units=u, words=words)] for u in units]


def test_claim_refuses_a_users_file_and_records_its_own(tmp_path: Path, monkeypatch) -> None:
    out = _user_folder(tmp_path / "out")
    with pytest.raises(
        OutputError, match=r"report\.md, which slm-lens did not write.*out_dir= another output folder"
    ):
        claim_output_files(out, ["summary.csv", "report.md"])
    with pytest.raises(OutputError, match=r"figure\.png"):
        claim_output_files(out, ["*.png"])  # a pattern checks every file it matches
    assert _contents(out) == USER  # nothing written, not even the record
    path = output_path(out, "summary.csv")
    path.write_text("ours")
    assert output_path(out, "summary.csv") == path  # on the record: ours to overwrite
    assert json.loads((out / RECORD).read_text())["written"] == ["summary.csv"]
    path.unlink()
    monkeypatch.setattr(output, "_CLAIMED", set())  # a later command (another process)
    (out / "peaks.csv").write_text("ours too")  # a name on the record whose file is gone is dropped...
    claim_output_files(out, ["peaks.csv"], known=["peaks.csv"])
    assert json.loads((out / RECORD).read_text())["written"] == ["peaks.csv"]
    (out / "summary.csv").write_text("the user's, later")  # ...so a file the user puts there later is theirs
    with pytest.raises(OutputError, match=r"summary\.csv"):
        claim_output_files(out, ["summary.csv"])
    (out / RECORD).write_text("not a record")
    with pytest.raises(OutputError, match="not a record"):
        claim_output_files(out, ["x.csv"])


def _recorded(out: Path) -> set[str]:
    return set(json.loads((out / RECORD).read_text())["written"])


def test_write_lens_report_keeps_the_users_files(spiritlm_model, tmp_path: Path, monkeypatch) -> None:
    utterances = _utterances(spiritlm_model)
    kwargs = {"charts": False, "progress": False, "protocol": QUICK}
    refused = _user_folder(tmp_path / "refused")
    with pytest.raises(OutputError, match=r"report\.md, which slm-lens did not write"):
        write_lens_report(spiritlm_model, utterances, refused, **kwargs)
    assert _contents(refused) == USER
    # files not in its way are kept, and a second run into its own folder overwrites its own files
    shared = _user_folder(tmp_path / "shared", ("notes.csv", "figure.png"))
    first = write_lens_report(spiritlm_model, utterances, shared, **kwargs)
    assert _recorded(shared) == {p.name for p in first.files.values()}
    monkeypatch.setattr(output, "_CLAIMED", set())  # the second run: another process
    (shared / "report.md").write_text("stale")
    second = write_lens_report(spiritlm_model, utterances, shared, **kwargs)
    assert second.report.read_text() != "stale" and second.files.keys() == first.files.keys()
    after = _contents(shared)
    assert {name: after[name] for name in ("notes.csv", "figure.png")} == {
        name: USER[name] for name in ("notes.csv", "figure.png")
    }


def test_compare_refuses_before_any_model_loads(spiritlm_checkpoint, tmp_path: Path, monkeypatch) -> None:
    def loader(path):
        raise AssertionError("the output folder is checked before a model loads")

    refused = _user_folder(tmp_path / "refused")
    with pytest.raises(OutputError, match=r"report\.md"):
        compare_models([spiritlm_checkpoint], _utterances, refused, loader=loader, progress=False)
    assert _contents(refused) == USER
    shared = _user_folder(tmp_path / "shared", ("notes.csv", "figure.png"))
    for _ in range(2):  # the second run (another process) overwrites its own files
        monkeypatch.setattr(output, "_CLAIMED", set())
        result = compare_models(
            [spiritlm_checkpoint], _utterances, shared, protocol=QUICK, charts=False, progress=False
        )
        assert _recorded(shared) == {p.name for p in result.files.values()}
    assert {"report.md", "summary.csv", "peaks.csv"} <= set(_contents(shared))
    assert "Model comparison" in result.report.read_text()
    after = _contents(shared)
    assert after["notes.csv"] == USER["notes.csv"] and after["figure.png"] == USER["figure.png"]


@pytest.mark.parametrize("name", ["report.md", "organism_results.md", "organism_curves.csv"])
def test_organism_demo_refuses_before_loading(name: str, tmp_path: Path, monkeypatch) -> None:
    import slm_transformerlens.organism.shipped as shipped
    from slm_transformerlens.apps.organism_demo import run_organism_demo

    def load_organism(*args, **kwargs):
        raise AssertionError("the output folder is checked before the organism loads")

    monkeypatch.setattr(shipped, "load_organism", load_organism)
    out = tmp_path / "demo"
    out.mkdir()
    (out / name).write_text("mine")
    with pytest.raises(OutputError, match=name.replace(".", r"\.")):
        run_organism_demo(out, progress=False)
    assert _contents(out) == {name: b"mine"}


def test_organism_evaluate_refuses_a_users_file(tmp_path: Path, monkeypatch) -> None:
    import slm_transformerlens.organism.inputs as inputs
    from slm_transformerlens.organism.evaluate import evaluate_all

    monkeypatch.setattr(inputs, "check_evaluation_inputs", lambda *args: None)
    out = _user_folder(tmp_path / "eval", ("notes.csv",))
    (out / "curves.csv").write_text("my curves")
    with pytest.raises(OutputError, match=r"curves\.csv"):
        evaluate_all(tmp_path / "no-models", tmp_path / "no-data", out)
    assert _contents(out) == {"notes.csv": USER["notes.csv"], "curves.csv": b"my curves"}


def test_organism_demo_runs_again_into_its_own_folder(tmp_path: Path, monkeypatch) -> None:
    from slm_transformerlens.apps.organism_demo import run_organism_demo

    out = _user_folder(tmp_path / "demo", ("notes.csv", "figure.png"))
    for _ in range(2):
        monkeypatch.setattr(output, "_CLAIMED", set())
        result = run_organism_demo(out, charts=False, progress=False, n_sentences=2)
        assert {p.name for p in result.files.values()} <= _recorded(out)
    after = _contents(out)
    assert after["notes.csv"] == USER["notes.csv"] and after["figure.png"] == USER["figure.png"]
