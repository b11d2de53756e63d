"""Batched word-aligned sweeps against TransformerLens' patching functions and invariants."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from patching_helpers import unequal_utterances
from transformer_lens import patching as tl_patching

from slm_transformerlens.patching import (
    LensMetric,
    LogitDiff,
    PatchingError,
    PatchPair,
    TokenLogProb,
    activation_patch_sweep,
    text_token_id,
)
from slm_transformerlens.patching.metrics import FinalNormLens

ATOL = 1e-5
TL_SWEEPS = {
    "resid_pre": tl_patching.get_act_patch_resid_pre,
    "attn_out": tl_patching.get_act_patch_attn_out,
    "mlp_out": tl_patching.get_act_patch_mlp_out,
    "head_out": tl_patching.get_act_patch_attn_head_out_by_pos,
    "head_out_all_pos": tl_patching.get_act_patch_attn_head_out_all_pos,
}


def next_word_metric(pair: PatchPair, model) -> LogitDiff:
    """Logit difference of the word after the spoken word: its first token vs the top corrupted guess."""
    word = 3
    positions = {run: pair.word_position(word, run, "before") for run in ("clean", "corrupted")}
    answer = pair.word_tokens(word, "clean")[0]
    return LogitDiff(answer, text_token_id(model, "the"), positions)


def tl_metric(metric, run: str):
    return lambda logits: metric(logits, {}, run)[0]


def tl_resid_post(model, tokens, cache, metric):
    return tl_patching.generic_activation_patch(
        model,
        tokens,
        cache,
        metric,
        tl_patching.layer_pos_patch_setter,
        "resid_post",
        index_axis_names=("layer", "pos"),
    )


@pytest.fixture(scope="module")
def equal_sweep(model, equal_pair):
    metric = next_word_metric(equal_pair, model)
    result = activation_patch_sweep(
        model,
        equal_pair,
        metric,
        components=(
            "resid_pre",
            "resid_mid",
            "resid_post",
            "attn_out",
            "mlp_out",
            "head_out",
            "head_out_all_pos",
        ),
        direction="both",
        causal_pruning=False,
        progress=False,
    )
    return metric, result


@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_equals_transformer_lens_on_an_equal_length_pair(model, equal_pair, equal_sweep, direction) -> None:
    metric, result = equal_sweep
    target, source = ("corrupted", "clean") if direction == "denoise" else ("clean", "corrupted")
    _, source_cache = model.run_with_cache(equal_pair.tokens(source)[None])
    tokens = equal_pair.tokens(target)[None]
    checked = 0
    # every sweep when denoising; noising is the same code with the runs swapped: two sweeps suffice
    components = list(TL_SWEEPS) if direction == "denoise" else ["resid_pre", "head_out_all_pos"]
    for component in components:
        sweep = TL_SWEEPS[component]
        ours = result.grid(metric.name, component, direction=direction)
        if component == "head_out":  # TL's by-position head sweep on a subset of cells (one forward each)
            cells = pd.DataFrame(
                [(layer, pos, head) for layer in (0, 2) for pos in range(4, 12) for head in range(4)],
                columns=["layer", "pos", "head"],
            )
            expected = tl_patching.generic_activation_patch(
                model,
                tokens,
                source_cache,
                tl_metric(metric, target),
                tl_patching.layer_pos_head_vector_patch_setter,
                "z",
                index_df=cells,
            )
            ours = ours[tuple(torch.as_tensor(cells[c].to_numpy().copy()) for c in ("layer", "pos", "head"))]
        else:
            expected = sweep(model, tokens, source_cache, tl_metric(metric, target))
        assert ours.shape == expected.shape, component
        torch.testing.assert_close(ours, expected, atol=ATOL, rtol=0)
        assert expected.abs().max() > 0.05, f"{component}: the sweep should move the metric"
        checked += 1
    # resid_post: TransformerLens' generic patcher at hook_resid_post
    torch.testing.assert_close(
        result.grid(metric.name, "resid_post", direction=direction),
        tl_resid_post(model, tokens, source_cache, tl_metric(metric, target)),
        atol=ATOL,
        rtol=0,
    )
    assert checked == len(components)


def test_resid_mid_patches_the_residual_stream(model, equal_pair, equal_sweep) -> None:
    """resid_mid feeds only a position-wise MLP, so patching it equals patching resid_post (TL as the peer).

    (The bridge's ``hook_resid_mid`` is ``ln2.hook_in``: writing THERE changes only the MLP input, which is
    why our resid_mid patch is written at ``hook_attn_out``; TL's ``get_act_patch_resid_mid`` on a 4.3
    bridge therefore differs.)
    """
    metric, result = equal_sweep
    _, clean_cache = model.run_with_cache(equal_pair.clean_tokens[None])
    expected = tl_resid_post(
        model, equal_pair.corrupted_tokens[None], clean_cache, tl_metric(metric, "corrupted")
    )
    torch.testing.assert_close(result.grid(metric.name, "resid_mid"), expected, atol=ATOL, rtol=0)


def test_clean_into_clean_changes_nothing(model, equal_pair) -> None:
    pair = PatchPair.from_tokens(
        equal_pair.clean_tokens, equal_pair.clean_tokens, equal_pair.clean_spans, equal_pair.clean_spans
    )
    assert pair.diff_words == ()
    metric = next_word_metric(pair, model)
    result = activation_patch_sweep(
        model,
        pair,
        metric,
        components=("resid_pre", "resid_mid", "attn_out", "mlp_out", "head_out"),
        progress=False,
        causal_pruning=False,
    )
    baseline = float(result.baselines["value"].iloc[0])
    assert (result.frame["value"] - baseline).abs().max() < ATOL
    assert result.frame["normalized"].isna().all()  # clean == corrupted: no scale


def test_all_positions_at_layer_zero_reproduce_the_other_run(model, equal_pair) -> None:
    metric = next_word_metric(equal_pair, model)
    result = activation_patch_sweep(
        model,
        equal_pair,
        metric,
        components=("resid_pre",),
        layers=[0],
        direction="both",
        all_positions=True,
        progress=False,
    )
    base = result.baselines.set_index("run")["value"]
    assert abs(base["clean"] - base["corrupted"]) > 0.05
    frame = result.frame.set_index("direction")
    assert frame.loc["denoise", "value"] == pytest.approx(base["clean"], abs=ATOL)
    assert frame.loc["denoise", "normalized"] == pytest.approx(1.0, abs=1e-4)
    assert frame.loc["noise", "value"] == pytest.approx(base["corrupted"], abs=ATOL)
    assert frame.loc["noise", "normalized"] == pytest.approx(0.0, abs=1e-4)


def hand_loop(model, pair: PatchPair, direction: str, metric, component: str) -> torch.Tensor:
    """One forward per (layer, slot) with a plain hook that writes the mean of the aligned source vectors."""
    target, source = ("corrupted", "clean") if direction == "denoise" else ("clean", "corrupted")
    name = {"resid_pre": "hook_resid_pre", "mlp_out": "hook_mlp_out"}[component]
    _, cache = model.run_with_cache(pair.tokens(source)[None])
    slots = pair.slots(direction)
    out = torch.zeros(model.cfg.n_layers, len(slots))
    for layer in range(model.cfg.n_layers):
        clean_act = cache[f"blocks.{layer}.{name}"][0]
        for slot in slots:

            def hook(act, hook, slot=slot, clean_act=clean_act):
                act = act.clone()
                for t, sources in zip(slot.targets, slot.sources, strict=True):
                    act[:, t] = clean_act[list(sources)].mean(dim=0)
                return act

            logits = model.run_with_hooks(
                pair.tokens(target)[None], fwd_hooks=[(f"blocks.{layer}.{name}", hook)]
            )
            out[layer, slot.index] = metric(logits, {}, target)[0]
    return out


@pytest.mark.parametrize("mode", ["last", "mean", "resample"])
def test_unequal_lengths_match_a_one_forward_per_patch_loop(model, mode: str) -> None:
    clean, corrupted = unequal_utterances()
    pair = PatchPair.from_inputs(model, clean, corrupted, span_mode=mode)
    metric = next_word_metric(pair, model)
    component = "mlp_out" if mode == "resample" else "resid_pre"
    result = activation_patch_sweep(
        model, pair, metric, components=(component,), direction="both", progress=False, max_batch=16
    )
    for direction in ("denoise", "noise"):
        expected = hand_loop(model, pair, direction, metric, component)
        ours = result.grid(metric.name, component, direction=direction)
        torch.testing.assert_close(ours, expected, atol=ATOL, rtol=0)
    pruned = result.frame[result.frame["pruned"]]
    read = {d: metric.positions(r)[0] for d, r in (("denoise", "corrupted"), ("noise", "clean"))}
    assert len(pruned) > 0
    assert all(row.position > read[row.direction] for row in pruned.itertuples())


def test_batching_and_pruning_do_not_change_values(model) -> None:
    clean, corrupted = unequal_utterances()
    pair = PatchPair.from_inputs(model, clean, corrupted, span_mode="resample")
    metric = next_word_metric(pair, model)
    kwargs = dict(
        components=("resid_mid", "head_out"), layers=[1, 2], heads=[0, 3], direction="both", progress=False
    )
    a = activation_patch_sweep(model, pair, metric, **kwargs)
    b = activation_patch_sweep(model, pair, metric, causal_pruning=False, max_batch=5, **kwargs)
    c = activation_patch_sweep(model, pair, metric, memory_mb=0.01, **kwargs)  # one patch per forward
    d = activation_patch_sweep(
        model, pair, metric, share_prefix=False, **kwargs
    )  # every row runs every layer
    assert a.frame["pruned"].any() and not b.frame["pruned"].any()
    assert (a.frame["value"] - b.frame["value"]).abs().max() < ATOL
    assert (a.frame["value"] - c.frame["value"]).abs().max() < ATOL
    assert (a.frame["value"] - d.frame["value"]).abs().max() < ATOL
    # the shared prefix with every component, a lens read below some patched layers, and user hooks
    lens = LensMetric(model, 1, text_token_id(model, "girl"), metric.position, kind="logprob")
    every = dict(components=("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "head_out"))
    e = activation_patch_sweep(model, pair, [metric, lens], progress=False, **every)
    f = activation_patch_sweep(model, pair, [metric, lens], progress=False, share_prefix=False, **every)
    assert (e.frame["value"] - f.frame["value"]).abs().max() < ATOL


def test_composes_with_user_hooks(model, equal_pair) -> None:
    """A user hook (ablating head 1 of layer 0) stays active in our sweep exactly as in TransformerLens' loop."""
    metric = next_word_metric(equal_pair, model)

    def ablate(z, hook):
        z = z.clone()
        z[:, :, 1] = 0.0
        return z

    plain = activation_patch_sweep(model, equal_pair, metric, components=("resid_pre",), progress=False)
    with model.hooks(fwd_hooks=[("blocks.0.attn.hook_z", ablate)]):
        ours = activation_patch_sweep(model, equal_pair, metric, components=("resid_pre",), progress=False)
        _, cache = model.run_with_cache(equal_pair.clean_tokens[None])
        expected = tl_patching.get_act_patch_resid_pre(
            model, equal_pair.corrupted_tokens[None], cache, tl_metric(metric, "corrupted")
        )
    torch.testing.assert_close(ours.grid(metric.name, "resid_pre"), expected, atol=ATOL, rtol=0)
    assert (ours.frame["value"] - plain.frame["value"]).abs().max() > 1e-3
    assert not model.blocks[0].attn.o.hook_in.fwd_hooks  # our hooks and the user's are gone


