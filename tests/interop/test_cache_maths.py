"""TransformerLens' cache maths (apply_ln_to_stack, logit_attrs) are exact on our default raw bridge."""

from __future__ import annotations

import pytest
import torch
from interop_helpers import utterance
from transformer_lens.ActivationCache import ActivationCache

import slm_transformerlens as slt
from slm_transformerlens.interop.cache_maths import NormWeightedActivationCache, effective_norm_weight


@pytest.fixture(scope="module", params=["sims-qwen2-tied", "spiritlm-base-bin"])
def model(request, checkpoint_factory):
    path, kwargs = checkpoint_factory(request.param)
    return slt.load(path, progress=False, **kwargs)


def _true_and_pair(model, logits):
    last = logits[0, -1].detach()
    top = torch.topk(last, 2).indices
    a, b = int(top[0]), int(torch.argmin(last))
    return a, b, float(last[a] - last[b])


@torch.no_grad()
def test_logit_attrs_sum_to_the_true_logit_difference(model):
    tokens = model.to_tokens(utterance())
    logits, cache = model.run_with_cache(tokens)
    assert isinstance(cache, NormWeightedActivationCache)
    a, b, true_diff = _true_and_pair(model, logits)
    components = cache.decompose_resid(layer=-1, pos_slice=-1)
    attrs = cache.logit_attrs(components, tokens=a, incorrect_tokens=b, pos_slice=-1)
    assert float(attrs.sum()) == pytest.approx(true_diff, abs=1e-4)
    final = cache.accumulated_resid(layer=-1, pos_slice=-1)[-1:]
    assert float(cache.logit_attrs(final, tokens=a, incorrect_tokens=b, pos_slice=-1)[0]) == pytest.approx(
        true_diff, abs=1e-4
    )
    # TransformerLens' own cache on the same tensors leaves the RMSNorm weight out: what we correct
    plain = ActivationCache(cache.cache_dict, model)
    wrong = float(plain.logit_attrs(final, tokens=a, incorrect_tokens=b, pos_slice=-1)[0])
    assert abs(wrong - true_diff) > 1e-3


@torch.no_grad()
def test_apply_ln_to_stack_matches_the_models_own_norm_outputs(model):
    tokens = model.to_tokens(utterance())
    _, cache = model.run_with_cache(tokens)
    for layer in range(model.cfg.n_layers):
        pre = cache.apply_ln_to_stack(cache[f"blocks.{layer}.hook_resid_pre"][None], layer=layer)[0]
        torch.testing.assert_close(pre, cache[f"blocks.{layer}.ln1.hook_out"], atol=1e-5, rtol=1e-5)
        mid = cache.apply_ln_to_stack(
            cache[f"blocks.{layer}.hook_resid_mid"][None], layer=layer, mlp_input=True
        )[0]
        torch.testing.assert_close(mid, cache[f"blocks.{layer}.ln2.hook_out"], atol=1e-5, rtol=1e-5)
    # the recomputed-norm logit lens already runs the model's norm: the weight is not applied twice
    stack = cache.accumulated_resid(apply_ln=True, pos_slice=-1)
    torch.testing.assert_close(stack[-1] @ model.W_U, model(tokens)[:, -1], atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_compatibility_mode_is_left_as_transformerlens_computes_it(checkpoint_factory):
    path, kwargs = checkpoint_factory("spiritlm-base-bin")
    model = slt.load(path, progress=False, **kwargs)
    assert effective_norm_weight(model) is not None
    model.enable_compatibility_mode()
    assert effective_norm_weight(model) is None
    tokens = model.to_tokens(utterance())
    logits, cache = model.run_with_cache(tokens)
    a, b, true_diff = _true_and_pair(model, logits)
    components = cache.decompose_resid(layer=-1, pos_slice=-1)
    ours = cache.logit_attrs(components, tokens=a, incorrect_tokens=b, pos_slice=-1)
    theirs = ActivationCache(cache.cache_dict, model).logit_attrs(
        components, tokens=a, incorrect_tokens=b, pos_slice=-1
    )
    torch.testing.assert_close(ours, theirs)
    assert float(ours.sum()) == pytest.approx(true_diff, abs=1e-4)
