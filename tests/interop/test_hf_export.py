"""load_hf / export_hf: every family as a standard Hugging Face directory, with round-trip parity."""

from __future__ import annotations

import json

import pytest
import torch
from interop_helpers import utterance
from transformers import AutoModelForCausalLM, AutoTokenizer

import slm_transformerlens as slt
from slm_transformerlens.interop import InteropError, export_hf, load_hf
from slm_transformerlens.speech.interleave import family_string

LAYOUTS = ["sims-qwen2-untied-sharded", "sims-llama3-tied", "spiritlm-expressive-safetensors"]


@pytest.fixture(scope="module")
def exported(checkpoint_factory, tmp_path_factory):
    """name -> (source path, load kwargs, exported directory), exported from the checkpoint directory."""
    result = {}
    for name in LAYOUTS:
        path, kwargs = checkpoint_factory(name)
        out = export_hf(path, tmp_path_factory.mktemp(f"hf-{name}"), progress=False, **kwargs)
        result[name] = (path, kwargs, out)
    return result


@pytest.mark.parametrize("name", LAYOUTS)
def test_plain_hf_round_trip_is_bit_identical(exported, name):
    path, kwargs, out = exported[name]
    model = slt.load(path, progress=False, **kwargs)
    encoded = model.encode(utterance())
    hf_model = AutoModelForCausalLM.from_pretrained(str(out), attn_implementation="eager").eval()
    hf_tokenizer = AutoTokenizer.from_pretrained(str(out))
    assert type(hf_model).__name__ in {"Qwen2ForCausalLM", "LlamaForCausalLM"}
    assert len(hf_tokenizer) == model.speech_vocab.tokenizer_size
    # the exported tokenizer reads the family's own string into the same ids as our encoder
    string = family_string(utterance(), model.speech_vocab)
    bos = [model.speech_vocab.bos_token_id] if model.speech_vocab.bos_token_id is not None else []
    ids = hf_tokenizer(string, add_special_tokens=False).input_ids
    assert [*bos, *ids] == encoded.tokens[0].tolist()
    with torch.no_grad():
        ours = model(encoded.tokens)
        theirs = hf_model(encoded.tokens).logits
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("name", LAYOUTS)
def test_exported_directory_loads_back_with_the_same_vocabulary(exported, name):
    path, kwargs, out = exported[name]
    original = slt.load(path, progress=False, **kwargs)
    again = slt.load(out, progress=False)
    a, b = original.speech_vocab, again.speech_vocab
    assert (a.units, a.markers, a.extra_groups, a.bos_token_id, a.vocab_size) == (
        b.units,
        b.markers,
        b.extra_groups,
        b.bos_token_id,
        b.vocab_size,
    )
    assert torch.equal(original.encode(utterance()).tokens, again.encode(utterance()).tokens)
    side = json.loads((out / "speech_vocab.json").read_text())
    assert side["source_family"] == original.checkpoint_family
    assert side["speech_vocab"] == original.speech_vocab.to_dict()


def test_export_from_a_loaded_bridge_matches_export_from_disk(checkpoint_factory, tmp_path):
    path, kwargs = checkpoint_factory("sims-qwen2-tied")
    model = slt.load(path, progress=False, **kwargs)
    out = export_hf(model, tmp_path / "from-bridge")
    hf_model = AutoModelForCausalLM.from_pretrained(str(out), attn_implementation="eager").eval()
    assert not any("_original_component" in key for key in hf_model.state_dict())
    tokens = model.encode(utterance()).tokens
    with torch.no_grad():
        assert torch.equal(model(tokens), hf_model(tokens).logits)


def test_load_hf_gives_a_plain_model_and_a_left_padding_copy(checkpoint_factory):
    path, kwargs = checkpoint_factory("sims-llama3-tied")
    model, tokenizer, left, vocab = load_hf(path, progress=False, **kwargs)
    assert type(model).__module__.startswith("transformers.models.")
    assert all(type(m).__module__.startswith(("transformers.", "torch.")) for m in model.modules())
    assert tokenizer.padding_side == "right" and left.padding_side == "left"
    assert len(left) == len(tokenizer) == vocab.tokenizer_size
    batch = left(["<text> a<speech><Un1><Un2><Un3>", "<text> a"], padding=True, return_tensors="pt")
    assert batch.attention_mask[1, 0] == 0 and batch.attention_mask[1, -1] == 1
    bridge = slt.load(path, progress=False, **kwargs)
    tokens = bridge.to_tokens(utterance())
    with torch.no_grad():
        assert torch.equal(model(tokens).logits, bridge(tokens))


def test_transformerlens_boot_transformers_opens_an_exported_sims_directory(exported):
    from transformer_lens.model_bridge import TransformerBridge

    path, kwargs, out = exported["sims-qwen2-untied-sharded"]
    ours = slt.load(path, progress=False, **kwargs)
    booted = TransformerBridge.boot_transformers(str(out), device="cpu")
    tokens = ours.encode(utterance()).tokens
    with torch.no_grad():
        assert torch.allclose(booted(tokens), ours(tokens), atol=1e-5)


def test_export_refuses_compatibility_mode_and_non_empty_targets(spiritlm_checkpoint, tmp_path):
    model = slt.load(spiritlm_checkpoint, progress=False)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    with pytest.raises(InteropError, match="not empty"):
        export_hf(model, tmp_path / "busy")
    with pytest.raises(InteropError, match="overwrite the checkpoint"):
        export_hf(spiritlm_checkpoint, spiritlm_checkpoint, overwrite=True, progress=False)
    with pytest.raises(InteropError, match=r"slt\.load"):
        export_hf(torch.nn.Linear(2, 2), tmp_path / "linear")
    model.enable_compatibility_mode()
    with pytest.raises(InteropError, match="compatibility mode"):
        export_hf(model, tmp_path / "compat")
