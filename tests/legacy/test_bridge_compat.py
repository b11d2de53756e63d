"""The version-agnostic bridge builder and tokenizer preparation (transformer-lens 3.9 and 4.x)."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from transformer_lens.model_bridge import TransformerBridge

import slm_transformerlens as slt
from slm_transformerlens.checkpoints import LoadOptions, read_checkpoint
from slm_transformerlens.errors import VocabularyError
from slm_transformerlens.model import bridge_from_checkpoint, prepare_tokenizer
from tests.checkpoints.test_parity import interleaved_ids


@pytest.mark.parametrize(
    "layout", ["sims-qwen2-untied-sharded", "sims-llama3-tied", "spiritlm-expressive-safetensors"]
)
def test_bridge_matches_hugging_face_exactly(layout: str, checkpoint_factory) -> None:
    path, load_kwargs = checkpoint_factory(layout)
    loaded = read_checkpoint(path, LoadOptions(tokenizer=load_kwargs.get("tokenizer"), progress=False))
    vocab = loaded.speech_vocab
    tokens = interleaved_ids(loaded)
    with torch.no_grad():
        expected = loaded.hf_model(tokens).logits  # before the bridge rewires the module tree
    bridge = bridge_from_checkpoint(loaded)
    assert isinstance(bridge, slt.HookedSLM) and isinstance(bridge, TransformerBridge)
    with torch.no_grad():
        logits, cache = bridge.run_with_cache(tokens)
    assert torch.equal(logits, expected)
    assert f"blocks.{bridge.cfg.n_layers - 1}.hook_resid_post" in cache
    assert bridge.speech_vocab == vocab and bridge.checkpoint_family == loaded.family
    assert len(bridge.tokenizer) == vocab.tokenizer_size  # no unit token lost
    assert bridge.cfg.tokenizer_prepends_bos == (vocab.bos_token_id is not None)
    assert bridge.tokenizer.padding_side == "right"


def test_prepare_tokenizer_keeps_added_unit_tokens(checkpoint_factory) -> None:
    """TransformerLens' get_tokenizer_with_bos reloads a Llama-3 tokenizer from disk, dropping the units."""
    from transformer_lens.utilities.tokenize_utils import get_tokenizer_with_bos

    path, load_kwargs = checkpoint_factory("sims-llama3-tied")
    tokenizer = read_checkpoint(
        path, LoadOptions(tokenizer=load_kwargs["tokenizer"], progress=False)
    ).tokenizer
    size = len(tokenizer)
    assert len(get_tokenizer_with_bos(tokenizer)) < size  # the upstream behaviour this works around
    loaded = read_checkpoint(path, LoadOptions(tokenizer=load_kwargs["tokenizer"], progress=False))
    cfg = SimpleNamespace()
    assert prepare_tokenizer(tokenizer, cfg, loaded.speech_vocab) is tokenizer and len(tokenizer) == size
    assert (
        cfg.tokenizer_prepends_bos is True and cfg.tokenizer_appends_eos is False and cfg.default_prepend_bos
    )
    assert tokenizer.padding_side == "right" and tokenizer.pad_token is not None
    other = copy.copy(loaded.speech_vocab)  # a vocabulary read with another tokenizer
    object.__setattr__(other, "tokenizer_size", size + 2)
    with pytest.raises(VocabularyError, match=f"expects {size + 2}"):
        prepare_tokenizer(tokenizer, cfg, other)
    with pytest.raises(TypeError, match="Hugging Face tokenizer"):
        prepare_tokenizer("not a tokenizer", cfg)


def test_slt_load_keeps_unit_tokens(checkpoint_factory) -> None:
    path, load_kwargs = checkpoint_factory("sims-llama3-tied")
    model = slt.load(path, progress=False, **load_kwargs)
    assert len(model.tokenizer) == model.speech_vocab.tokenizer_size
    assert model.tokenizer.convert_tokens_to_ids("<Un3>") == model.speech_vocab.unit_token_id(3)
