"""Interleaving plans (slamkit Poisson spans) and hypothesis properties of the word-span mapping."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from speech_helpers import load_fixture, sims_tokenizer, sims_vocab, spiritlm_tokenizer, spiritlm_vocab

from slm_transformerlens.errors import SpeechInputError
from slm_transformerlens.speech import (
    Speech,
    Text,
    encode_utterances,
    family_string,
    interleave,
    plan_mask,
    poisson_span_mask,
)


def _slamkit_select_spans_poisson(array_size: int, lambda_param: float, eta: float) -> np.ndarray:
    """slamkit's select_spans_poisson (global numpy RNG), for comparison."""
    total_to_select = math.ceil(array_size * eta)
    mask = np.zeros(array_size, dtype=int)
    eligible_indices = set(range(array_size))
    selected_count = 0
    while selected_count < total_to_select and eligible_indices:
        start_index = np.random.choice(list(eligible_indices))
        span_length = np.random.poisson(lambda_param)
        end_index = min(start_index + span_length, array_size)
        if np.any(mask[start_index:end_index] == 1):
            continue
        mask[start_index:end_index] = 1
        selected_count += end_index - start_index
        for i in range(start_index, end_index):
            eligible_indices.discard(i)
        if end_index < array_size:
            eligible_indices.discard(end_index)
    return mask


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n_words", [1, 7, 40, 200])
def test_poisson_matches_slamkit(seed: int, n_words: int) -> None:
    np.random.seed(seed)
    expected = _slamkit_select_spans_poisson(n_words, 10, 0.3).astype(bool)
    got = poisson_span_mask(n_words, mean_span=10, speech_fraction=0.3, seed=seed)
    np.testing.assert_array_equal(got, expected)
    # every drawn mask reaches slamkit's target fraction (none of these draws exhausts the eligible words)
    assert got.sum() >= math.ceil(0.3 * n_words)


def test_plan_masks() -> None:
    assert plan_mask(3, "speech").tolist() == [True] * 3
    assert plan_mask(3, "text").tolist() == [False] * 3
    assert plan_mask(3, [1, 0, 1]).tolist() == [True, False, True]
    with pytest.raises(SpeechInputError, match="3 words"):
        plan_mask(3, [True])
    with pytest.raises(SpeechInputError, match="unknown plan"):
        plan_mask(3, "random")


def test_interleave_real_alignment() -> None:
    _, _, aligned, _ = load_fixture("librivox_0880")
    n_frames = 2.99 / 0.04
    rng = np.random.default_rng(0)
    speech = Speech.from_frames(rng.integers(0, 500, size=int(n_frames)), words=aligned)
    segments = interleave(speech, [True, True, False, False, True, False, True, True])
    assert [type(s).__name__ for s in segments] == ["Speech", "Text", "Speech", "Text", "Speech"]
    assert segments[1].words == (" not", " an") and segments[1].times == ((0.56, 1.13), (1.13, 1.3))
    vocab, tokenizer = sims_vocab("qwen2"), sims_tokenizer("qwen2")
    batch = encode_utterances(segments, vocab, tokenizer)
    assert batch.word_spans["word"].tolist() == [w for w, _, _ in aligned]
    assert batch.tokens[0].tolist() == tokenizer(family_string(segments, vocab))["input_ids"]
    # all-speech plan: the same units per word as the un-interleaved Speech
    whole = encode_utterances(speech, vocab, tokenizer).word_spans
    planned = encode_utterances(interleave(speech, "speech"), vocab, tokenizer).word_spans
    assert (
        whole[["start", "stop"]].values.tolist() != []
        and whole["n_units"].tolist() == planned["n_units"].tolist()
    )
    with pytest.raises(SpeechInputError, match="word alignment"):
        interleave(Speech(units=[1, 2]), "speech")


# --------------------------------------------------------------------------- properties
_WORDS = ["once", "upon", "a", "time", "little", "girl", "red", "hood", "forest", "wolf"]


