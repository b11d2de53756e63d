"""Encoding: our ids equal tokenizer(family string) for SIMS (Qwen, Llama-3), SpiritLM (Base, Expressive)
and generic vocabularies; span table, padding, and every bad-input error."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from speech_helpers import sims_tokenizer, sims_vocab, spiritlm_tokenizer, spiritlm_vocab

from slm_transformerlens.errors import SpeechInputError, VocabularyError
from slm_transformerlens.speech import (
    Speech,
    Text,
    encode_utterances,
    family_string,
    is_speech_input,
    timed_tokens,
)
from slm_transformerlens.vocab import SpeechVocab

SPEECH = Speech(
    units=[12, 7, 3, 9, 4], durations=[1, 2, 1, 3, 2], words=[("there", 0.0, 0.12), ("was", 0.16, 0.36)]
)
UTTERANCE = [Text("Once upon a"), SPEECH, Text("time, I think.")]


def _reference(tokenizer: Any, string: str) -> list[int]:
    return list(tokenizer(string, add_special_tokens=True)["input_ids"])


@pytest.mark.parametrize("base", ["qwen2", "llama3"])
def test_sims_strings_and_ids(base: str) -> None:
    vocab, tokenizer = sims_vocab(base), sims_tokenizer(base)
    assert (
        family_string(UTTERANCE, vocab)
        == "<text> Once upon a<speech><Un12><Un7><Un3><Un9><Un4><text> time, I think."
    )
    assert family_string([SPEECH], vocab) == "<Un12><Un7><Un3><Un9><Un4>"  # slamkit: bare units, no marker
    assert family_string([Text("hi there")], vocab) == "<text> hi there"
    for utterance in (UTTERANCE, [SPEECH], [Text("hi there")], [SPEECH, Text("and then"), SPEECH]):
        batch = encode_utterances([utterance], vocab, tokenizer)
        assert batch.tokens[0].tolist() == _reference(tokenizer, family_string(utterance, vocab))
    if base == "llama3":
        assert (
            encode_utterances(SPEECH, vocab, tokenizer).tokens[0, 0].item()
            == tokenizer.bos_token_id
            == 128000
        )
    assert (
        encode_utterances(SPEECH, vocab, tokenizer, speech_only_marker=True).tokens[0, int(base == "llama3")]
        == (vocab.markers["speech"])
    )


def test_sims_word_spans() -> None:
    vocab, tokenizer = sims_vocab("qwen2"), sims_tokenizer("qwen2")
    batch = encode_utterances(UTTERANCE, vocab, tokenizer)
    spans = batch.word_spans
    assert spans["word"].tolist() == ["Once", "upon", "a", "there", "was", "time,", "I", "think."]
    assert spans["modality"].tolist() == ["text"] * 3 + ["speech"] * 2 + ["text"] * 3
    tokens = batch.tokens[0].tolist()
    there, was = spans.iloc[3], spans.iloc[4]
    assert [vocab.unit_of(t) for t in tokens[there.start : there.stop]] == [12, 7]
    assert [vocab.unit_of(t) for t in tokens[was.start : was.stop]] == [3, 9, 4]
    assert was["last"] == was["stop"] - 1 and vocab.unit_of(tokens[was["last"]]) == 4
    assert tokenizer.decode(tokens[spans.iloc[5].start : spans.iloc[5].stop]) == " time,"
    assert (spans["start_s"].iloc[3:5] == [0.0, 0.16]).all() and spans["start_s"].iloc[:3].isna().all()


@pytest.mark.parametrize("expressive", [False, True])
def test_spiritlm_strings_and_ids(expressive: bool) -> None:
    vocab, tokenizer = spiritlm_vocab(expressive), spiritlm_tokenizer(expressive)
    speech = SPEECH
    if expressive:
        speech = Speech(
            units=SPEECH.units,
            durations=SPEECH.durations,
            words=SPEECH.words,
            pitch=timed_tokens([3, 3, 5, 5], 12.5, dedup=True),
            style=timed_tokens([7], 1, dedup=False),
        )
    utterance = [Text("Once upon a"), speech, Text("time, I think.")]
    string = family_string(utterance, vocab)
    units = "[Hu12][Hu7][Hu3][Hu9][Hu4]" if not expressive else "[St7][Pi3][Hu12][Hu7][Hu3][Pi5][Hu9][Hu4]"
    assert string == f"[Text] once upon a[Speech]{units}[Text] time i think"
    assert family_string([speech], vocab) == f"[Speech]{units}"  # SpiritLM always starts with a marker
    for u in (utterance, [speech], [Text("Hello, World!")]):
        batch = encode_utterances(u, vocab, tokenizer)
        assert batch.tokens[0].tolist() == _reference(tokenizer, family_string(u, vocab))
        assert batch.tokens[0, 0].item() == tokenizer.bos_token_id == 1
    spans = encode_utterances(utterance, vocab, tokenizer).word_spans
    tokens = encode_utterances(utterance, vocab, tokenizer).tokens[0].tolist()
    was = spans.iloc[4]
    inside = tokenizer.convert_ids_to_tokens(tokens[was.start : was.stop])
    assert inside == (["[Hu3]", "[Hu9]", "[Hu4]"] if not expressive else ["[Hu3]", "[Pi5]", "[Hu9]", "[Hu4]"])
    assert tokenizer.convert_ids_to_tokens(tokens[was["last"]]) == "[Hu4]"
    assert spans.iloc[5]["token_text"] == " time"


def test_generic_family_without_markers() -> None:
    tokenizer = sims_tokenizer("qwen2")
    vocab = SpeechVocab.from_tokenizer(
        tokenizer, vocab_size=len(tokenizer), family="generic", unit_format="<Un{}>"
    )
    assert family_string(UTTERANCE, vocab) == " Once upon a<Un12><Un7><Un3><Un9><Un4> time, I think."
    batch = encode_utterances(UTTERANCE, vocab, tokenizer)
    assert batch.tokens[0].tolist() == _reference(tokenizer, family_string(UTTERANCE, vocab))


def test_batch_padding_and_mask() -> None:
    vocab, tokenizer = sims_vocab("llama3"), sims_tokenizer("llama3")
    batch = encode_utterances([UTTERANCE, [SPEECH]], vocab, tokenizer, pad_id=0)
    single = encode_utterances([SPEECH], vocab, tokenizer)
    n = single.tokens.shape[1]
    assert batch.lengths == [batch.tokens.shape[1], n]
    assert batch.tokens[1, :n].tolist() == single.tokens[0].tolist()
    assert (batch.tokens[1, n:] == 0).all() and (batch.attention_mask[1, n:] == 0).all()
    assert batch.word_spans["utterance"].tolist() == [0] * 8 + [1] * 2
    assert batch.tokens.dtype == torch.long


def test_is_speech_input() -> None:
    assert is_speech_input(SPEECH) and is_speech_input(Text("a"))
    assert is_speech_input([Text("a"), SPEECH]) and is_speech_input([[SPEECH], [Text("a")]])
    assert not is_speech_input("hello") and not is_speech_input([]) and not is_speech_input([1, 2])
    assert not is_speech_input(torch.tensor([1, 2])) and not is_speech_input([[SPEECH], "x"])
    with pytest.raises(SpeechInputError, match="expected a Speech"):
        encode_utterances("hello", sims_vocab("qwen2"), sims_tokenizer("qwen2"))


def test_unit_out_of_range() -> None:
    with pytest.raises(SpeechInputError, match="unit 500 is out of range"):
        encode_utterances(Speech(units=[1, 500]), sims_vocab("qwen2"), sims_tokenizer("qwen2"))


@pytest.mark.parametrize("text", ["hello <speech> world", "say <Un12> now", "a <|endoftext|> b", "x<text>"])
def test_marker_tokens_inside_text(text: str) -> None:
    with pytest.raises(SpeechInputError, match="must be plain text"):
        encode_utterances(Text(text), sims_vocab("qwen2"), sims_tokenizer("qwen2"))


def test_spiritlm_marker_inside_text() -> None:
    with pytest.raises(SpeechInputError, match="must be plain text"):
        encode_utterances(Text("go [Speech] now"), spiritlm_vocab(False), spiritlm_tokenizer(False))
    with pytest.raises(SpeechInputError, match="must be plain text"):
        encode_utterances(Text("go [Hu3] now"), spiritlm_vocab(False), spiritlm_tokenizer(False))


def test_longer_than_context() -> None:
    with pytest.raises(SpeechInputError, match="utterance 1 is 16 tokens long but the model's context is 8"):
        encode_utterances([[SPEECH], UTTERANCE], sims_vocab("qwen2"), sims_tokenizer("qwen2"), n_ctx=8)
    encode_utterances([SPEECH], sims_vocab("qwen2"), sims_tokenizer("qwen2"), n_ctx=5)


def test_word_without_units_policies() -> None:
    speech = Speech(
        units=[1, 2, 3], durations=[1, 2, 1], words=[("a", 0.0, 0.04), ("uh", 0.05, 0.07), ("b", 0.08, 0.16)]
    )
    vocab, tokenizer = sims_vocab("qwen2"), sims_tokenizer("qwen2")
    with pytest.warns(UserWarning, match=r"\['uh'\] own no token"):
        spans = encode_utterances(speech, vocab, tokenizer).word_spans
    assert spans["word"].tolist() == ["a", "b"] and spans["word_index"].tolist() == [0, 2]
    with pytest.raises(SpeechInputError, match="owns no speech unit"):
        encode_utterances(speech, vocab, tokenizer, on_empty_word="error")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kept = encode_utterances(speech, vocab, tokenizer, on_empty_word="keep").word_spans
    assert kept["n_tokens"].tolist() == [1, 0, 2] and kept.iloc[1]["last"] == -1


def test_punctuation_only_word_in_spiritlm() -> None:
    with pytest.warns(UserWarning, match="own no token"):
        spans = encode_utterances(
            Text("yes -- no"), spiritlm_vocab(False), spiritlm_tokenizer(False)
        ).word_spans
    assert spans["word"].tolist() == ["yes", "no"]


def test_wrong_tokenizer_is_a_vocabulary_error() -> None:
    vocab = sims_vocab("qwen2")
    with pytest.raises(VocabularyError):
        encode_utterances(SPEECH, vocab, sims_tokenizer("llama3"))


def test_pitch_without_pitch_vocab() -> None:
    speech = Speech(units=[1, 2], pitch=[(3, 0.0)])
    with pytest.raises(SpeechInputError, match="no pitch group"):
        encode_utterances(speech, spiritlm_vocab(False), spiritlm_tokenizer(False))


class _SlowTokenizer:
    """A tokenizer without offsets, to exercise the prefix re-tokenization path."""

    is_fast = False

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.all_special_tokens = inner.all_special_tokens
        self.pad_token_id = inner.pad_token_id

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": self.inner(text, add_special_tokens=add_special_tokens)["input_ids"]}


@pytest.mark.parametrize("family", ["sims", "spiritlm"])
def test_slow_tokenizer_path_matches_fast(family: str) -> None:
    if family == "sims":
        vocab, tokenizer = sims_vocab("llama3"), sims_tokenizer("llama3")
    else:
        vocab, tokenizer = spiritlm_vocab(False), spiritlm_tokenizer(False)
    fast = encode_utterances([UTTERANCE, [SPEECH]], vocab, tokenizer, pad_id=0)
    slow = encode_utterances([UTTERANCE, [SPEECH]], vocab, _SlowTokenizer(tokenizer), pad_id=0)
    assert torch.equal(fast.tokens, slow.tokens)
    assert fast.word_spans.equals(slow.word_spans)
