"""Position maps between clean and corrupted runs of different lengths."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from patching_helpers import PREFIX, SUFFIX, spoken, unequal_utterances

from slm_transformerlens.patching import PatchingError, PatchPair
from slm_transformerlens.patching.alignment import _resample
from slm_transformerlens.speech.inputs import Text


def test_equal_length_resample_is_the_identity(equal_pair: PatchPair) -> None:
    n = len(equal_pair.clean_tokens)
    assert len(equal_pair.corrupted_tokens) == n
    for direction in ("denoise", "noise"):
        assert torch.equal(equal_pair.position_map(direction), torch.eye(n))
        assert [s.position for s in equal_pair.slots(direction)] == list(range(n))
    assert equal_pair.diff_words == (2,)


@pytest.mark.parametrize("mode", ["last", "mean", "resample"])
def test_shared_words_after_the_diff_are_shifted(model, mode: str) -> None:
    clean, corrupted = unequal_utterances()
    pair = PatchPair.from_inputs(model, clean, corrupted, span_mode=mode)
    shift = len(pair.corrupted_tokens) - len(pair.clean_tokens)
    assert shift == 3
    girl = pair.clean_spans.set_index("word")
    fox = pair.corrupted_spans.set_index("word")
    denoise = pair.position_map("denoise")  # [corrupted, clean]
    # every token of every shared word after the spoken word maps p (clean) -> p + 3 (corrupted)
    for word in ("who", "lived", "village"):
        for p in range(int(girl.loc[word, "start"]), int(girl.loc[word, "stop"])):
            assert denoise[p + shift, p] == 1.0
            assert denoise[p + shift].sum() == 1.0
    # BOS, [Text] marker and the words before map to themselves
    for p in range(int(girl.loc["girl", "start"])):
        assert denoise[p, p] == 1.0
    c0, c1 = int(girl.loc["girl", "start"]), int(girl.loc["girl", "stop"])
    r0, r1 = int(fox.loc["fox", "start"]), int(fox.loc["fox", "stop"])
    block = denoise[r0:r1, c0:c1]
    if mode == "last":
        assert block[-1, -1] == 1.0 and block.sum() == 1.0  # only the last unit is patched
    elif mode == "mean":
        assert torch.allclose(block, torch.full((r1 - r0, c1 - c0), 1.0 / (c1 - c0)))
    else:
        assert block.argmax(dim=1).tolist() == _resample(r1 - r0, c1 - c0) == [0, 1, 1, 2, 2, 3, 3]
    diff_slots = [s for s in pair.slots("noise") if s.role == "diff"]
    expected = {"last": 1, "mean": 1, "resample": 4}[mode]
    assert len(diff_slots) == expected
    assert all(s.relative == "diff" and s.word == "girl" for s in diff_slots)


def test_resample_index_map_is_linear() -> None:
    assert _resample(4, 7) == [0, 2, 4, 6]
    assert _resample(1, 5) == [4]
    assert _resample(3, 3) == [0, 1, 2]


def test_written_word_replaced_by_spoken_word(model) -> None:
    clean = [Text(" the little girl who lived in a village")]
    corrupted = [PREFIX, spoken("girl", [3, 5, 7, 9, 11]), SUFFIX]
    pair = PatchPair.from_inputs(model, clean, corrupted, span_mode="last")
    assert pair.diff_words == (2,)
    frame = pair.slots_frame("denoise")
    diff = frame[frame["role"] == "diff"].iloc[0]
    assert diff["token"] == "[Hu11]" and diff["source_token"] == "▁girl"
    # the [Speech] marker before the spoken word and the [Text] marker after it have no counterpart
    labels = pair.corrupted_labels
    unmapped = [labels[p] for p in range(len(labels)) if pair.position_map("denoise")[p].sum() == 0]
    assert unmapped == ["[Speech]", "[Hu3]", "[Hu5]", "[Hu7]", "[Hu9]", "[Text]"]
    who = frame[frame["word"] == "who"]
    assert (who["relative"] == "after").all()
    assert (who["corrupted_position"] - who["clean_position"] == 6).all()


def test_from_tokens_equals_from_inputs(model) -> None:
    clean, corrupted = unequal_utterances()
    a = model.encode(clean)
    b = model.encode(corrupted)
    by_hand = PatchPair.from_tokens(a.tokens, b.tokens, a.word_spans, b.word_spans, span_mode="mean")
    encoded = PatchPair.from_inputs(model, clean, corrupted, span_mode="mean")
    for direction in ("denoise", "noise"):
        assert torch.equal(by_hand.position_map(direction), encoded.position_map(direction))
    assert by_hand.clean_labels[0] == str(int(a.tokens[0, 0]))  # no tokenizer: ids as labels


def test_word_positions(model) -> None:
    clean, corrupted = unequal_utterances()
    pair = PatchPair.from_inputs(model, clean, corrupted)
    assert pair.word_position(3, "corrupted", "before") == pair.word_position(3, "clean", "before") + 3
    assert pair.word_position(2, "clean", "last") == pair.word_position(2, "clean", "first") + 3
    assert pair.word_tokens(3, "clean") == pair.word_tokens(3, "corrupted")
    with pytest.raises(PatchingError, match="no tokens"):
        pair.word_position(99, "clean")


def test_bad_inputs_are_named(model) -> None:
    clean, corrupted = unequal_utterances()
    with pytest.raises(PatchingError, match="span_mode"):
        PatchPair.from_inputs(model, clean, corrupted, span_mode="middle")  # type: ignore[arg-type]
    with pytest.raises(PatchingError, match="words"):
        PatchPair.from_inputs(model, clean, [PREFIX, spoken("fox", [1, 2]), Text(" who lived")])
    a = model.encode([clean, corrupted])
    with pytest.raises(PatchingError, match="utterances"):
        PatchPair.from_tokens(a.tokens[0], a.tokens[1], a.word_spans, a.word_spans)
    with pytest.raises(PatchingError, match="batch size"):
        PatchPair.from_tokens(a.tokens, a.tokens[1], a.word_spans[a.word_spans.utterance == 0], a.word_spans)
    with pytest.raises(PatchingError, match="lacks columns"):
        PatchPair.from_tokens(a.tokens[0], a.tokens[0], pd.DataFrame({"word": ["x"]}), a.word_spans)
