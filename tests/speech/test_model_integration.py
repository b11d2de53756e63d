"""HookedSLM accepts Speech / Text inputs: caches line up with the word-span table, batch == single."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import slm_transformerlens as slt
from slm_transformerlens.speech import Speech, Text, interleave, timed_tokens
from slm_transformerlens.testing import base_tokenizer_dir, make_sims_checkpoint, make_spiritlm_checkpoint

WORDS = [("once", 0.0, 0.12), ("upon", 0.12, 0.28), ("a", 0.28, 0.36), ("time", 0.4, 0.6)]
FRAMES = [3, 3, 9, 17, 17, 17, 4, 8, 8, 250, 11, 11, 11, 42, 42, 5]


@pytest.fixture(scope="module")
def sims_model(tmp_path_factory: pytest.TempPathFactory) -> Any:
    directory = make_sims_checkpoint(tmp_path_factory.mktemp("sims"), base="qwen2")
    return slt.load(directory, tokenizer=base_tokenizer_dir("qwen2"), progress=False)


@pytest.fixture(scope="module")
def sims_llama3_model(tmp_path_factory: pytest.TempPathFactory) -> Any:
    directory = make_sims_checkpoint(tmp_path_factory.mktemp("sims_llama3"), base="llama3")
    return slt.load(directory, tokenizer=base_tokenizer_dir("llama3"), progress=False)


@pytest.fixture(scope="module")
def spiritlm_model(tmp_path_factory: pytest.TempPathFactory) -> Any:
    directory: Path = make_spiritlm_checkpoint(tmp_path_factory.mktemp("spiritlm"), expressive=True)
    return slt.load(directory, progress=False)


def _utterances(expressive: bool) -> list[list[Speech | Text]]:
    extra = {
        "pitch": timed_tokens([1, 1, 2, 3], 12.5, dedup=True),
        "style": timed_tokens([5], 1, dedup=False),
    }
    speech = Speech.from_frames(FRAMES, words=WORDS, **(extra if expressive else {}))
    return [interleave(speech, [False, True, True, False]), [speech], [Text("the end"), speech]]


@pytest.mark.parametrize(
    "which",
    [
        "sims",
        "spiritlm",
        "sims_llama3",
    ],
)
def test_run_with_cache_lines_up_with_word_spans(which: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(f"{which}_model")
    utterances = _utterances(expressive=which == "spiritlm")
    encoded = model.encode(utterances)
    assert torch.equal(model.to_tokens(utterances), encoded.tokens)
    logits, cache = model.run_with_cache(utterances)
    resid = cache["blocks.1.hook_resid_post"]
    assert logits.shape[:2] == encoded.tokens.shape == resid.shape[:2]
    vocab = model.speech_vocab
    singles = [model.run_with_cache([u])[1]["blocks.1.hook_resid_post"][0] for u in utterances]
    for row in encoded.word_spans.itertuples():
        token = int(encoded.tokens[row.utterance, row.last])
        assert (vocab.unit_of(token) is not None) == (row.modality == "speech")
        # batch (right-padded) and single runs agree at every real position of the word
        torch.testing.assert_close(
            singles[row.utterance][row.start : row.stop],
            resid[row.utterance, row.start : row.stop],
            rtol=1e-4,
            atol=1e-4,
        )
    # the same tokens fed as a tensor give the same logits at real positions
    plain = model(encoded.tokens[:1, : encoded.lengths[0]])
    torch.testing.assert_close(plain[0], logits[0, : encoded.lengths[0]], rtol=1e-4, atol=1e-4)
