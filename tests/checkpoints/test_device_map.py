"""``slt.load(device_map=...)``: a split model (accelerate's hooks, weights read onto their devices) on CPU.

A real two-device run needs a GPU: ``benchmarks/check_device_map_gpu.py`` (its ``--devices cpu,cpu`` mode
runs here, as the last test)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import slm_transformerlens as slt
from slm_transformerlens.checkpoints import parse_device_map
from slm_transformerlens.cli import main
from slm_transformerlens.errors import DevicePlacementError
from slm_transformerlens.lens import LogitLens
from tests.checkpoints.test_parity import interleaved_ids, reference_hf_model

TOLERANCE = 1e-5
ROOT = Path(__file__).resolve().parents[2]


def explicit_map(n_layers: int) -> dict[str, str]:
    """Every module named, on "cpu" (the input embedding, each block, the final norm, the unembedding)."""
    placement = {"model.embed_tokens": "cpu", "model.norm": "cpu", "lm_head": "cpu"}
    placement.update({f"model.layers.{i}": "cpu" for i in range(n_layers)})
    return placement


@pytest.fixture(scope="module")
def untied(checkpoint_factory) -> tuple[Path, dict]:
    return checkpoint_factory("sims-llama3-untied-sharded")


def test_explicit_cpu_map_matches_hugging_face_and_the_lens_matches_the_output(untied) -> None:
    path, load_kwargs = untied
    model = slt.load(path, progress=False, device_map=explicit_map(3), **load_kwargs)
    hf = model.original_model
    assert hf.hf_device_map["model.layers.2"] == "cpu" and hf.hf_device_map["model.rotary_emb"] == "cpu"
    assert all(hasattr(hf.model.layers[i].original_component, "_hf_hook") for i in range(3))  # accelerate's
    assert model.cfg.device == "cpu"
    tokens = interleaved_ids(model, n_tokens=64)
    with torch.no_grad():
        expected = reference_hf_model(path)(tokens).logits.log_softmax(-1)
        logits, cache = model.run_with_cache(tokens)
    got = logits.log_softmax(-1)
    assert (got - expected).abs().max().item() <= TOLERANCE
    last = model.cfg.n_layers - 1
    with torch.no_grad():
        lens = LogitLens(model).logits(cache[f"blocks.{last}.hook_resid_post"], last).log_softmax(-1)
    assert (lens - got).abs().max().item() <= TOLERANCE
    stacked = cache.accumulated_resid(apply_ln=True)[-1] @ model.W_U
    assert (stacked.log_softmax(-1) - got).abs().max().item() <= TOLERANCE


def test_auto_on_a_cpu_only_machine_loads_everything_on_the_cpu(checkpoint_factory) -> None:
    path, load_kwargs = checkpoint_factory("sims-qwen2-tied")
    model = slt.load(path, progress=False, device_map="auto", **load_kwargs)
    assert set(model.original_model.hf_device_map.values()) == {"cpu"}
    reference = slt.load(path, progress=False, **load_kwargs)
    tokens = interleaved_ids(model, n_tokens=48)
    with torch.no_grad():
        assert torch.equal(model(tokens), reference(tokens))


def test_batched_transcription_table_of_a_split_model_equals_one_device(spiritlm_checkpoint) -> None:
    from slm_transformerlens.builders import write_unit_files
    from slm_transformerlens.lens import transcription_table
    from slm_transformerlens.speech.dataset import load_speech_dataset

    single = slt.load(spiritlm_checkpoint, progress=False)
    split = slt.load(spiritlm_checkpoint, progress=False, device_map=explicit_map(3))
    files = write_unit_files(Path(spiritlm_checkpoint).parent / "units-devmap", 6, seed=1)
    utterances = load_speech_dataset(files, single.speech_vocab, progress=False)
    kwargs = {"batch_tokens": 64, "progress": False}
    import pandas as pd

    pd.testing.assert_frame_equal(
        transcription_table(split, utterances, **kwargs), transcription_table(single, utterances, **kwargs)
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"device": "cpu", "device_map": "auto"}, "pass one of them"),
        ({"device_map": "auto", "n_devices": 2}, "not both"),
        ({"device_map": {"": "gpu0"}}, "'gpu0', which is not a device"),
        ({"device_map": {"": "disk"}}, "disk and meta offload are not supported"),
        ({"device_map": {"": "cuda:7"}}, "this machine has"),
        ({"device_map": {"": 3}}, "this machine has"),
        ({"device_map": {"model.layers.9": "cpu", "": "cpu"}}, "modules this model does not have"),
        ({"device_map": {"model.layers.0": "cpu"}}, "gives no device for"),
        ({"device_map": {}}, "device_map is empty"),
        ({"device_map": "fastest"}, "choose one of"),
        ({"n_devices": 2}, "needs 2 CUDA GPUs"),
        ({"device_map": {"": "cpu", "model.embed_tokens": "cpu", "lm_head": "mps"}}, "mps"),
    ],
)
def test_bad_placements_fail_with_a_clear_message(checkpoint_factory, kwargs, message) -> None:
    if kwargs.get("device_map", {}) in ({"": "cuda:7"}, {"": 3}) and torch.cuda.device_count() > 3:
        pytest.skip("this machine has the GPU")
    path, load_kwargs = checkpoint_factory("sims-qwen2-tied")
    with pytest.raises(DevicePlacementError, match=message):
        slt.load(path, progress=False, **kwargs, **load_kwargs)


def test_tied_embeddings_cannot_be_mapped_apart(checkpoint_factory, monkeypatch) -> None:
    path, load_kwargs = checkpoint_factory("sims-qwen2-tied")
    from slm_transformerlens.checkpoints import placement

    real = placement._canonical
    monkeypatch.setattr(placement, "_canonical", lambda d, where: "cuda:1" if d == "fake" else real(d, where))
    with pytest.raises(DevicePlacementError, match="ties its input and output embeddings"):
        slt.load(path, progress=False, device_map={"": "cpu", "lm_head": "fake"}, **load_kwargs)


def test_missing_accelerate_is_named(checkpoint_factory, monkeypatch) -> None:
    path, load_kwargs = checkpoint_factory("sims-qwen2-tied")
    monkeypatch.setitem(sys.modules, "accelerate", None)
    with pytest.raises(DevicePlacementError, match="pip install 'accelerate"):
        slt.load(path, progress=False, device_map="auto", **load_kwargs)


def test_command_line_device_map(spiritlm_checkpoint, tmp_path, capsys) -> None:
    assert parse_device_map(" auto ") == "auto"
    assert parse_device_map('{"": 0}') == {"": 0}
    with pytest.raises(DevicePlacementError, match="neither one of"):
        parse_device_map("{model.layers.0: cpu}")
    data = ROOT / "tests" / "fixtures" / "knowledge" / "facts_espeak.parquet"
    argv = [
        "knowledge",
        str(spiritlm_checkpoint),
        str(data),
        "--mode",
        "text",
        "--out",
        str(tmp_path),
        "--quiet",
    ]
    assert main([*argv, "--device-map", "auto"]) == 0
    assert "knowledge accuracy" in capsys.readouterr().out
    assert main([*argv, "--device-map", "auto", "--device", "cpu"]) == 2
    assert "pass one of them" in capsys.readouterr().err
    assert main([*argv, "--device-map", '{"": "gpu"}']) == 2
    assert "not a device" in capsys.readouterr().err


@pytest.mark.slow
def test_gpu_check_script_runs_on_cpu(capsys) -> None:
    spec = importlib.util.spec_from_file_location(
        "check_device_map_gpu", ROOT / "benchmarks" / "check_device_map_gpu.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--devices", "cpu,cpu"]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and out.count("PASS") >= 20


def test_gpu_check_compares_lists_of_floats_within_its_tolerance() -> None:
    """On an H200 the check failed a split model only because it compared ``top_probs`` (a list of floats
    per row) as text: lists of floats get the float columns' tolerance, other lists stay exact."""
    spec = importlib.util.spec_from_file_location(
        "check_device_map_gpu", ROOT / "benchmarks" / "check_device_map_gpu.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    table = pd.DataFrame(
        {"top_probs": [[0.5, 0.25], [0.125, 0.0625]], "top_tokens": [["a", "b"], ["c", "d"]]}
    )
    close = table.assign(top_probs=[[0.5 + module.TOLERANCE / 2, 0.25], [0.125, 0.0625]])
    assert module.compare_tables(close, table) is None
    far = table.assign(top_probs=[[0.5, 0.25], [0.125, 0.0625 + 10 * module.TOLERANCE]])
    assert "top_probs: max |diff|" in module.compare_tables(far, table)
    swapped = table.assign(top_tokens=[["a", "b"], ["d", "c"]])
    assert module.compare_tables(swapped, table) == "column top_tokens: 1 rows differ"
