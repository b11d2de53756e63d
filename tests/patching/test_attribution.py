"""Attribution patching: a gradient screen that must agree with real patching where one component dominates."""

from __future__ import annotations

import pytest
import torch
from patching_helpers import unequal_utterances

import slm_transformerlens as slt
from slm_transformerlens.patching import (
    LensMetric,
    LogitDiff,
    PatchingError,
    PatchPair,
    activation_patch_sweep,
    attribution_patch_sweep,
    text_token_id,
)
from slm_transformerlens.testing import make_spiritlm_checkpoint

DOMINANT = (1, 2)  # (layer, head)


@pytest.fixture(scope="module")
def one_head_model(tmp_path_factory: pytest.TempPathFactory):
    """Every attention head writes almost nothing (x0.02) except head 2 of layer 1."""
    model = slt.load(
        make_spiritlm_checkpoint(tmp_path_factory.mktemp("one-head"), n_layers=3, seed=3), progress=False
    )
    d_head = model.cfg.d_head
    with torch.no_grad():
        for layer, block in enumerate(model.original_model.model.layers):
            weight = block.self_attn.o_proj.weight
            for head in range(model.cfg.n_heads):
                if (layer, head) != DOMINANT:
                    weight[:, head * d_head : (head + 1) * d_head] *= 0.02
    return model


def test_agrees_with_activation_patching_on_a_dominant_head(one_head_model) -> None:
    model = one_head_model
    pair = PatchPair.from_inputs(model, *unequal_utterances(), span_mode="last")
    positions = {run: pair.word_position(3, run, "before") for run in ("clean", "corrupted")}
    metric = LogitDiff(pair.word_tokens(3, "clean")[0], text_token_id(model, "the"), positions)
    kwargs = dict(components=("head_out_all_pos",), direction="both")
    real = activation_patch_sweep(model, pair, metric, progress=False, **kwargs)
    estimate = attribution_patch_sweep(model, pair, metric, **kwargs)
    for direction in ("denoise", "noise"):
        base = float(
            real.baselines.set_index("run").loc["corrupted" if direction == "denoise" else "clean", "value"]
        )
        effect = real.grid(metric.name, "head_out_all_pos", direction=direction) - base
        guess = estimate.grid(metric.name, "head_out_all_pos", direction=direction) - base
        assert effect.abs().max() > 0.05
        top = divmod(int(effect.abs().argmax()), model.cfg.n_heads)
        assert top == DOMINANT
        assert divmod(int(guess.abs().argmax()), model.cfg.n_heads) == DOMINANT
        assert torch.sign(effect[DOMINANT]) == torch.sign(guess[DOMINANT])
        # ranking: the dominant head is well ahead of the rest in both
        rest = effect.abs().flatten().sort(descending=True).values[1]
        rest_guess = guess.abs().flatten().sort(descending=True).values[1]
        assert effect[DOMINANT].abs() > 3 * rest and guess[DOMINANT].abs() > 3 * rest_guess


def test_first_order_estimate_is_exact_for_a_last_layer_linear_path(model, equal_pair) -> None:
    """mlp_out of the last layer enters the logits through the final norm only: for a tiny change the
    estimate and the real patch agree; generally they correlate across the sweep."""
    positions = {run: equal_pair.word_position(3, run, "before") for run in ("clean", "corrupted")}
    metric = LogitDiff(equal_pair.word_tokens(3, "clean")[0], text_token_id(model, "the"), positions)
    components = ("resid_pre", "attn_out", "mlp_out", "resid_mid", "head_out")
    real = activation_patch_sweep(model, equal_pair, metric, components=components, progress=False)
    estimate = attribution_patch_sweep(model, equal_pair, metric, components=components)
    assert (estimate.frame["method"] == "attribution").all()
    keys = ["component", "layer", "head", "slot"]
    merged = real.frame.merge(estimate.frame, on=keys, suffixes=("_real", "_est"))
    assert len(merged) == len(real.frame)
    base = float(real.baselines.set_index("run").loc["corrupted", "value"])
    moved = merged[(merged["value_real"] - base).abs() > 1e-6]
    # every position whose patch does nothing is estimated as nothing (same token, same activation)
    still = merged[(merged["value_real"] - base).abs() <= 1e-7]
    assert (still["value_est"] - base).abs().max() < 1e-5
    corr = torch.corrcoef(torch.tensor(moved[["value_real", "value_est"]].to_numpy().T))[0, 1]
    assert corr > 0.5


def test_rank_metrics_are_refused(model, equal_pair) -> None:
    where = equal_pair.word_position(2, "clean")
    rank = LensMetric(model, 1, 5, where, kind="rank")
    with pytest.raises(PatchingError, match="not differentiable"):
        attribution_patch_sweep(model, equal_pair, rank)
    lens = LensMetric(model, 1, 5, where, kind="logprob")
    result = attribution_patch_sweep(model, equal_pair, lens, components=("resid_pre", "head_out_all_pos"))
    later = result.frame[result.frame["layer"] > 1]
    assert (later["value"] - later["value"].iloc[0]).abs().max() == 0.0  # no gradient from above layer 1
    assert result.frame[result.frame["layer"] <= 1]["value"].std() > 0
