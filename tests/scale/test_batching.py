"""Batched analysis: grouping by length, padding, and results equal to one utterance at a time."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
import torch

from slm_transformerlens.knowledge.scoring import sequence_log_likelihoods
from slm_transformerlens.lens import LensError, length_batches, pad_batches, transcription_table

from .conftest import speech_utterances, write_unit_files

FLOAT_COLUMNS = ("prob", "next_prob", "entropy")


def test_length_batches_cover_every_item_once_under_the_budget() -> None:
    lengths = [5, 40, 7, 7, 100, 3, 12, 12, 12, 1]
    batches = length_batches(lengths, 30)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        assert len(batch) == 1 or len(batch) * longest <= 30
    assert [4] in batches  # longer than the budget: a batch of its own
    with pytest.raises(LensError, match="batch_tokens=0"):
        length_batches(lengths, 0)


def test_pad_batches_renumbers_spans_and_masks_padding(spiritlm_model, tmp_path) -> None:
    utterances = speech_utterances(spiritlm_model, write_unit_files(tmp_path, 3, seed=1))
    encoded = [spiritlm_model.encode(u) for u in utterances]
    joined, source = pad_batches(encoded, pad_id=0)
    assert source == [0, 1, 2]
    assert joined.lengths == [b.lengths[0] for b in encoded]
    for row, batch in enumerate(encoded):
        n = batch.lengths[0]
        assert torch.equal(joined.tokens[row, :n], batch.tokens[0, :n])
        spans = joined.word_spans[joined.word_spans["utterance"] == row].reset_index(drop=True)
        pd.testing.assert_frame_equal(
            spans.drop(columns="utterance"), batch.word_spans.drop(columns="utterance").reset_index(drop=True)
        )


def assert_same_table(one: pd.DataFrame, batched: pd.DataFrame) -> None:
    """Identical rows, order, ranks and ids; float columns within 1e-5."""
    assert len(one) == len(batched) > 0
    floats = [c for c in one.columns if c in FLOAT_COLUMNS or c.startswith("mass_")]
    pd.testing.assert_frame_equal(
        one.drop(columns=[*floats, "top_probs"]), batched.drop(columns=[*floats, "top_probs"])
    )
    for column in floats:
        np.testing.assert_allclose(one[column].to_numpy(float), batched[column].to_numpy(float), atol=1e-5)
    np.testing.assert_allclose(np.stack(one["top_probs"]), np.stack(batched["top_probs"]), atol=1e-5)


@pytest.mark.parametrize("positions", ["last", "mean", "first", "max", "any"])
def test_batched_table_equals_one_at_a_time(spiritlm_model, tmp_path, positions: str) -> None:
    utterances = speech_utterances(spiritlm_model, write_unit_files(tmp_path, 10, seed=2, max_words=8))
    encoded = [spiritlm_model.encode(u) for u in utterances]
    assert len({b.lengths[0] for b in encoded}) > 3  # mixed lengths
    kwargs = {"positions": positions, "progress": False}
    one = transcription_table(spiritlm_model, encoded, **kwargs)
    batched = transcription_table(spiritlm_model, encoded, batch_tokens=64, **kwargs)
    assert_same_table(one, batched)
    assert sorted(one["utterance"].unique()) == list(range(10))


def test_batched_knowledge_likelihoods_equal_one_at_a_time(spiritlm_model) -> None:
    generator = torch.Generator().manual_seed(0)
    sequences = [torch.randint(1, 900, (n,), generator=generator) for n in (5, 17, 9, 30, 9, 2)]
    scored = [torch.ones(len(s), dtype=torch.bool) for s in sequences]
    one = sequence_log_likelihoods(spiritlm_model, sequences, scored, batch_size=1)
    batched = sequence_log_likelihoods(spiritlm_model, sequences, scored, batch_tokens=64)
    torch.testing.assert_close(batched[0], one[0], atol=1e-5, rtol=0)
    assert torch.equal(batched[1], one[1])


@pytest.mark.slow
def test_batched_analysis_of_64_utterances_is_3x_faster(spiritlm_model, tmp_path) -> None:
    utterances = speech_utterances(spiritlm_model, write_unit_files(tmp_path, 64, seed=3))
    encoded = [spiritlm_model.encode(u) for u in utterances]
    transcription_table(spiritlm_model, encoded[:2], progress=False, batch_tokens=4096)  # warm up
    start = time.perf_counter()
    one = transcription_table(spiritlm_model, encoded, progress=False)
    one_s = time.perf_counter() - start
    start = time.perf_counter()
    batched = transcription_table(spiritlm_model, encoded, progress=False, batch_tokens=4096)
    batched_s = time.perf_counter() - start
    assert len(one) == len(batched)
    assert one_s / batched_s >= 3.0, f"batched {batched_s:.2f}s vs one at a time {one_s:.2f}s"
