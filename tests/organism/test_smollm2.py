"""The SmolLM2-135M organism: LoRA maths, the toy recipe end to end on the real SmolLM2 weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from slm_transformerlens.errors import SLMError
from slm_transformerlens.organism import smollm2


def _tiny_llama() -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config).eval()


def test_lora_freezes_the_base_and_merges_exactly() -> None:
    model = _tiny_llama()
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    loras = smollm2.add_lora(model, rank=2, alpha=4.0, seed=0)
    assert len(loras) == 2 * len(smollm2.LORA_TARGETS)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(("lora_a", "lora_b")) for n in trainable)
    ids = torch.randint(0, 64, (2, 9))
    with torch.no_grad():
        before = model(ids).logits.clone()
        for lora in loras.values():
            lora.lora_b.normal_()
        adapted = model(ids).logits
    assert not torch.allclose(before, adapted)  # B = 0 at the start: the adapter was a no-op, now it is not
    merged = _tiny_llama()
    merged.load_state_dict(reference)
    with torch.no_grad():
        modules = dict(merged.named_modules())
        for name, lora in loras.items():
            modules[name].weight.copy_(lora.merged_weight())
        assert torch.allclose(merged(ids).logits, adapted, atol=1e-5)


def test_add_lora_refuses_a_model_without_projections() -> None:
    with pytest.raises(SLMError, match="Llama-architecture"):
        smollm2.add_lora(torch.nn.Sequential(torch.nn.ReLU()), rank=2, alpha=4.0)


@pytest.mark.slow
def test_toy_recipe_end_to_end_on_real_smollm2(
    toy_data: Path, smollm2_sims, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import slm_transformerlens as slt
    from slm_transformerlens.lens import LogitLens

    recipe = smollm2.SmolRecipe.preset("toy")
    streams = smollm2.build_streams(
        toy_data,
        tmp_path / "streams.npz",
        recipe,
        base_tokenizer=smollm2_sims.path / "base_tokenizer",
        progress=False,
    )
    with np.load(streams) as npz:
        n_units = int(npz["n_units"])
        unit0 = int(npz["vocab_size"]) - n_units - 2
        interleaved = npz["interleaved"]
        assert interleaved.shape[1] == recipe.seq_len
        assert np.isin(interleaved, [unit0 + n_units, unit0 + n_units + 1]).any(axis=1).all()  # switches
    (delta,) = smollm2.train_smollm2(streams, tmp_path / "deltas", recipe, variants=("main",), log_every=1)
    tensors, info = smollm2.read_delta(delta)
    assert tensors["unit_rows"].shape == (n_units + 2, 576) and tensors["unit_rows"].dtype == torch.float16
    assert info["variant"] == "main" and info["log"][-1]["step"] == len(info["log"])
    checkpoint = smollm2.materialize(delta, tmp_path / "checkpoint")
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["organism"]["variant"] == "main" and config["vocab_size"] == unit0 + n_units + 2
    model = slt.load(checkpoint, tokenizer=checkpoint / "base_tokenizer", progress=False)
    embedding = model.W_E.detach()
    assert torch.equal(embedding[unit0:].float(), tensors["unit_rows"].float())  # trained rows, as shipped
    assert torch.equal(embedding[:unit0], smollm2_sims.hf_model.get_input_embeddings().weight[:unit0])
    tokens = torch.from_numpy(interleaved[:1, :24].astype(np.int64))
    logits, cache = model.run_with_cache(tokens)
    last = model.cfg.n_layers - 1
    lens_logits = LogitLens(model).logits(cache[f"blocks.{last}.hook_resid_post"], last)
    torch.testing.assert_close(lens_logits.log_softmax(-1), logits.float().log_softmax(-1), atol=1e-5, rtol=0)
    # a delta only applies to the GGUF it was trained on
    monkeypatch.setattr(smollm2, "gguf_sha256", lambda _path: "0" * 64)
    with pytest.raises(SLMError, match="SHA-256"):
        smollm2.materialize(delta, tmp_path / "other")


@pytest.mark.slow
def test_streams_command_writes_smollm2_streams(toy_data: Path, tmp_path: Path) -> None:
    from slm_transformerlens.cli import main

    out = tmp_path / "smollm2" / "streams_kmeans.npz"
    assert (
        main(
            [
                "organism",
                "smollm2-streams",
                "--data",
                str(toy_data),
                "--out",
                str(out),
                "--recipe",
                "toy",
                "--quiet",
            ]
        )
        == 0
    )
    n_units = json.loads((toy_data / "vocab.json").read_text())["n_units"]["kmeans"]
    with np.load(out) as npz:
        assert int(npz["vocab_size"]) == 49_152 + n_units + 2 and npz["speech"].dtype == np.uint16
        assert npz["speech"].max() < 49_152 + n_units  # bare units, no marker
    assert (out.parent / "smollm2_base_tokenizer" / "tokenizer_config.json").is_file()
