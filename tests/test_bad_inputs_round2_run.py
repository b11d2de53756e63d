"""Nothing lost, nothing silently wrong, round two (issue 18): ``slm-lens analyze`` runs and bad inputs.

First the numbers: ``--overwrite`` never removes a file its run did not write (file by file, contents
compared), ``--resume`` is refused after the checkpoint's weights were replaced in place, and resuming
retries failed items and re-analyses lost parts (tables compared with an uninterrupted run). Then one table
of bad inputs: each must raise one package error naming the problem and the fix, never the raw error.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from slm_transformerlens.apps.run import RunError, checkpoint_fingerprint, claim_output_folder
from slm_transformerlens.builders import write_unit_files
from slm_transformerlens.cli import main
from slm_transformerlens.errors import OutputError, SLMError

SPIRIT = "spiritlm-base-bin"


def analyze(checkpoint: Path, inputs: Any, out: Path, *extra: str) -> list[str]:
    """``slm-lens analyze`` argv (no charts: fast)."""
    paths = [str(p) for p in inputs] if isinstance(inputs, list) else [str(inputs)]
    return ["analyze", str(checkpoint), *paths, "--out", str(out), "--no-charts", "--quiet", *extra]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def table_of(out: Path) -> pd.DataFrame:
    table = pd.read_parquet(out / "transcription.parquet").drop(columns="item")
    keys = ["utterance", "word_index", "layer", "site", "view"]
    return table.sort_values(keys, kind="stable").reset_index(drop=True)


@pytest.fixture(scope="module")
def units(tmp_path_factory) -> Path:
    return write_unit_files(tmp_path_factory.mktemp("round2") / "units", 4, seed=11)[0].parent


@pytest.fixture(scope="module")
def spirit(checkpoint_factory) -> Path:
    return checkpoint_factory(SPIRIT)[0]


@pytest.fixture(scope="module")
def reference(spirit, units, tmp_path_factory) -> pd.DataFrame:
    """One uninterrupted run's transcription table."""
    out = tmp_path_factory.mktemp("reference") / "out"
    assert main(analyze(spirit, units, out, "--part-size", "2")) == 0
    return table_of(out)


# ---------------------------------------------------------------- --overwrite never loses a user's file
def test_a_folder_of_user_files_is_never_used_nor_cleared(spirit, units, tmp_path, capsys) -> None:
    out = tmp_path / "mine"
    (out / "data").mkdir(parents=True)
    (out / "report.md").write_text("my report")
    (out / "notes.txt").write_text("my notes")
    (out / "data" / "x.csv").write_text("a,b\n1,2\n")
    before = snapshot(out)
    assert main(analyze(spirit, units, out)) == 2
    first = capsys.readouterr().err
    assert "did not write" in first and "--overwrite" not in first  # the first message does not invite it
    assert main(analyze(spirit, units, out, "--overwrite")) == 2
    assert "did not write" in capsys.readouterr().err
    assert snapshot(out) == before  # every file, byte for byte


