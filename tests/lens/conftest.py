"""Fixtures for the lens tests: a tiny SpiritLM model, an utterance with word spans."""

from __future__ import annotations

import pandas as pd
import pytest
import torch


def make_utterance(model, seed: int = 0) -> tuple[torch.Tensor, pd.DataFrame]:
    """BOS + ' the girl' (text) + [Speech] + units of 'red' and 'riding' + [Text] + ' hood' (text)."""
    vocab, tok = model.speech_vocab, model.tokenizer
    generator = torch.Generator().manual_seed(seed)
    the_girl = tok(" the girl", add_special_tokens=False).input_ids
    hood = tok(" hood", add_special_tokens=False).input_ids
    red = vocab.unit_token_ids(torch.randint(0, vocab.n_units, (4,), generator=generator)).tolist()
    riding = vocab.unit_token_ids(torch.randint(0, vocab.n_units, (5,), generator=generator)).tolist()
    ids = [1, *the_girl, vocab.markers["speech"], *red, *riding, vocab.markers["text"], *hood]
    s_red = 1 + len(the_girl) + 1
    s_riding = s_red + len(red)
    s_hood = s_riding + len(riding) + 1
    spans = pd.DataFrame(
        {
            "utterance": [0, 0, 0, 0],
            "word_index": [0, 1, 2, 3],
            "word": ["the", "girl", "red", "riding"],
            "modality": ["text", "text", "speech", "speech"],
            "start": [1, 2, s_red, s_riding],
            "stop": [2, 3, s_riding, s_riding + len(riding)],
        }
    )
    spans = pd.concat(
        [
            spans,
            pd.DataFrame(
                {
                    "utterance": [0],
                    "word_index": [4],
                    "word": ["hood"],
                    "modality": ["text"],
                    "start": [s_hood],
                    "stop": [s_hood + len(hood)],
                }
            ),
        ],
        ignore_index=True,
    )
    return torch.tensor([ids]), spans


@pytest.fixture(scope="session")
def utterance(spiritlm_model):
    return make_utterance(spiritlm_model)
