"""Numerical parity of every checkpoint layout against Hugging Face, and the last-layer lens."""

from __future__ import annotations

import pytest
import torch
from transformer_lens.model_bridge import TransformerBridge

import slm_transformerlens as slt
from slm_transformerlens.testing import reference_hf_model
from tests.conftest import LAYOUTS

__all__ = ["interleaved_ids", "reference_hf_model"]

TOLERANCE = 1e-5


def interleaved_ids(model: slt.HookedSLM, n_tokens: int = 240, seed: int = 0) -> torch.Tensor:
    """>= 200 ids alternating text words (through the tokenizer) and runs of unit ids, with markers."""
    vocab = model.speech_vocab
    generator = torch.Generator().manual_seed(seed)
    ids: list[int] = [] if vocab.bos_token_id is None else [vocab.bos_token_id]
    words = [
        "once",
        "upon",
        "a",
        "time",
        "there",
        "was",
        "a",
        "little",
        "girl",
        "who",
        "lived",
        "in",
        "a",
        "village",
    ]
    while len(ids) < n_tokens:
        if vocab.markers:
            ids.append(vocab.markers["text"])
        for word in words[: 1 + len(ids) % 4]:
            ids += model.tokenizer(" " + word, add_special_tokens=False)["input_ids"]
        if vocab.markers:
            ids.append(vocab.markers["speech"])
        units = torch.randint(
            0, vocab.n_units, (int(torch.randint(3, 12, (1,), generator=generator)),), generator=generator
        )
        ids += vocab.unit_token_ids(units).tolist()
    return torch.tensor([ids[:n_tokens]])


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_log_probs_match_hugging_face(layout: str, checkpoint_factory) -> None:
    path, load_kwargs = checkpoint_factory(layout)
    model = slt.load(path, progress=False, **load_kwargs)
    assert isinstance(model, TransformerBridge)
    reference = reference_hf_model(path)
    tokens = interleaved_ids(model)
    vocab = model.speech_vocab
    assert bool((tokens >= vocab.units.start).any()) and bool((tokens < vocab.units.start).any())
    with torch.no_grad():
        expected = reference(tokens).logits.log_softmax(-1)
        logits, cache = model.run_with_cache(tokens)
    got = logits.log_softmax(-1)
    assert got.shape == expected.shape == (1, tokens.shape[1], vocab.vocab_size)
    assert (got - expected).abs().max().item() <= TOLERANCE

    # the last-layer logit lens read from the cache equals the model's output
    lens = cache.accumulated_resid(apply_ln=True)[-1] @ model.W_U
    if getattr(model, "b_U", None) is not None:
        lens = lens + model.b_U
    assert (lens.log_softmax(-1) - got).abs().max().item() <= TOLERANCE

    # the standard hook names are there and resid_pre of block 0 equals HF's embeddings
    with torch.no_grad():
        hidden = reference(tokens, output_hidden_states=True).hidden_states
    for layer in range(model.cfg.n_layers):
        assert torch.allclose(cache[f"blocks.{layer}.hook_resid_pre"], hidden[layer], atol=1e-5)
    assert f"blocks.{model.cfg.n_layers - 1}.hook_resid_post" in cache


@pytest.mark.parametrize("layout", ["sims-qwen2-tied", "sims-llama3-tied", "spiritlm-expressive-safetensors"])
def test_family_is_detected(layout: str, checkpoint_factory) -> None:
    path, load_kwargs = checkpoint_factory(layout)
    model = slt.load(path, progress=False, **load_kwargs)
    assert model.checkpoint_family == LAYOUTS[layout]["kind"]
    forced = slt.load(path, family=LAYOUTS[layout]["kind"], progress=False, **load_kwargs)
    assert forced.speech_vocab == model.speech_vocab


def test_llama3_rope_and_bos(checkpoint_factory) -> None:
    path, load_kwargs = checkpoint_factory("sims-llama3-tied")
    model = slt.load(path, progress=False, **load_kwargs)
    assert model.cfg.rotary_base == 500_000.0  # TransformerLens leaves 10000 without our fix
    assert model.speech_vocab.bos_token_id == model.tokenizer.convert_tokens_to_ids("<|begin_of_text|>")
    qwen = slt.load(
        *checkpoint_factory("sims-qwen2-tied")[:1], progress=False, **checkpoint_factory("sims-qwen2-tied")[1]
    )
    assert qwen.speech_vocab.bos_token_id is None
    assert qwen.cfg.rotary_base == 1_000_000.0


def test_dtype_bfloat16_loads_and_stays_close(spiritlm_checkpoint) -> None:
    fp32 = slt.load(spiritlm_checkpoint, progress=False)
    bf16 = slt.load(spiritlm_checkpoint, dtype="bfloat16", progress=False)
    assert next(bf16.original_model.parameters()).dtype == torch.bfloat16
    tokens = torch.arange(3, 60).unsqueeze(0)
    with torch.no_grad():
        difference = (fp32(tokens).log_softmax(-1) - bf16(tokens).float().log_softmax(-1)).abs().max()
    assert difference < 0.5


@pytest.mark.parametrize("layout", ["sims-llama3-tied", "sims-qwen2-tied", "spiritlm-base-bin"])
def test_bridge_keeps_the_speech_tokenizer(layout: str, checkpoint_factory) -> None:
    """TransformerLens may reload a tokenizer from its name; ours must keep the added unit tokens."""
    path, load_kwargs = checkpoint_factory(layout)
    model = slt.load(path, progress=False, **load_kwargs)
    vocab = model.speech_vocab
    assert len(model.tokenizer) == vocab.tokenizer_size
    unit = vocab.unit_token(7)
    assert model.tokenizer.convert_tokens_to_ids(unit) == vocab.unit_token_id(7)
    assert model.tokenizer.padding_side == "right"
    assert model.cfg.default_prepend_bos == (vocab.bos_token_id is not None)