def test_lens_metric_reads_the_transcription_layer(model) -> None:
    clean, corrupted = unequal_utterances()
    pair = PatchPair.from_inputs(model, clean, corrupted, span_mode="last")
    girl = text_token_id(model, "girl")
    where = {run: pair.word_position(2, run, "last") for run in ("clean", "corrupted")}
    lens_layer = 1
    metrics = [
        LensMetric(model, lens_layer, girl, where, kind="logprob"),
        LensMetric(FinalNormLens(model), lens_layer, girl, where, kind="prob", name="plain_prob"),
        LensMetric(model, lens_layer, girl, where, kind="rank", vocab=model.speech_vocab.text_token_ids),
    ]
    result = activation_patch_sweep(
        model, pair, metrics, components=("resid_pre", "attn_out"), direction="denoise", progress=False
    )
    frame = result.frame
    later = frame[frame["layer"] > lens_layer]
    assert later["pruned"].all() and (later["normalized"].abs() < 1e-9).all()
    # the project's LogitLens and the fallback read the same numbers
    logprob = frame[frame["metric"] == metrics[0].name]["value"].to_numpy()
    prob = frame[frame["metric"] == "plain_prob"]["value"].to_numpy()
    assert torch.allclose(torch.tensor(logprob).exp(), torch.tensor(prob), atol=1e-6)
    # reference: one forward per patch, the residual read from a cache through ln_final + unembed
    _, clean_cache = model.run_with_cache(pair.clean_tokens[None])
    slots = {s.index: s for s in pair.slots("denoise")}
    for row in frame[(frame["metric"] == metrics[0].name) & (frame["layer"] <= lens_layer)].itertuples():
        slot = slots[row.slot]
        name = (
            f"blocks.{row.layer}.hook_resid_pre"
            if row.component == "resid_pre"
            else f"blocks.{row.layer}.hook_attn_out"
        )

        def hook(act, hook, slot=slot, name=name):
            act = act.clone()
            act[:, slot.targets[0]] = clean_cache[name][0, slot.sources[0][0]]
            return act

        with model.hooks(fwd_hooks=[(name, hook)]):
            _, cache = model.run_with_cache(pair.corrupted_tokens[None])
        resid = cache[f"blocks.{lens_layer}.hook_resid_post"][0, where["corrupted"]]
        logits = model.unembed.original_component(model.ln_final.original_component(resid))
        assert row.value == pytest.approx(float(logits.detach().log_softmax(-1)[girl]), abs=ATOL)
    ranks = frame[frame["metric"] == metrics[2].name]["value"]
    assert (ranks >= 0).all() and (ranks == ranks.round()).all()


