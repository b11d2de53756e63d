"""Bad checkpoints and bad arguments get clear errors that name the problem and the fix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import slm_transformerlens as slt
from slm_transformerlens import testing
from slm_transformerlens.errors import (
    CheckpointError,
    MissingCheckpointFileError,
    UnsupportedArchitectureError,
    VocabularyError,
)


def copy_of(checkpoint_factory, layout: str, tmp_path: Path) -> tuple[Path, dict]:
    source, load_kwargs = checkpoint_factory(layout)
    target = tmp_path / layout
    shutil.copytree(source, target)
    return target, load_kwargs


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(MissingCheckpointFileError, match="does not exist"):
        slt.load(tmp_path / "nowhere")


def test_missing_config(checkpoint_factory, tmp_path: Path) -> None:
    path, kwargs = copy_of(checkpoint_factory, "spiritlm-base-bin", tmp_path)
    (path / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        slt.load(path, progress=False, **kwargs)
    with pytest.raises(MissingCheckpointFileError, match=r"config\.json"):
        slt.load(path, family="spiritlm", progress=False, **kwargs)


def test_missing_weights(checkpoint_factory, tmp_path: Path) -> None:
    path, kwargs = copy_of(checkpoint_factory, "spiritlm-base-bin", tmp_path)
    (path / "pytorch_model.bin").unlink()
    with pytest.raises(MissingCheckpointFileError, match="no weights found"):
        slt.load(path, progress=False, **kwargs)


def test_missing_shard(checkpoint_factory, tmp_path: Path) -> None:
    path, kwargs = copy_of(checkpoint_factory, "sims-llama3-untied-sharded", tmp_path)
    (path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(MissingCheckpointFileError, match=r"model-00002-of-00002.safetensors.*missing"):
        slt.load(path, progress=False, **kwargs)


def test_extra_shard(checkpoint_factory, tmp_path: Path) -> None:
    path, kwargs = copy_of(checkpoint_factory, "sims-llama3-untied-sharded", tmp_path)
    shutil.copy(path / "model-00001-of-00002.safetensors", path / "model-00003-of-00003.safetensors")
    with pytest.raises(CheckpointError, match="does not name"):
        slt.load(path, progress=False, **kwargs)


def test_shards_without_index(checkpoint_factory, tmp_path: Path) -> None:
    path, kwargs = copy_of(checkpoint_factory, "sims-llama3-untied-sharded", tmp_path)
    (path / "model.safetensors.index.json").unlink()
    with pytest.raises(MissingCheckpointFileError, match=r"no model\.safetensors\.index\.json"):
        slt.load(path, progress=False, **kwargs)


def test_missing_tensor(checkpoint_factory, tmp_path: Path) -> None:
    path, kwargs = copy_of(checkpoint_factory, "sims-qwen2-tied", tmp_path)
    state = load_file(str(path / "model.safetensors"))
    del state["lm.model.layers.1.mlp.up_proj.weight"]
    save_file(state, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing from the checkpoint.*layers.1.mlp.up_proj"):
        slt.load(path, progress=False, **kwargs)


def test_shape_mismatch(checkpoint_factory, tmp_path: Path) -> None:
    path, kwargs = copy_of(checkpoint_factory, "sims-qwen2-tied", tmp_path)
    config = json.loads((path / "config.json").read_text())
    config["base_config"]["intermediate_size"] = 96
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"config\.json and the weights disagree"):
        slt.load(path, progress=False, **kwargs)


def test_unknown_architecture(checkpoint_factory, tmp_path: Path) -> None:
    path, kwargs = copy_of(checkpoint_factory, "sims-qwen2-tied", tmp_path)
    config = json.loads((path / "config.json").read_text())
    config["base_config"] = {"model_type": "t5", "vocab_size": config["vocab_size"]}
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedArchitectureError, match="not supported by TransformerLens"):
        slt.load(path, progress=False, **kwargs)


def test_sims_without_tokenizer_names_the_base_model(checkpoint_factory) -> None:
    path, _ = checkpoint_factory("sims-qwen2-tied")
    with pytest.raises(MissingCheckpointFileError, match=r"do not ship a tokenizer.*Qwen/Qwen2.5-0.5B"):
        slt.load(path, progress=False)


def test_sims_with_the_wrong_base_tokenizer(checkpoint_factory) -> None:
    path, _ = checkpoint_factory("sims-qwen2-tied")
    with pytest.raises(VocabularyError, match=r"base tokenizer has 128257 tokens.*Qwen/Qwen2.5-0.5B"):
        slt.load(path, tokenizer=testing.base_tokenizer_dir("llama3"), progress=False)


def test_tokenizer_larger_than_embedding(checkpoint_factory) -> None:
    path, _ = checkpoint_factory("spiritlm-base-bin")
    other, _ = checkpoint_factory("spiritlm-expressive-safetensors")
    with pytest.raises(VocabularyError, match="does not belong to this checkpoint"):
        slt.load(path, tokenizer=other, progress=False)


def test_tokenizer_far_smaller_than_embedding(checkpoint_factory, tmp_path: Path) -> None:
    path, kwargs = copy_of(checkpoint_factory, "spiritlm-base-bin", tmp_path)
    config = json.loads((path / "config.json").read_text())
    config["vocab_size"] += 4096
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(VocabularyError, match="at most 512 padding rows"):
        slt.load(path, progress=False, **kwargs)


def test_unit_format_that_matches_nothing(spiritlm_checkpoint) -> None:
    with pytest.raises(VocabularyError, match=r"no speech unit token matches '<unit_\{\}>'"):
        slt.load(spiritlm_checkpoint, family="generic", unit_format="<unit_{}>", progress=False)


def test_generic_family_finds_units_and_markers(spiritlm_checkpoint) -> None:
    model = slt.load(spiritlm_checkpoint, family="generic", progress=False)
    spirit = slt.load(spiritlm_checkpoint, progress=False)
    assert model.speech_vocab.units == spirit.speech_vocab.units
    assert model.speech_vocab.markers == spirit.speech_vocab.markers
    assert model.checkpoint_family == "generic"


def test_unsafe_pickle_is_refused(checkpoint_factory, tmp_path: Path) -> None:
    path, kwargs = copy_of(checkpoint_factory, "spiritlm-base-bin", tmp_path)
    state = torch.load(path / "pytorch_model.bin", weights_only=True)
    state["evil"] = Path("/")  # an arbitrary object: only loadable by a full unpickler
    torch.save(state, path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        slt.load(path, progress=False, **kwargs)


def test_bfloat16_on_a_gpu_without_it(monkeypatch, spiritlm_checkpoint) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla T4")
    with pytest.raises(CheckpointError, match=r"bfloat16 is not supported on Tesla T4.*float16"):
        slt.load(spiritlm_checkpoint, device="cuda", dtype=torch.bfloat16, progress=False)


def test_cuda_absent(monkeypatch, spiritlm_checkpoint) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(CheckpointError, match="CUDA is not available"):
        slt.load(spiritlm_checkpoint, device="cuda", progress=False)


def test_unknown_dtype(spiritlm_checkpoint) -> None:
    with pytest.raises(CheckpointError, match="unknown dtype 'float13'"):
        slt.load(spiritlm_checkpoint, dtype="float13", progress=False)


def test_unknown_family(spiritlm_checkpoint) -> None:
    with pytest.raises(CheckpointError, match="unknown checkpoint family 'twist'"):
        slt.load(spiritlm_checkpoint, family="twist", progress=False)


def test_token_ids_out_of_range(spiritlm_model) -> None:
    with pytest.raises(VocabularyError, match="outside this model's vocabulary"):
        spiritlm_model(torch.tensor([[1, spiritlm_model.speech_vocab.vocab_size]]))
