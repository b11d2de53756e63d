"""TransformerLens' own patching on speech pairs: exact on aligned pairs, refused on unequal lengths."""

from __future__ import annotations

import pytest
import torch
from transformer_lens import patching

from slm_transformerlens import Speech, Text
from slm_transformerlens.interop import InteropError
from slm_transformerlens.interop.tl_patching import check_tl_patching_pair


def _pair(units_clean: list[int], units_corrupted: list[int]) -> tuple[list, list]:
    def one(units: list[int]) -> list:
        return [
            Text("the little"),
            Speech(units=units, words=[(" girl", 0.0, 0.04 * len(units))]),
            Text("who lived"),
        ]

    return one(units_clean), one(units_corrupted)


def _metric(logits: torch.Tensor) -> torch.Tensor:
    return logits[0, -1, :].log_softmax(-1)[5]


def test_tl_patching_of_an_unequal_speech_pair_is_refused(spiritlm_model):
    model = spiritlm_model
    clean, corrupted = _pair([3, 5, 7, 9], [11, 12, 13, 14, 15, 16, 17])
    with pytest.raises(InteropError, match="PatchPair"):
        check_tl_patching_pair(model, clean, corrupted)
    clean_tokens, corrupted_tokens = model.to_tokens(clean), model.to_tokens(corrupted)
    _, clean_cache = model.run_with_cache(clean_tokens)
    with pytest.raises(InteropError, match="PatchPair"):
        patching.get_act_patch_resid_pre(model, corrupted_tokens, clean_cache, _metric)


def test_tl_patching_of_an_aligned_pair_runs_and_restores_the_clean_metric(spiritlm_model):
    model = spiritlm_model
    clean, corrupted = _pair([3, 5, 7, 9], [11, 12, 13, 14])
    clean_tokens, corrupted_tokens = check_tl_patching_pair(model, clean, corrupted)
    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(clean_tokens)
        result = patching.get_act_patch_resid_pre(model, corrupted_tokens, clean_cache, _metric)
        baseline = _metric(model(corrupted_tokens))
    assert result.shape == (model.cfg.n_layers, clean_tokens.shape[1])
    same = clean_tokens[0] == corrupted_tokens[0]
    assert bool(same.any()) and not bool(same.all())
    # at layer 0 a position whose token is the same in both runs patches nothing; the spoken word does
    torch.testing.assert_close(result[0, same], baseline.expand(int(same.sum())), atol=1e-5, rtol=1e-5)
    assert float((result[0, ~same] - baseline).abs().max()) > 1e-3
    assert float(_metric(clean_logits) - baseline) != 0.0
    # same length but the spoken word moved: refused
    shifted = [
        Text("the little"),
        Speech(units=[3, 5, 7, 9], words=[(" girl", 0.0, 0.16)]),
        Text("who lived"),
    ]
    moved = [Text("the"), Speech(units=[3, 5, 7, 9], words=[(" little", 0.0, 0.16)]), Text("girl who lived")]
    assert model.to_tokens(shifted).shape == model.to_tokens(moved).shape
    with pytest.raises(InteropError, match="different positions"):
        check_tl_patching_pair(model, shifted, moved)