def test_overwrite_removes_only_what_the_run_wrote(spirit, units, reference, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(analyze(spirit, units, out, "--part-size", "2")) == 0
    written = json.loads((out / "manifest.json").read_text())["written"]
    assert {"report.md", "summary.csv", "transcription.parquet", "failed_items.csv"} <= set(written)
    (out / "analysis_notes.md").write_text("what I saw")
    (out / "figs").mkdir()
    (out / "figs" / "f.png").write_bytes(b"\x89PNG my figure")
    mine = {name: data for name, data in snapshot(out).items() if name in ("analysis_notes.md", "figs/f.png")}
    assert main(analyze(spirit, units, out, "--part-size", "2")) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and "analysis_notes.md" in err  # says the user's files would be kept
    assert main(analyze(spirit, units, out, "--part-size", "2", "--overwrite")) == 0
    after = snapshot(out)
    assert {name: after.get(name) for name in mine} == mine  # kept, byte for byte
    pd.testing.assert_frame_equal(table_of(out), reference)
    # a file the run did not write, under a name its report writes, is refused (it would be overwritten)
    (out / "peaks.csv").unlink()
    (out / "peaks.csv").write_text("my peaks")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["written"].remove("peaks.csv")
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(OutputError, match=r"peaks\.csv, which that run did not write"):
        claim_output_folder(out, overwrite=True)
    assert (out / "peaks.csv").read_text() == "my peaks"


def test_a_manifest_that_is_not_a_runs_is_never_trusted(tmp_path) -> None:
    (tmp_path / "manifest.json").write_text('{"name": "another tool"}')
    (tmp_path / "report.md").write_text("mine")
    with pytest.raises(OutputError, match="not the manifest of an slm-lens run"):
        claim_output_folder(tmp_path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "report.md"]


# ---------------------------------------------------------------- --resume and the checkpoint's contents
def test_resume_is_refused_after_the_weights_changed_in_place(spirit, units, tmp_path, capsys) -> None:
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(spirit, checkpoint)
    out = tmp_path / "out"
    assert main(analyze(checkpoint, units, out, "--part-size", "2")) == 0
    assert main(analyze(checkpoint, units, out, "--part-size", "2", "--resume")) == 0  # unchanged: accepted
    weights = checkpoint / "pytorch_model.bin"
    state = torch.load(weights, weights_only=True)
    name = next(k for k, v in state.items() if v.is_floating_point() and v.ndim == 2)
    state[name] = state[name] * 2
    size = weights.stat().st_size
    before = checkpoint_fingerprint(checkpoint)
    torch.save(state, weights)
    assert weights.stat().st_size == size  # same names, same sizes: only the contents differ
    assert checkpoint_fingerprint(checkpoint) != before
    assert main(analyze(checkpoint, units, out, "--part-size", "2", "--resume")) == 2
    assert "checkpoint_fingerprint" in capsys.readouterr().err


def test_resume_retries_fixed_items_and_reanalyses_lost_parts(
    spirit, units, reference, tmp_path, capsys
) -> None:
    inputs = tmp_path / "units"
    shutil.copytree(units, inputs)
    good = (inputs / "utt002.json").read_text()
    (inputs / "utt002.json").write_text("{units: broken")
    out = tmp_path / "out"
    assert main(analyze(spirit, inputs, out, "--part-size", "2", "--on-error", "skip")) == 0
    assert "1 item(s) could not be analysed" in capsys.readouterr().err
    (inputs / "utt002.json").write_text(good)  # fixed: --resume analyses it again
    assert main(analyze(spirit, inputs, out, "--part-size", "2", "--resume")) == 0
    assert pd.read_csv(out / "failed_items.csv").empty
    pd.testing.assert_frame_equal(table_of(out), reference)
    logs = [json.loads(line) for line in (out / "parts" / "done-rank0.jsonl").read_text().splitlines()]
    # a part file truncated, then one deleted: --resume analyses their items again
    for damage in ("truncate", "delete"):
        latest = {r["part"]: r for r in sorted(logs, key=lambda r: r.get("attempt", 0))}
        part = out / latest[0]["file"]
        if damage == "truncate":
            part.write_bytes(part.read_bytes()[:100])
        else:
            part.unlink()
        assert main(analyze(spirit, inputs, out, "--part-size", "2", "--resume")) == 0
        pd.testing.assert_frame_equal(table_of(out), reference)
        logs = [json.loads(line) for line in (out / "parts" / "done-rank0.jsonl").read_text().splitlines()]


def test_relative_paths_resume_the_same_run(spirit, units, tmp_path, monkeypatch) -> None:
    out = tmp_path / "out"
    assert main(analyze(spirit, units, out, "--part-size", "2")) == 0
    monkeypatch.chdir(units.parent)
    assert main(analyze(spirit, Path(units.name), out, "--part-size", "2", "--resume")) == 0


def test_a_failed_device_map_leaves_nothing_that_blocks_the_corrected_command(
    spirit, units, tmp_path, monkeypatch, capsys
) -> None:
    import slm_transformerlens as slt

    out = tmp_path / "out"
    real_load = slt.load

    def refuse(*args: Any, **kwargs: Any) -> Any:  # a map naming no module: found only once loading
        from slm_transformerlens.checkpoints.placement import DevicePlacementError

        raise DevicePlacementError("device_map key 'model.nothing' names no module")

    monkeypatch.setattr(slt, "load", refuse)
    assert main(analyze(spirit, units, out)) == 2
    assert "names no module" in capsys.readouterr().err
    monkeypatch.setattr(slt, "load", real_load)
    assert main(analyze(spirit, units, out)) == 0  # no --overwrite / --resume needed


# ---------------------------------------------------------------- the table of bad inputs
@dataclass
class Context:
    """What a case may use: a scratch folder, the tiny SpiritLM checkpoint, unit files and the loaded model
    (shared: cases never change it)."""

    tmp: Path
    spirit: Path
    units: Path
    model: Any


@dataclass
class Case:
    """One bad input: what runs, the package error, a fragment of its message, text that must not appear."""

    name: str
    run: Callable[[Context], Any]
    error: type[BaseException]
    fragment: str
    absent: str = "Traceback"


def _cli(argv: Callable[[Context], list[str]]) -> Callable[[Context], Any]:
    """Run ``slm-lens`` and raise its one-line error as a ``CliError`` (exit 2 expected)."""

    def run(ctx: Context) -> Any:
        import contextlib
        import io

        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            status = main(argv(ctx))
        if status != 2:
            raise AssertionError(f"exit status {status}, stderr {err.getvalue()!r}")
        raise CliError(err.getvalue())

    return run


class CliError(Exception):
    """The command line's one-line error (its stderr)."""


def _truncated_part_merge(ctx: Context) -> Any:
    from slm_transformerlens.apps import run as run_module

    out = ctx.tmp / "out"
    (out / "parts").mkdir(parents=True)
    (out / "parts" / "part-00000.parquet").write_bytes(b"PAR1 truncated")
    record = {"part": 0, "items": ["a"], "failed": [], "file": "parts/part-00000.parquet"}
    (out / "parts" / "done-rank0.jsonl").write_text(json.dumps(record) + "\n")
    return run_module._merge(out, [0])


def _deleted_part_merge(ctx: Context) -> Any:
    from slm_transformerlens.apps import run as run_module

    out = ctx.tmp / "out"
    (out / "parts").mkdir(parents=True)
    record = {"part": 0, "items": ["a"], "failed": [], "file": "parts/part-00000.parquet"}
    (out / "parts" / "done-rank0.jsonl").write_text(json.dumps(record) + "\n")
    return run_module._merge(out, [0])


def _lens_folder(ctx: Context, name: str = "lens", **kwargs: Any) -> Path:
    """A tuned lens of the tiny SpiritLM model saved in ``ctx.tmp / name``."""
    from slm_transformerlens.lens import TunedLens

    return TunedLens(ctx.model, **kwargs).save(
        ctx.tmp / name, format=kwargs.pop("format", "slm_transformerlens")
    )


def _published_folder(ctx: Context, name: str = "published", **kwargs: Any) -> Path:
    from slm_transformerlens.lens import TunedLens

    return TunedLens(ctx.model, **kwargs).save(ctx.tmp / name, format="tuned-lens")


def _truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


class _Payload:
    """A pickle that would call a function when loaded (what a malicious params.pt holds)."""

    def __reduce__(self) -> Any:
        import os

        return (os.getcwd, ())


def _malicious_pt(ctx: Context) -> Any:
    from slm_transformerlens.lens import TunedLens

    folder = _published_folder(ctx)
    torch.save({"0.weight": _Payload()}, folder / "params.pt")
    return TunedLens.from_tuned_lens(folder, ctx.model)


def _truncated_safetensors(ctx: Context) -> Any:
    from slm_transformerlens.lens import TunedLens

    folder = _lens_folder(ctx)
    _truncate(folder / "params.safetensors")
    return TunedLens.load(folder, ctx.model)


def _truncated_pt(ctx: Context) -> Any:
    from slm_transformerlens.lens import TunedLens

    folder = _published_folder(ctx)
    _truncate(folder / "params.pt")
    return TunedLens.from_tuned_lens(folder, ctx.model)


def _other_lens_safetensors(ctx: Context) -> Any:
    from slm_transformerlens.lens import TunedLens

    folder, other = _lens_folder(ctx), _lens_folder(ctx, "other", include_mid=True)
    shutil.copy(other / "params.safetensors", folder / "params.safetensors")
    return TunedLens.load(folder, ctx.model)


def _other_lens_pt(ctx: Context) -> Any:
    from slm_transformerlens.lens import TunedLens

    folder, other = _published_folder(ctx), _published_folder(ctx, "other", bias=False)
    shutil.copy(other / "params.pt", folder / "params.pt")
    return TunedLens.from_tuned_lens(folder, ctx.model)


def _analyze_truncated_lens(ctx: Context) -> list[str]:
    folder = _lens_folder(ctx)
    _truncate(folder / "params.safetensors")
    return analyze(ctx.spirit, ctx.units, ctx.tmp / "o", "--tuned-lens", str(folder))


def _lens_metric_layer_15(ctx: Context) -> Any:
    from slm_transformerlens.patching import LensMetric

    return LensMetric(ctx.model, 15, tokens=5, position=0)


def _same_pairs(ctx: Context) -> Path:
    items = [
        {"id": f"f{i}", "prompt": "the sky is", "correct": w, "counterfactual": w}
        for i, w in enumerate(("blue", "green"))
    ]
    path = ctx.tmp / "facts.json"
    path.write_text(json.dumps(items))
    return path


def _knowledge_same_pairs(ctx: Context) -> Any:
    from slm_transformerlens.knowledge import knowledge_table, read_knowledge

    return knowledge_table(ctx.model, read_knowledge(_same_pairs(ctx)), mode="text")


CASES: list[Case] = [
    Case(
        "LensMetric layer 15 of a 3-layer model", _lens_metric_layer_15, SLMError, "has 3 layers", "KeyError"
    ),
    Case(
        "tuned-lens params.pt that unpickles code",
        _malicious_pt,
        SLMError,
        "never unpickled",
        "weights_only=False",
    ),
    Case(
        "truncated params.safetensors", _truncated_safetensors, SLMError, "cannot be read", "SafetensorError"
    ),
    Case("truncated params.pt", _truncated_pt, SLMError, "cannot be read", "PytorchStreamReader"),
    Case(
        "another lens's params.safetensors",
        _other_lens_safetensors,
        SLMError,
        "another lens's file",
        "size mismatch",
    ),
    Case(
        "another lens's params.pt", _other_lens_pt, SLMError, "does not hold the parameters", "size mismatch"
    ),
    Case(
        "analyze --tuned-lens with a truncated params.safetensors",
        _cli(_analyze_truncated_lens),
        CliError,
        "cannot be read",
        "SafetensorError",
    ),
    Case(
        "knowledge_table with every counterfactual equal to its correct answer",
        _knowledge_same_pairs,
        SLMError,
        "identical to its correct completion",
        "0.500",
    ),
    Case(
        "slm-lens knowledge with every counterfactual equal to its correct answer",
        _cli(
            lambda c: [
                "knowledge",
                str(c.spirit),
                str(_same_pairs(c)),
                "--mode",
                "text",
                "--quiet",
                "--out",
                str(c.tmp / "k"),
            ]
        ),
        CliError,
        "identical to its correct completion",
        "accuracy 0.500",
    ),
    Case(
        "test_prompt with a token tensor",
        lambda c: c.model.test_prompt(torch.tensor([1, 2, 3]), "x"),
        SLMError,
        "takes a string or Speech / Text segments",
        "ModuleNotFoundError",
    ),
    Case(
        "analyze --batch-tokens 0",
        _cli(lambda c: analyze(c.spirit, c.units, c.tmp / "o", "--batch-tokens", "0")),
        CliError,
        "--batch-tokens 0",
        "utt000",  # not blamed on the first input file
    ),
    Case(
        "analyze --batch-tokens -5 --on-error skip",
        _cli(lambda c: analyze(c.spirit, c.units, c.tmp / "o", "--batch-tokens", "-5", "--on-error", "skip")),
        CliError,
        "at least 1 token",
        "could not be analysed",  # not every file reported failed
    ),
    Case(
        "analyze with the same file twice",
        _cli(lambda c: analyze(c.spirit, [c.units / "utt001.json", c.units / "utt001.json"], c.tmp / "o")),
        CliError,
        "is given twice",
    ),
    Case(
        "analyze --n-devices 0",
        _cli(lambda c: analyze(c.spirit, c.units, c.tmp / "o", "--n-devices", "0")),
        CliError,
        "--n-devices 0: a split needs a whole number of GPUs >= 1",
        "needs 0 CUDA GPUs",
    ),
    Case(
        "analyze --device-map not a map",
        _cli(lambda c: analyze(c.spirit, c.units, c.tmp / "o", "--device-map", "{broken")),
        CliError,
        "neither one of",
    ),
    Case(
        "knowledge --columns not JSON",
        _cli(lambda c: ["knowledge", str(c.spirit), str(c.tmp), "--columns", "{prompt_text: p}", "--quiet"]),
        CliError,
        "is not JSON",
        "JSONDecodeError",
    ),
    Case(
        "knowledge --columns a JSON list",
        _cli(lambda c: ["knowledge", str(c.spirit), str(c.tmp), "--columns", "[1]", "--quiet"]),
        CliError,
        "not a JSON object",
    ),
    Case(
        "knowledge --batch-size 0",
        _cli(lambda c: ["knowledge", str(c.spirit), str(c.tmp), "--batch-size", "0", "--quiet"]),
        CliError,
        "--batch-size 0",
    ),
    Case(
        "a truncated part file when merging",
        _truncated_part_merge,
        RunError,
        "cannot be read",
        "ArrowInvalid",
    ),
    Case(
        "a deleted part file when merging", _deleted_part_merge, RunError, "is missing; run the same command"
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_bad_input_gives_one_clear_package_error(case: Case, spirit, units, spiritlm_model, tmp_path) -> None:
    with pytest.raises(case.error) as caught:
        case.run(Context(tmp_path, spirit, units, spiritlm_model))
    message = str(caught.value)
    if case.error is not CliError:
        assert isinstance(caught.value, SLMError)
    assert case.fragment in message
    assert case.absent not in message


# ---------------------------------------------------------------- results that used to be wrong
def test_a_lens_is_refused_for_an_unembedding_that_differs_away_from_its_corners(spirit, tmp_path) -> None:
    import warnings

    import slm_transformerlens as slt
    from slm_transformerlens.lens import LensError, TunedLens, unembedding_hash, unembedding_sha256

    model = slt.load(spirit, progress=False)  # a private copy: its unembedding is changed below
    folder = TunedLens(model).save(tmp_path / "lens")
    corner_hash = unembedding_hash(model)
    with torch.no_grad():
        weight = model.W_U  # [d_model, d_vocab]; numpy's printed summary shows 3 rows / columns per edge
        assert weight.numel() > 1000
        original = weight.clone()
        weight[3:-3, 3:-3] += 0.5
    assert unembedding_hash(model) == corner_hash  # tuned-lens' hash cannot see the change
    with pytest.raises(LensError, match="sha256 of the whole unembedding differs"):
        TunedLens.load(folder, model)
    with torch.no_grad():
        model.W_U.copy_(original)
    config = json.loads((folder / "config.json").read_text())
    assert config["unembed_sha256"] == unembedding_sha256(model)
    assert isinstance(TunedLens.load(folder, model), TunedLens)
    # a lens saved before the full hash was recorded still loads, with a warning to save it again
    del config["unembed_sha256"]
    (folder / "config.json").write_text(json.dumps(config))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        TunedLens.load(folder, model)
    assert any("Save it again" in str(w.message) for w in caught)


def test_a_string_prompt_is_ranked_as_the_forward_pass_ranks_it(spiritlm_model) -> None:
    from slm_transformerlens import Text

    model = spiritlm_model
    table = model.test_prompt("the capital of", " france", print_details=False)
    full = model.to_tokens([Text("the capital of"), Text(" france")])[0]
    n = model.to_tokens([Text("the capital of")]).shape[1]
    assert table["token"].tolist() == full[n:].tolist()
    with torch.no_grad():
        logits = model(full[None])[0]
    for row in table.itertuples():
        step = logits[row.position - 1]
        assert row.rank == int((step > step[row.token]).sum())
