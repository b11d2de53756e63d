"""The logit lens against its peers: the model's own output, Hugging Face, TransformerLens 4.x."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from slm_transformerlens.lens import LensError, LogitLens, capture_residuals, plan_readouts, read_vectors
from slm_transformerlens.lens.readout import vocab_views


def _cache(model, tokens):
    names = [f"blocks.{i}.hook_resid_{s}" for i in range(model.cfg.n_layers) for s in ("pre", "mid", "post")]
    return model.run_with_cache(tokens, names_filter=names)


def test_last_layer_lens_is_the_model_output(spiritlm_model, utterance):
    tokens, _ = utterance
    logits, cache = _cache(spiritlm_model, tokens)
    last = spiritlm_model.cfg.n_layers - 1
    lens_logits = LogitLens(spiritlm_model).logits(cache[f"blocks.{last}.hook_resid_post"], last)
    assert lens_logits.dtype == torch.float32
    torch.testing.assert_close(lens_logits.log_softmax(-1), logits.float().log_softmax(-1), atol=1e-5, rtol=0)


def test_lens_equals_hand_written_hf_at_every_layer(spiritlm_model, spiritlm_checkpoint, utterance):
    tokens, _ = utterance
    hf = AutoModelForCausalLM.from_pretrained(str(spiritlm_checkpoint), dtype=torch.float32).eval()
    with torch.no_grad():
        hidden = hf(tokens, output_hidden_states=True).hidden_states
    _, cache = _cache(spiritlm_model, tokens)
    lens = LogitLens(spiritlm_model)
    n = spiritlm_model.cfg.n_layers
    for layer in range(n):
        with torch.no_grad():
            expected = hf.lm_head(hf.model.norm(hidden[layer]))
        got = lens.logits(cache[f"blocks.{layer}.hook_resid_pre"], layer, "resid_pre")
        torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-5)
        if layer < n - 1:  # resid_post l is hidden_states[l + 1] (the last one is already normed by HF)
            got_post = lens.logits(cache[f"blocks.{layer}.hook_resid_post"], layer, "resid_post")
            with torch.no_grad():
                expected_post = hf.lm_head(hf.model.norm(hidden[layer + 1]))
            torch.testing.assert_close(got_post, expected_post, atol=2e-5, rtol=1e-5)


def test_lens_equals_transformer_lens_logit_lens(spiritlm_model, utterance):
    from transformer_lens.tools.analysis.logit_lens import logit_lens

    tokens, _ = utterance
    _, cache = _cache(spiritlm_model, tokens)
    theirs = logit_lens(spiritlm_model, cache=cache, positions=None, return_type="log_probs")
    lens = LogitLens(spiritlm_model)
    n = spiritlm_model.cfg.n_layers
    ours = [
        lens.logits(cache[f"blocks.{i}.hook_resid_pre"], i, "resid_pre").log_softmax(-1) for i in range(n)
    ]
    ours.append(lens.logits(cache[f"blocks.{n - 1}.hook_resid_post"], n - 1).log_softmax(-1))
    assert theirs.labels[-1].startswith("final")
    torch.testing.assert_close(torch.stack(ours), theirs.values.float(), atol=2e-5, rtol=0)
    # per-row target ranks (full vocabulary): TransformerLens' ranks vs our streamed ones
    targets = tokens[:, 1:]
    theirs_r = logit_lens(
        spiritlm_model, cache=cache, positions=None, targets=torch.cat([targets, targets[:, :1]], 1)
    )
    plan = plan_readouts(tokens, mode="all")
    vectors = capture_residuals(spiritlm_model, tokens, plan, range(n), ["resid_pre"])
    row_targets = torch.cat([targets, targets[:, :1]], 1).reshape(-1, 1)
    vocab = spiritlm_model.speech_vocab
    for layer in range(n):
        read = read_vectors(
            lens,
            vectors[(layer, "resid_pre")],
            layer,
            "resid_pre",
            views=vocab_views(vocab, ["full"]),
            group_labels=vocab.group_labels,
            n_groups=len(vocab.group_names),
            targets={"t": row_targets},
        )
        assert torch.equal(read["full"].ranks["t"], theirs_r.readout.target_ranks[layer, 0, :, 0])


def test_streamed_reductions_match_brute_force(spiritlm_model, utterance):
    tokens, _ = utterance
    vocab = spiritlm_model.speech_vocab
    lens = LogitLens(spiritlm_model)
    _, cache = _cache(spiritlm_model, tokens)
    h = cache["blocks.1.hook_resid_mid"][0]
    text_ids = vocab.text_token_ids
    targets = torch.stack([text_ids[torch.arange(h.shape[0]) % 7], torch.full((h.shape[0],), -1)], 1)
    targets[0, 1] = text_ids[3]  # a 2-member target set on row 0
    views = vocab_views(vocab, ["full", "text", "speech"])
    out = read_vectors(
        lens,
        h,
        1,
        "resid_mid",
        views=views,
        group_labels=vocab.group_labels,
        n_groups=len(vocab.group_names),
        top_k=4,
        targets={"t": targets},
        chunk_size=3,
    )
    logits = lens.logits(h, 1, "resid_mid")
    for view, mask in views.items():
        restricted = logits if mask is None else logits.masked_fill(~mask, float("-inf"))
        p = restricted.softmax(-1)
        r = out[view]
        torch.testing.assert_close(r.top_probs, p.topk(4).values, atol=1e-6, rtol=1e-5)
        assert torch.equal(r.top_ids, p.topk(4).indices)
        for g, name in enumerate(vocab.group_names):
            torch.testing.assert_close(
                r.masses[:, g], (p * vocab.group_mask(name)).sum(-1), atol=1e-6, rtol=1e-5
            )
        ent = -(p * p.clamp_min(1e-45).log()).sum(-1)
        torch.testing.assert_close(r.entropy, ent, atol=1e-5, rtol=1e-5)
        for row in range(h.shape[0]):
            ids = [int(i) for i in targets[row] if i >= 0 and (mask is None or mask[i])]
            if not ids:
                assert r.ranks["t"][row] == -1 and torch.isnan(r.probs["t"][row])
                continue
            ranks = [int((restricted[row] > restricted[row, i]).sum()) for i in ids]
            assert int(r.ranks["t"][row]) == min(ranks)
            torch.testing.assert_close(r.probs["t"][row], p[row, ids].sum(), atol=1e-7, rtol=1e-5)
    # chunking does not change anything
    again = read_vectors(
        lens,
        h,
        1,
        "resid_mid",
        views=views,
        group_labels=vocab.group_labels,
        n_groups=len(vocab.group_names),
        top_k=4,
        targets={"t": targets},
        chunk_size=1000,
    )
    assert torch.equal(again["text"].ranks["t"], out["text"].ranks["t"])


@pytest.mark.parametrize("mode", ["last", "first", "every", "mean", "all"])
def test_capture_matches_cache(spiritlm_model, utterance, mode):
    tokens, spans = utterance
    _, cache = _cache(spiritlm_model, tokens)
    plan = plan_readouts(tokens, spans, mode=mode, modalities=None if mode == "all" else ["speech"])
    got = capture_residuals(spiritlm_model, tokens, plan, [0, 2], ["resid_post", "resid_mid"])
    speech = spans[spans.modality == "speech"]
    expected_rows = {
        "last": len(speech),
        "first": len(speech),
        "mean": len(speech),
        "every": int((speech.stop - speech.start).sum()),
        "all": tokens.shape[1],
    }[mode]
    assert plan.n_rows == expected_rows
    for (layer, site), vectors in got.items():
        full = cache[f"blocks.{layer}.hook_{site}"][0]
        for row in plan.rows.itertuples():
            if mode == "mean":
                span = speech[speech.word_index == row.word_index].iloc[0]
                expected = full[span.start : span.stop].mean(0)
                torch.testing.assert_close(vectors[row.Index], expected, atol=1e-6, rtol=1e-6)
            else:
                assert torch.equal(vectors[row.Index], full[row.position])
    if mode == "last":
        assert plan.rows["position"].tolist() == (speech.stop - 1).tolist()
    if mode == "all":  # positions inside word spans carry their word
        assert plan.rows.loc[spans.start[2], "word"] == "red"


def test_bad_requests_fail_clearly(spiritlm_model, utterance):
    tokens, spans = utterance
    lens = LogitLens(spiritlm_model)
    h = torch.zeros(2, spiritlm_model.cfg.d_model)
    with pytest.raises(LensError, match="unknown residual site"):
        lens.logits(h, 0, "resid_out")
    with pytest.raises(LensError, match="out of range"):
        lens.logits(h, 99)
    with pytest.raises(LensError, match="d_model"):
        lens.logits(torch.zeros(2, 3), 0)
    with pytest.raises(LensError, match="needs a word-span table"):
        plan_readouts(tokens, mode="last")
    with pytest.raises(LensError, match="lacks columns"):
        plan_readouts(tokens, spans.drop(columns=["stop"]))
    with pytest.raises(LensError, match="outside the token tensor"):
        plan_readouts(tokens[:, :3], spans)


def test_segment_and_masked_reductions_agree(spiritlm_model, utterance, monkeypatch):
    """The per-segment reductions (default) equal the masked fallback, custom scattered views included."""
    from slm_transformerlens.lens import readout

    tokens, _ = utterance
    vocab = spiritlm_model.speech_vocab
    lens = LogitLens(spiritlm_model)
    _, cache = _cache(spiritlm_model, tokens)
    h = cache["blocks.2.hook_resid_post"][0]
    text_ids = vocab.text_token_ids
    targets = torch.stack([text_ids[torch.arange(h.shape[0]) % 5], vocab.speech_token_ids[: h.shape[0]]], 1)
    odd = torch.zeros(vocab.vocab_size, dtype=torch.bool)
    odd[1::2] = True  # a view scattered over hundreds of segments: always the masked path
    views = {**vocab_views(vocab, ["full", "text", "speech"]), "odd": odd}
    kwargs = dict(
        views=views,
        group_labels=vocab.group_labels,
        n_groups=len(vocab.group_names),
        top_k=5,
        targets={"t": targets},
        chunk_size=4,
    )
    segmented = readout.read_vectors(lens, h, 2, **kwargs)
    monkeypatch.setattr(readout, "MAX_SEGMENTS", 0)
    masked = readout.read_vectors(lens, h, 2, **kwargs)
    for view in views:
        a, b = segmented[view], masked[view]
        assert torch.equal(a.top_ids, b.top_ids) and torch.equal(a.ranks["t"], b.ranks["t"])
        torch.testing.assert_close(a.top_probs, b.top_probs, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(a.entropy, b.entropy, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(a.masses, b.masses, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(a.probs["t"], b.probs["t"], atol=1e-7, rtol=1e-5, equal_nan=True)
    assert (segmented["speech"].ranks["t"] >= 0).all() and (segmented["text"].ranks["t"] >= 0).all()
