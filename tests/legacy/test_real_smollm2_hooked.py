"""REAL weights on transformer-lens 3.x: SmolLM2-135M in the SIMS layout as a HookedTransformer."""

from __future__ import annotations

import pytest
import torch
from packaging.version import Version

from slm_transformerlens.legacy import transformer_lens_version

if Version(transformer_lens_version()).major >= 4:
    pytest.skip("transformer-lens >= 4 has no HookedTransformer", allow_module_level=True)

from slm_transformerlens.legacy import to_hooked_transformer
from tests.checkpoints.test_parity import interleaved_ids

pytestmark = pytest.mark.realmodel


def test_smollm2_sims_as_hooked_transformer(smollm2_sims) -> None:
    model = to_hooked_transformer(smollm2_sims.path, **smollm2_sims.load_kwargs)
    assert model.cfg.n_layers == 30 and model.cfg.d_vocab == 49654 and model.cfg.rotary_base == 100_000.0
    assert model.speech_vocab.units.start == 49152 and not model.cfg.default_prepend_bos
    tokens = interleaved_ids(model, n_tokens=256)
    with torch.no_grad():
        expected = smollm2_sims.hf_model(tokens).logits.log_softmax(-1)
        logits, cache = model.run_with_cache(
            tokens, names_filter=lambda name: "resid" in name or "ln_final" in name
        )
    got = logits.log_softmax(-1)
    assert (got - expected).abs().max().item() <= 1e-4  # measured 5.3e-5 over 30 real layers
    lens = cache.accumulated_resid(apply_ln=True)[-1] @ model.W_U + model.b_U
    assert (lens.log_softmax(-1) - got).abs().max().item() <= 1e-4
    prompt = model.to_tokens(" The capital of France is")
    with torch.no_grad():
        top = model(prompt)[0, -1].argmax().item()
    assert model.tokenizer.decode([top]).strip() == "Paris"
