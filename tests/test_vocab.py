"""SpeechVocab: partitions, unit <-> id, serialisation, and malformed unit tokens."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoTokenizer

from slm_transformerlens import SpeechVocab, TokenRange, VocabularyError
from slm_transformerlens.checkpoints.tokenizers import slamkit_unit_tokens
from slm_transformerlens.testing import base_tokenizer_dir
from slm_transformerlens.vocab import find_numbered_tokens


@pytest.fixture(scope="module")
def qwen_sims_vocab() -> SpeechVocab:
    tokenizer = AutoTokenizer.from_pretrained(str(base_tokenizer_dir("qwen2")))
    base = len(tokenizer)
    tokenizer.add_tokens(slamkit_unit_tokens(500))
    return SpeechVocab.from_tokenizer(
        tokenizer,
        vocab_size=len(tokenizer) + 64,
        family="sims",
        unit_format="<Un{}>",
        marker_tokens={"speech": "<speech>", "text": "<text>"},
    ), base


def test_slamkit_layout_on_the_real_qwen_tokenizer(qwen_sims_vocab) -> None:
    vocab, base = qwen_sims_vocab
    assert vocab.unit_token_id(0) == base and vocab.unit_token_id(499) == base + 499
    assert vocab.marker_token_ids == {"speech": base + 500, "text": base + 501}
    assert vocab.unit_of(base + 17) == 17 and vocab.unit_of(5) is None
    assert torch.equal(vocab.speech_token_ids, torch.arange(base, base + 500))
    assert vocab.group_of(base + 502) == "padding" and vocab.group_of(151643) == "special"
    text = vocab.text_token_ids
    assert int(text.max()) < base and 151643 not in text.tolist()


def test_groups_partition_the_vocabulary(qwen_sims_vocab) -> None:
    vocab, _ = qwen_sims_vocab
    counts = torch.bincount(vocab.group_labels, minlength=len(vocab.group_names))
    assert int(counts.sum()) == vocab.vocab_size
    masks = torch.stack([vocab.group_mask(name) for name in vocab.group_names])
    assert bool((masks.sum(0) == 1).all())
    assert int(vocab.group_mask("speech").sum()) == 500 and int(vocab.group_mask("padding").sum()) == 64
    for token_id in (0, vocab.units.start, vocab.markers["text"], vocab.vocab_size - 1, 151643):
        assert vocab.group_names[int(vocab.group_labels[token_id])] == vocab.group_of(token_id)


def test_round_trip_through_json(qwen_sims_vocab) -> None:
    vocab, _ = qwen_sims_vocab
    data = json.loads(json.dumps(vocab.to_dict()))
    data["some_future_field"] = 1  # unknown keys are tolerated
    again = SpeechVocab.from_dict(data)
    assert again == vocab and again.fingerprint() == vocab.fingerprint()
    assert torch.equal(again.group_labels, vocab.group_labels)


def test_unit_out_of_range(qwen_sims_vocab) -> None:
    vocab, _ = qwen_sims_vocab
    with pytest.raises(VocabularyError, match=r"speech unit 500 is out of range.*0\.\.499"):
        vocab.unit_token_id(500)
    with pytest.raises(VocabularyError, match="speech unit -1"):
        vocab.unit_token_ids([3, -1])
    assert vocab.unit_token_ids([0, 2]).tolist() == [vocab.units.start, vocab.units.start + 2]


def test_duplicate_unit_tokens() -> None:
    class TwoIdsForOneUnit(dict):
        def items(self):  # a corrupt vocabulary: unit 1 under two ids
            return [("<Un0>", 10), ("<Un1>", 11), ("<Un1>", 12)]

    with pytest.raises(VocabularyError, match="unit 1 appears twice"):
        find_numbered_tokens(TwoIdsForOneUnit(), "<Un{}>")


def test_non_contiguous_unit_ids() -> None:
    with pytest.raises(VocabularyError, match="not contiguous"):
        find_numbered_tokens({"<Un0>": 10, "<Un1>": 11, "<Un2>": 40}, "<Un{}>")


def test_unit_numbers_with_gaps() -> None:
    with pytest.raises(VocabularyError, match=r"without gaps; missing \[1\]"):
        find_numbered_tokens({"<Un0>": 10, "<Un2>": 12}, "<Un{}>")


def test_leading_zero_numbers_are_not_units() -> None:
    assert find_numbered_tokens({"<Un00>": 1}, "<Un{}>") is None


def test_bad_format() -> None:
    with pytest.raises(VocabularyError, match="exactly one"):
        find_numbered_tokens({}, "<Un>")


def test_overlapping_groups_and_markers() -> None:
    with pytest.raises(VocabularyError, match="overlap"):
        SpeechVocab("x", 100, 100, TokenRange(10, 20), extra_groups={"pitch": TokenRange(15, 25)})
    with pytest.raises(VocabularyError, match="overlaps the speech group"):
        SpeechVocab("x", 100, 100, TokenRange(10, 20), markers={"text": 12})
    with pytest.raises(VocabularyError, match="embedding has only 90 rows"):
        SpeechVocab("x", 90, 100, TokenRange(10, 20))
