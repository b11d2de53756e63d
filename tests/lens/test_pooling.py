"""Span pooling (``max`` / ``any``): the implementation equals ranks computed by hand from the lens."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from slm_transformerlens.lens import (
    LogitLens,
    TargetConfig,
    WordTargetResolver,
    lens_table,
    transcription_table,
)


def _hand_logits(model, tokens, spans, word, layer):
    """Text-view logits at every position of ``word``'s span, straight from the cache and the lens."""
    _, cache = model.run_with_cache(tokens)
    span = spans[spans.word == word].iloc[0]
    positions = list(range(int(span.start), int(span.stop)))
    logits = LogitLens(model).logits(cache[f"blocks.{layer}.hook_resid_post"][0, positions], layer).detach()
    text = model.speech_vocab.group_mask("text")
    return logits.masked_fill(~text, float("-inf"))  # [positions, vocab]


@pytest.mark.parametrize("chunk_size", [1, 3, 128])
def test_max_and_any_pooled_ranks_equal_hand_computation(spiritlm_model, utterance, chunk_size):
    tokens, spans = utterance
    tok = spiritlm_model.tokenizer
    red = tok(" red", add_special_tokens=False).input_ids[0]
    the = tok(" the", add_special_tokens=False).input_ids[0]
    targets = {"red": [red], "pair": [red, the]}  # a set: best member
    layer = spiritlm_model.cfg.n_layers - 1
    frames = {
        mode: lens_table(
            spiritlm_model,
            tokens,
            word_spans=spans,
            positions=mode,
            modalities=["speech"],
            layers=[layer],
            views=["text"],
            top_k=4,
            targets=targets,
            chunk_size=chunk_size,
        )
        for mode in ("max", "any", "last")
    }
    for word in ("red", "riding"):
        text = _hand_logits(spiritlm_model, tokens, spans, word, layer)  # [P, V]
        n_pos = text.shape[0]
        assert n_pos > 1
        pooled = text.amax(0)
        per_pos = {t: (text > text[:, [t]]).sum(-1) for t in (red, the)}  # rank at each position
        row_max = frames["max"][frames["max"].word == word].iloc[0]
        row_any = frames["any"][frames["any"].word == word].iloc[0]
        row_last = frames["last"][frames["last"].word == word].iloc[0]
        assert row_max["n_members"] == row_any["n_members"] == n_pos
        # max: rank of the target in the per-token max over the span
        assert row_max["rank_red"] == int((pooled > pooled[red]).sum())
        assert row_max["rank_pair"] == min(int((pooled > pooled[t]).sum()) for t in (red, the))
        assert row_max["top_ids"] == torch.topk(pooled, 4).indices.tolist()
        p = torch.softmax(pooled, -1)
        np.testing.assert_allclose(row_max["prob_pair"], float(p[red] + p[the]), rtol=1e-5)
        # any: the best rank over the span's positions, probability the max over positions
        assert row_any["rank_red"] == int(per_pos[red].min())
        assert row_any["rank_pair"] == int(torch.minimum(per_pos[red], per_pos[the]).min())
        probs = torch.softmax(text, -1)
        np.testing.assert_allclose(row_any["prob_red"], float(probs[:, red].max()), rtol=1e-5)
        # its descriptive columns are the last position's
        assert row_any["top_ids"] == row_last["top_ids"]
        np.testing.assert_allclose(row_any["entropy"], row_last["entropy"], rtol=1e-5)
        assert row_any["rank_red"] <= row_last["rank_red"]


def test_transcription_table_accepts_pooling_and_variants(spiritlm_model, utterance):
    tokens, spans = utterance
    config = TargetConfig(case_variants=("upper", "capitalize"), space_variants=True)
    resolver = WordTargetResolver(spiritlm_model.tokenizer, config)
    assert len(resolver("red").ids) >= 2
    any_table = transcription_table(
        spiritlm_model, [(tokens, spans)], positions="any", target_config=config, progress=False
    )
    last_table = transcription_table(
        spiritlm_model, [(tokens, spans)], positions="last", target_config=config, progress=False
    )
    merged = any_table.merge(last_table, on=["word", "layer", "view"], suffixes=("_any", "_last"))
    assert len(merged) == len(any_table)
    assert (merged["rank_any"] <= merged["rank_last"]).all()  # the last position is one of the span's


def test_pooling_needs_groups_and_pool_together(spiritlm_model):
    from slm_transformerlens.lens import LensError, read_vectors

    vocab = spiritlm_model.speech_vocab
    with pytest.raises(LensError, match="span pooling"):
        read_vectors(
            LogitLens(spiritlm_model),
            torch.zeros(2, spiritlm_model.cfg.d_model),
            0,
            views={"full": None},
            group_labels=vocab.group_labels,
            n_groups=len(vocab.group_names),
            pool="max",
        )
