"""``slm-lens inspect`` on every family, as text and JSON, and its one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slm_transformerlens.cli import main


def test_inspect_sims_json(checkpoint_factory, capsys) -> None:
    path, kwargs = checkpoint_factory("sims-qwen2-untied-sharded")
    assert main(["inspect", str(path), "--tokenizer", str(kwargs["tokenizer"]), "--json"]) == 0
    description = json.loads(capsys.readouterr().out)
    assert description["family"] == "sims" and description["architecture"] == "Qwen2ForCausalLM"
    assert (description["n_layers"], description["d_model"], description["n_heads"]) == (3, 64, 4)
    assert description["n_key_value_heads"] == 2 and description["stored_dtype"] == "float32"
    vocab = description["vocab"]
    base = vocab["speech"]["range"][0]
    assert vocab["speech"] == {"count": 500, "range": [base, base + 500], "format": "<Un{}>"}
    assert vocab["markers"]["text"]["id"] == base + 501 and vocab["padding_rows"] == 64
    assert description["weight_format"] == "safetensors" and len(description["weight_files"]) == 3


def test_inspect_counts_parameters_like_the_model(checkpoint_factory, capsys) -> None:
    import slm_transformerlens as slt

    for layout in ("spiritlm-expressive-safetensors", "spiritlm-base-bin", "sims-llama3-tied"):
        path, kwargs = checkpoint_factory(layout)
        args = ["inspect", str(path), "--json"] + (
            ["--tokenizer", str(kwargs["tokenizer"])] if kwargs else []
        )
        assert main(args) == 0
        description = json.loads(capsys.readouterr().out)
        model = slt.load(path, progress=False, **kwargs)
        assert description["n_params"] == sum(p.numel() for p in model.original_model.parameters())


def test_inspect_text_names_every_group(checkpoint_factory, capsys) -> None:
    path, _ = checkpoint_factory("spiritlm-expressive-safetensors")
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    for needle in (
        "family         spiritlm",
        "LlamaForCausalLM",
        "[Hu{}]",
        "[Text]",
        "pitch",
        "style",
        "padding rows",
    ):
        assert needle in out


def test_inspect_error_is_one_line(checkpoint_factory, capsys) -> None:
    path, _ = checkpoint_factory("sims-qwen2-tied")
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("slm-lens inspect: error:") and "tokenizer" in err and "\n" not in err


@pytest.mark.slow
def _installed_script() -> Path:
    """The ``slm-lens`` console script of the interpreter running the tests (next to ``sys.executable``)."""
    script = Path(sys.executable).with_name("slm-lens")
    assert script.is_file(), f"no slm-lens console script next to {sys.executable}: is the package installed?"
    return script


def _script_env() -> dict[str, str]:
    """Run the script against THIS checkout's package (the repository root first on ``sys.path``)."""
    root = str(Path(__file__).resolve().parents[1])
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p),
    }


def test_console_script_is_installed(checkpoint_factory) -> None:
    path, _ = checkpoint_factory("spiritlm-base-bin")
    result = subprocess.run(
        [str(_installed_script()), "inspect", str(path), "--json"],
        capture_output=True,
        text=True,
        check=True,
        env=_script_env(),
    )
    assert json.loads(result.stdout)["family"] == "spiritlm"


@pytest.mark.parametrize("argv", [["--help"], ["inspect"], ["no-such-command"]])
def test_help_and_argument_errors_are_instant(argv: list[str]) -> None:
    """``slm-lens --help`` and argument errors import nothing heavy (no torch, no TransformerLens)."""
    start = time.perf_counter()
    result = subprocess.run(
        [str(_installed_script()), *argv], capture_output=True, text=True, env=_script_env(), timeout=60
    )
    elapsed = time.perf_counter() - start
    assert result.returncode == (0 if argv == ["--help"] else 2), result.stderr
    assert "slm-lens" in result.stdout + result.stderr
    assert elapsed < 2.0, f"slm-lens {' '.join(argv)} took {elapsed:.2f} s"


def test_analyze_readout_precision_reaches_the_lens(spiritlm_model) -> None:
    from slm_transformerlens.cli import _make_lens, build_parser
    from slm_transformerlens.lens import LogitLens, TunedLens

    args = build_parser().parse_args(["analyze", "ckpt", "a.json", "--readout-precision", "fast"])
    assert args.readout_precision == "fast"
    assert build_parser().parse_args(["analyze", "ckpt", "a.json"]).readout_precision == "auto"
    lens = _make_lens(None, TunedLens, LogitLens, "fp32", spiritlm_model)
    assert isinstance(lens, LogitLens) and lens.readout_precision == "fp32"
    assert _make_lens(None, TunedLens, LogitLens, "auto", spiritlm_model) is None  # the analysis' default