@st.composite
def aligned_speech(draw: st.DrawFn) -> tuple[Speech, list[bool]]:
    n_words = draw(st.integers(1, 8))
    frames: list[int] = []
    words = []
    boundaries: list[int] = []
    t = 0
    for _ in range(n_words):
        gap = draw(st.integers(0, 3))
        length = draw(st.integers(1, 6))
        frames += draw(st.lists(st.integers(0, 499), min_size=gap + length, max_size=gap + length))
        start, end = t + gap, t + gap + length
        boundaries.append(end)
        # a word from the start of its first frame to the end of its last frame owns >= 1 unit
        words.append((draw(st.sampled_from(_WORDS)), start * 0.04, end * 0.04))
        t = end
    frames += draw(st.lists(st.integers(0, 499), max_size=3))
    for end in boundaries:  # de-duplication must not merge a word's last unit into the next frame's
        if end < len(frames) and frames[end] == frames[end - 1]:
            frames[end] = (frames[end] + 1) % 500
    mask = draw(st.lists(st.booleans(), min_size=n_words, max_size=n_words))
    return Speech.from_frames(frames, words=words), mask


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=aligned_speech(), family=st.sampled_from(["qwen2", "llama3", "spiritlm"]))
def test_span_mapping_properties(case: tuple[Speech, list[bool]], family: str) -> None:
    speech, mask = case
    if family == "spiritlm":
        vocab, tokenizer = spiritlm_vocab(False), spiritlm_tokenizer(False)
    else:
        vocab, tokenizer = sims_vocab(family), sims_tokenizer(family)
    segments = interleave(speech, mask)
    batch = encode_utterances([segments, [speech]], vocab, tokenizer, on_empty_word="error")
    tokens = batch.tokens.tolist()
    # expected units of each word: from the segment that holds it (a planned slice may start with a unit
    # that, in the whole utterance, ended exactly on the boundary of a preceding text word)
    planned_units: dict[int, list[int]] = {}
    index = 0
    for segment in segments:
        if isinstance(segment, Text):
            index += len(segment.words)
            continue
        for lo, hi in segment.word_unit_ranges("error"):
            planned_units[index] = list(segment.units[lo:hi])
            index += 1
    whole_units = {
        i: list(speech.units[lo:hi]) for i, (lo, hi) in enumerate(speech.word_unit_ranges("error"))
    }
    for utterance, spans in batch.word_spans.groupby("utterance"):
        expected_units = planned_units if utterance == 0 else whole_units
        assert spans["word_index"].tolist() == list(range(len(speech.words or ())))
        previous_stop = 0
        for row in spans.itertuples():
            assert row.n_tokens > 0 and row.stop - row.start == row.n_tokens and row.last == row.stop - 1
            assert row.start >= previous_stop  # ordered, never overlapping
            previous_stop = row.stop
            assert row.stop <= batch.lengths[utterance]
            ids = tokens[utterance][row.start : row.stop]
            if row.modality == "speech":
                assert [vocab.unit_of(i) for i in ids] == expected_units[row.word_index]
            else:
                assert tokenizer.decode(ids).strip() == row.word
        # the planned utterance keeps each word's modality
        if utterance == 0:
            assert spans["modality"].tolist() == ["speech" if m else "text" for m in mask]
    reference = tokenizer(family_string(segments, vocab))["input_ids"]
    assert tokens[0][: len(reference)] == reference


@settings(max_examples=40, deadline=None)
@given(
    words=st.lists(
        st.sampled_from([*_WORDS, "Hello,", "world!", "It's", "x-ray", "42"]), min_size=1, max_size=12
    )
)
def test_text_spans_decode_back(words: list[str]) -> None:
    vocab, tokenizer = sims_vocab("qwen2"), sims_tokenizer("qwen2")
    batch = encode_utterances(Text(words), vocab, tokenizer)
    spans = batch.word_spans
    assert spans["word"].tolist() == words
    for row in spans.itertuples():
        assert tokenizer.decode(batch.tokens[0, row.start : row.stop].tolist()) == " " + row.word
    assert batch.tokens[0].tolist() == tokenizer("<text>" + "".join(" " + w for w in words))["input_ids"]
