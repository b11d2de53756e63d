"""nnsight on a speech LM: by path (export_hf) and in memory (load_hf); reads and edits match our hooks."""

from __future__ import annotations

import warnings

import nnsight  # installed by scripts/setup.sh --tests (the transformer-lens 4 job)
import pytest
import torch
from interop_helpers import utterance

import slm_transformerlens as slt


def _language_model(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nnsight 0.8 deprecates the LanguageModel name, not its use
        return nnsight.LanguageModel(*args, **kwargs)


@pytest.fixture(scope="module")
def sims(checkpoint_factory, tmp_path_factory):
    path, kwargs = checkpoint_factory("sims-qwen2-tied")
    model = slt.load(path, progress=False, **kwargs)
    out = slt.export_hf(path, tmp_path_factory.mktemp("nnsight-sims"), progress=False, **kwargs)
    return model, path, kwargs, out


def test_nnsight_reads_the_same_residual_stream_and_logits_by_path(sims):
    model, _, _, out = sims
    lm = _language_model(str(out), device_map="cpu", dispatch=True, attn_implementation="eager")
    tokens = model.to_tokens(utterance())
    saved = {}
    with lm.trace(tokens):
        for layer in range(model.cfg.n_layers):
            saved[layer] = lm.model.layers[layer].output.save()
        logits = lm.output.logits.save()
    with torch.no_grad():
        ours, cache = model.run_with_cache(tokens)
    assert torch.equal(logits, ours)
    for layer, hidden in saved.items():
        hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        assert torch.equal(hidden, cache[f"blocks.{layer}.hook_resid_post"])


def test_an_nnsight_edit_equals_the_same_edit_through_our_hooks(sims):
    model, path, kwargs, _ = sims
    hf_model, tokenizer, _, vocab = slt.load_hf(path, progress=False, **kwargs)
    lm = _language_model(hf_model, tokenizer=tokenizer)
    tokens = model.to_tokens(utterance())
    speech = (tokens[0] >= vocab.units.start) & (tokens[0] < vocab.units.stop)
    with lm.trace(tokens):
        lm.model.layers[0].mlp.output[:, speech] = 0
        edited = lm.output.logits.save()

    def zero_speech(activation, hook):
        activation[:, speech] = 0
        return activation

    with torch.no_grad():
        ours = model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.hook_mlp_out", zero_speech)])
        clean = model(tokens)
    torch.testing.assert_close(edited, ours, atol=1e-5, rtol=1e-5)
    assert float((edited - clean).detach().abs().max()) > 1e-3
