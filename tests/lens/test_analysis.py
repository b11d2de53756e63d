"""lens_table and the transcription metrics: tidy tables whose numbers match direct lens read-outs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from slm_transformerlens.lens import (
    LogitLens,
    TargetConfig,
    WordTargetResolver,
    lens_table,
    peak_layers,
    summarize_transcription,
    transcription_table,
    wilson_interval,
)
from slm_transformerlens.testing import base_tokenizer_dir


def test_lens_table_rows_and_columns(spiritlm_model, utterance, tmp_path):
    tokens, spans = utterance
    vocab = spiritlm_model.speech_vocab
    target = spiritlm_model.tokenizer(" red", add_special_tokens=False).input_ids[:1]
    df = lens_table(
        spiritlm_model,
        tokens,
        word_spans=spans,
        positions="last",
        layers=[0, -1],
        sites=["resid_pre", "resid_post"],
        top_k=3,
        targets={"red": target},
    )
    assert len(df) == len(spans) * 2 * 2 * 3  # words x layers x sites x views
    assert set(df["view"]) == {"full", "text", "speech"}
    assert sorted(df["layer"].unique()) == [0, spiritlm_model.cfg.n_layers - 1]
    speech_rows = df[df.view == "speech"]
    assert speech_rows["top_tokens"].map(lambda ts: all(t.startswith("[Hu") for t in ts)).all()
    assert speech_rows["rank_red"].isna().all()  # a text target is not in the speech view
    full = df[df.view == "full"]
    masses = full[[f"mass_{g}" for g in vocab.group_names]].sum(axis=1)
    np.testing.assert_allclose(masses, 1.0, atol=1e-5)
    np.testing.assert_allclose(df[df.view == "text"]["mass_text"], 1.0, atol=1e-5)
    # the numbers are the lens' own: rank of " red" at the last unit of "red", last layer, text view
    last = spiritlm_model.cfg.n_layers - 1
    _, cache = spiritlm_model.run_with_cache(tokens)
    pos = int(spans.loc[spans.word == "red", "stop"].iloc[0]) - 1
    logits = LogitLens(spiritlm_model).logits(cache[f"blocks.{last}.hook_resid_post"][0, pos], last)
    text_logits = logits.masked_fill(~vocab.group_mask("text"), float("-inf"))
    row = df[(df.word == "red") & (df.layer == last) & (df.site == "resid_post") & (df.view == "text")].iloc[
        0
    ]
    assert row["rank_red"] == int((text_logits > text_logits[target[0]]).sum())
    assert row["top_ids"][0] == int(text_logits.argmax())
    df.to_parquet(tmp_path / "lens.parquet")  # parquet-friendly
    assert len(pd.read_parquet(tmp_path / "lens.parquet")) == len(df)


def test_lens_table_bf16_model_reads_in_fp32(spiritlm_checkpoint, utterance):
    import slm_transformerlens as slt

    tokens, spans = utterance
    model = slt.load(spiritlm_checkpoint, dtype=torch.bfloat16, progress=False)
    lens = LogitLens(model)
    _, cache = model.run_with_cache(tokens)
    h = cache["blocks.1.hook_resid_post"]
    assert h.dtype == torch.bfloat16
    got = lens.logits(h, 1)
    assert got.dtype == torch.float32
    w = model.W_U.detach().float()
    norm = model.ln_final._original_component
    x = h.float()
    expected = (
        x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon) * norm.weight.float()
    ) @ w
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    df = lens_table(model, tokens, word_spans=spans, layers=[1], views=["text"])
    assert df["entropy"].dtype == np.float64 and len(df) == len(spans)


def test_word_targets_follow_the_tokenizer():
    from transformers import AutoTokenizer

    qwen = AutoTokenizer.from_pretrained(str(base_tokenizer_dir("qwen2")))
    resolver = WordTargetResolver(qwen)
    assert qwen.convert_ids_to_tokens(resolver("forest").first_id) == "Ġforest"
    assert resolver("Forest.").first_id != resolver("forest").first_id
    glued = WordTargetResolver(qwen, TargetConfig(leading_space=False))
    assert qwen.convert_ids_to_tokens(glued("forest").first_id) == "forest"
    cased = WordTargetResolver(qwen, TargetConfig(case_variants=("capitalize",)))
    assert qwen.convert_ids_to_tokens(list(cased("forest").ids)) == ["Ġforest", "ĠForest"]
    prefixes = WordTargetResolver(qwen, TargetConfig(prefixes=True))
    pieces = qwen.convert_ids_to_tokens(list(prefixes("forest").ids))
    assert pieces[0] == "Ġforest" and {"Ġf", "Ġfo", "Ġfor", "Ġfore"} <= set(pieces)
    assert all("Ġforest".startswith(p) for p in pieces)
    with pytest.raises(ValueError, match="unknown case variants"):
        TargetConfig(case_variants=("shout",))


def test_word_targets_sentencepiece(spiritlm_model):
    tok = spiritlm_model.tokenizer
    resolver = WordTargetResolver(tok)
    expected = tok("the girl", add_special_tokens=False).input_ids  # SentencePiece adds the dummy prefix
    assert resolver("girl").first_id == expected[-1]
    assert tok.convert_ids_to_tokens(resolver("girl").first_id).startswith("▁")


def test_wilson_interval_known_values():
    low, high = wilson_interval(5, 10, 0.95)
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    low, high = wilson_interval(np.array([0, 10]), np.array([10, 10]))
    assert low[0] == pytest.approx(0.0, abs=1e-12) and high[1] == pytest.approx(1.0) and 0 < high[0] < 0.35


def test_transcription_table_and_summary(spiritlm_model, utterance):
    tokens, spans = utterance
    data = [(tokens, spans), {"tokens": tokens, "word_spans": spans}]
    table = transcription_table(spiritlm_model, data, progress=False, views=("text", "full"))
    n_layers = spiritlm_model.cfg.n_layers
    speech_words = spans[spans.modality == "speech"]
    assert len(table) == 2 * len(speech_words) * n_layers * 2
    assert set(table["utterance"]) == {0, 1}
    # next word of "riding" is the text word "hood"; of "red" it is "riding"
    nxt = table.drop_duplicates("word").set_index("word")["next_word"]
    assert nxt["red"] == "riding" and nxt["riding"] == "hood"
    # ranks are the lens' own
    resolver = WordTargetResolver(spiritlm_model.tokenizer)
    _, cache = spiritlm_model.run_with_cache(tokens)
    vocab = spiritlm_model.speech_vocab
    for word in ("red", "riding"):
        pos = int(spans.loc[spans.word == word, "stop"].iloc[0]) - 1
        logits = LogitLens(spiritlm_model).logits(cache["blocks.1.hook_resid_post"][0, pos], 1)
        text = logits.masked_fill(~vocab.group_mask("text"), float("-inf"))
        row = table[
            (table.word == word) & (table.layer == 1) & (table.view == "text") & (table.utterance == 0)
        ].iloc[0]
        target = resolver(word).first_id
        assert row["target_id"] == target
        assert row["rank"] == int((text > text[target]).sum())
        assert bool(row["hit10"]) == (row["rank"] < 10)
    summary = summarize_transcription(table)
    assert set(summary["metric"]) == {"transcription", "next_word"}
    one = summary[(summary.metric == "transcription") & (summary.k == 10) & (summary.view == "text")]
    assert (one["n"] == 2 * len(speech_words)).all()
    expected_rate = table[(table.view == "text")].groupby("layer")["hit10"].mean()
    np.testing.assert_allclose(
        one.set_index("layer")["rate"].sort_index(), expected_rate.sort_index().astype(float)
    )
    assert ((one["ci_low"] <= one["rate"]) & (one["rate"] <= one["ci_high"])).all()
    peaks = peak_layers(summary)
    best = one.loc[one["rate"].idxmax()]
    row = peaks[(peaks.metric == "transcription") & (peaks.k == 10) & (peaks.view == "text")].iloc[0]
    assert row["peak_rate"] == best["rate"]