def test_bad_arguments_are_named(model, equal_pair) -> None:
    metric = next_word_metric(equal_pair, model)
    with pytest.raises(PatchingError, match="unknown components"):
        activation_patch_sweep(model, equal_pair, metric, components=("resid_middle",))
    with pytest.raises(PatchingError, match="out of range"):
        activation_patch_sweep(model, equal_pair, metric, layers=[7])
    with pytest.raises(PatchingError, match="unique"):
        activation_patch_sweep(model, equal_pair, [metric, metric])
    with pytest.raises(PatchingError, match="direction"):
        equal_pair.slots("sideways")  # type: ignore[arg-type]
    model.train()
    try:
        with pytest.raises(PatchingError, match="eval mode"):
            activation_patch_sweep(model, equal_pair, metric)
    finally:
        model.eval()


def test_result_frame_is_tidy(equal_sweep) -> None:
    metric, result = equal_sweep
    frame = result.frame
    expected = {
        "direction",
        "component",
        "layer",
        "head",
        "slot",
        "position",
        "token",
        "word",
        "metric",
        "value",
        "normalized",
        "pruned",
        "method",
        "clean_position",
        "corrupted_position",
    }
    assert expected <= set(frame.columns)
    keys = ["direction", "component", "layer", "head", "slot", "metric"]
    assert not frame.duplicated(keys).any()
    assert frame["layer"].dtype.kind == "i" and frame["value"].dtype.kind == "f"
    assert set(frame.loc[frame["component"] == "resid_pre", "head"]) == {-1}
    girl = frame[(frame["word"] == "fox") & (frame["direction"] == "denoise")]
    assert set(girl["role"]) == {"diff"} and set(girl["token"]) == {"[Hu11]", "[Hu12]", "[Hu13]", "[Hu14]"}
    assert (TokenLogProb(5, 3).positions("clean") == [3]) and metric.name == "logit_diff"
