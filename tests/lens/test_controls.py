"""Chance controls: a model built to transcribe perfectly scores ~1 and its controls sit at their analytic level."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from slm_transformerlens.lens import (
    WordFilter,
    WordTargetResolver,
    cluster_bootstrap,
    frequency_prior_hits,
    shuffled_partners,
    summarize_transcription,
    transcription_table,
    wilson_interval,
)
from tests.conftest import distinct_words

N_TYPES, N_UTTERANCES, WORDS_PER_UTTERANCE, UNITS_PER_WORD = 12, 10, 6, 3


@pytest.fixture(scope="module")
def perfect(spiritlm_checkpoint):
    """A model whose unit embeddings ARE the spoken word's text embedding (read at resid_pre of block 0).

    Text unembedding rows are the unit-normalised text embeddings and the final norm's weight is 1, so the
    text-view logit of token ``v`` at a unit of word ``w`` is ``cos(e_v, e_target(w)) / rms``: the target is
    the arg-max, every other text token is ranked by a random cosine.
    """
    import slm_transformerlens as slt

    model = slt.load(spiritlm_checkpoint, progress=False)
    vocab, hf = model.speech_vocab, model.original_model
    resolver = WordTargetResolver(model.tokenizer)
    words = distinct_words(resolver, N_TYPES)
    text = vocab.group_mask("text")
    with torch.no_grad():
        emb = hf.get_input_embeddings().weight
        unit_rows = emb / emb.norm(dim=-1, keepdim=True)
        hf.get_output_embeddings().weight[text] = unit_rows[text]
        hf.model.norm.weight.fill_(1.0)
        for i, word in enumerate(words):
            ids = vocab.unit_token_ids(torch.arange(i * UNITS_PER_WORD, (i + 1) * UNITS_PER_WORD))
            emb[ids] = unit_rows[resolver(word).first_id]
    rng = np.random.default_rng(0)
    order = np.repeat(np.arange(N_TYPES), N_UTTERANCES * WORDS_PER_UTTERANCE // N_TYPES)
    rng.shuffle(order)
    data = []
    for u in range(N_UTTERANCES):
        ids, rows = [1, vocab.markers["speech"]], []
        for j, t in enumerate(order[u * WORDS_PER_UTTERANCE : (u + 1) * WORDS_PER_UTTERANCE]):
            start = len(ids)
            units = torch.arange(t * UNITS_PER_WORD, (t + 1) * UNITS_PER_WORD)
            ids += vocab.unit_token_ids(units).tolist()
            rows.append((0, j, words[t], "speech", start, len(ids)))
        spans = pd.DataFrame(rows, columns=["utterance", "word_index", "word", "modality", "start", "stop"])
        data.append((torch.tensor([ids]), spans))
    return model, data, int(text.sum())


@pytest.mark.parametrize("positions", ["last", "max", "any"])
def test_perfect_transcriber_scores_one_and_controls_sit_at_chance(perfect, positions):
    model, data, n_text = perfect
    table = transcription_table(
        model, data, layers=[0], sites=["resid_pre"], views=["text"], positions=positions, progress=False
    )
    n = N_UTTERANCES * WORDS_PER_UTTERANCE
    assert len(table) == n
    summary = summarize_transcription(table, n_boot=200)
    tr = summary[summary.metric == "transcription"].set_index("k")
    assert tr.loc[1, "rate"] == 1.0 and tr.loc[10, "rate"] == 1.0
    # shuffled: partners are other word types, whose target is never the (unique) top-1 -> exactly 0 at k=1;
    # at k=10 the partner's target must be among the 9 runners-up, ranked by random cosines: 9 / (n_text - 1)
    # (for 'any' every unit of a word has the same input vector at resid_pre 0: the same bound holds)
    assert tr.loc[1, "shuffled_rate"] == 0.0 and tr.loc[1, "shuffled_sd"] == 0.0
    assert (tr["n_permutations"] == 10).all()
    chance = 9 / (n_text - 1)
    assert tr.loc[10, "shuffled_rate"] <= chance + 3 * np.sqrt(chance * (1 - chance) / n) + 1 / n
    # frequency prior: 12 equally frequent types with distinct targets -> min(k, 12) / 12 exactly; a single
    # guess list is no chance level for a pooled read-out (several tries per word): NaN there
    for k in (1, 5, 10):
        if positions == "last":
            assert tr.loc[k, "prior_rate"] == pytest.approx(min(k, N_TYPES) / N_TYPES)
        else:
            assert np.isnan(tr.loc[k, "prior_rate"])
    # a rate of 1 has a degenerate cluster interval
    assert tr.loc[10, "cluster_low"] == tr.loc[10, "cluster_high"] == 1.0


def test_shuffled_partners_avoid_same_type_and_are_seeded():
    words = ["a", "b", "b", "c", "A", "d"]
    p = shuffled_partners(words, seed=3)
    assert (p == shuffled_partners(words, seed=3)).all()
    assert all(words[i].lower() != words[j].lower() for i, j in enumerate(p))
    assert (shuffled_partners(["x", "x"], seed=0) >= 0).all()  # nothing else to pair with: kept


def test_frequency_prior_by_hand():
    table = pd.DataFrame(
        {
            "utterance": [0, 0, 0, 1, 1],
            "word_index": [0, 1, 2, 0, 1],
            "word": ["the", "cat", "the", "the", "dog"],
            "rank": pd.array([0, 3, 1, 9, None], dtype="Int64"),
            "target_ids": [[5], [7, 8], [5], [5], [9]],
        }
    )
    hits = frequency_prior_hits(table, [1, 2])
    np.testing.assert_array_equal(hits[1], [1, 0, 1, 1, np.nan])  # top-1 = id 5 (3 words)
    np.testing.assert_array_equal(
        hits[2], [1, 1, 1, 1, np.nan]
    )  # top-2 = 5 and 7 (tie with 8, 9: smaller id)
    # a ranking from elsewhere (e.g. training-text frequencies) replaces the table's own
    given = frequency_prior_hits(table, [1, 2], ranking=[9, 7, 5])
    np.testing.assert_array_equal(given[1], [0, 0, 0, 0, np.nan])  # top-1 = id 9: only the rankless dog
    np.testing.assert_array_equal(given[2], [0, 1, 0, 0, np.nan])  # top-2 = 9 and 7


def test_cluster_bootstrap_is_wider_than_wilson_for_clustered_hits():
    # 20 utterances of 10 words: each utterance all-hit or all-miss -> effective n is 20, not 200
    hits = np.repeat(np.arange(20) % 2, 10).astype(float)
    clusters = np.repeat(np.arange(20), 10)
    low, high = cluster_bootstrap(hits, clusters, n_boot=2000, seed=0)
    w_low, w_high = wilson_interval(100, 200)
    assert low < 0.5 < high
    assert (high - low) > 2 * (w_high - w_low)
    assert cluster_bootstrap([1.0, 1.0], [0, 1]) == (1.0, 1.0)


def test_cluster_bootstrap_index_draws_are_the_classic_bootstrap():
    rng = np.random.default_rng(5)
    values = rng.random(300)  # any per-row values: their mean's interval
    clusters = rng.integers(0, 40, 300)
    # by hand: 40 cluster indices per resample, the ratio of summed values to summed rows
    _, index = np.unique(clusters, return_inverse=True)
    sums, counts = np.bincount(index, weights=values), np.bincount(index).astype(float)
    draws = np.random.default_rng(7).integers(0, 40, size=(500, 40))
    expected = np.percentile(sums[draws].sum(1) / counts[draws].sum(1), [2.5, 97.5])
    got = cluster_bootstrap(values, clusters, n_boot=500, seed=7, draw="indices")
    assert got == (float(expected[0]), float(expected[1]))  # bit for bit
    weights = cluster_bootstrap(values, clusters, n_boot=500, seed=7)  # the other stream, same bootstrap
    assert got != weights and np.allclose(got, weights, atol=0.02)


def test_word_filter_removes_stop_words_and_frequent_types():
    table = pd.DataFrame(
        {"utterance": [0, 0, 0, 1], "word_index": [0, 1, 2, 0], "word": ["The", "cat", "sat.", "cat"]}
    )
    assert WordFilter().keep(table).tolist() == [False, True, True, True]
    assert WordFilter(stop_words=(), most_frequent=1).keep(table).tolist() == [True, False, True, False]


@pytest.mark.parametrize("positions", ["last", "any"])
def test_perfect_transcriber_is_heard_at_its_whole_rate(perfect, positions):
    """Unit rows = word text embeddings: with another word's units the original target is gone, so
    heard = rate - swapped-audio rate is (almost) the whole rate."""
    from slm_transformerlens.lens import swapped_audio_table

    model, data, n_text = perfect
    kwargs = dict(layers=[0], sites=["resid_pre"], views=["text"], positions=positions, progress=False)
    table = transcription_table(model, data, **kwargs)
    swapped = swapped_audio_table(model, data, **kwargs)
    summary = summarize_transcription(table, swapped=swapped, n_boot=200)
    tr = summary[summary.metric == "transcription"].set_index("k")
    # top-1 is the donor word's target at every unit: the original target never is
    assert tr.loc[1, "swapped_rate"] == 0.0 and tr.loc[1, "heard"] == tr.loc[1, "rate"] == 1.0
    assert tr.loc[1, "heard_low"] == tr.loc[1, "heard_low_type"] == 1.0
    # top-10: the original target must be among the donor's 9 runners-up (random cosines), as shuffled
    chance = 9 / (n_text - 1)
    assert tr.loc[10, "heard"] >= 1 - chance - 3 * np.sqrt(chance / len(table)) - 0.02
