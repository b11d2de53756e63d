"""Speech-aware to_str_tokens / to_string / test_prompt / generate; batched generation left-pads."""

from __future__ import annotations

import pytest
import torch
from interop_helpers import short_utterance, utterance

from slm_transformerlens import Speech, Text
from slm_transformerlens.interop import InteropError
from slm_transformerlens.interop.generation import left_pad


@pytest.fixture(scope="module")
def sims_model(checkpoint_factory):
    import slm_transformerlens as slt

    path, kwargs = checkpoint_factory("sims-llama3-tied")
    return slt.load(path, progress=False, **kwargs)


@pytest.mark.parametrize("which", ["sims", "spiritlm"])
def test_str_tokens_and_string_of_speech_inputs(which, sims_model, spiritlm_model):
    model = sims_model if which == "sims" else spiritlm_model
    tokens = model.to_tokens(utterance())[0]
    str_tokens = model.to_str_tokens(utterance())
    assert str_tokens == model.to_str_tokens(tokens)
    unit = model.speech_vocab.unit_token(71)
    speech, text = (model.speech_vocab.marker_tokens[r] for r in ("speech", "text"))
    assert unit in str_tokens and speech in str_tokens and text in str_tokens
    # the string is what a Hugging Face tool re-tokenizes: exactly the tokens (BOS not doubled)
    assert model.tokenizer(model.to_string(utterance()))["input_ids"] == tokens.tolist()
    batch = model.to_str_tokens([utterance(), short_utterance()])
    assert batch[0] == str_tokens
    assert len(batch[1]) == model.encode(short_utterance()).lengths[0]  # no padding strings
    assert model.to_string([utterance(), short_utterance()])[1] == model.to_string(short_utterance())


GENERATION_MODELS = ["organism", "sims-qwen2-tied", "sims-llama3-tied", "spiritlm-base-bin"]


@pytest.fixture(scope="module")
def generation_pair(request, checkpoint_factory):
    """``(HookedSLM, plain Hugging Face model of the same checkpoint)`` for a name of GENERATION_MODELS."""
    import slm_transformerlens as slt
    from slm_transformerlens.organism.shipped import load_organism, shipped_checkpoint
    from slm_transformerlens.testing import reference_hf_model

    cache: dict = {}

    def get(name: str):
        if name not in cache:
            if name == "organism":
                cache[name] = (load_organism(progress=False), reference_hf_model(shipped_checkpoint()))
            else:
                path, kwargs = checkpoint_factory(name)
                cache[name] = (slt.load(path, progress=False, **kwargs), reference_hf_model(path))
        return cache[name]

    return get


def hf_greedy(hf, tokens: torch.Tensor, mask: torch.Tensor, n: int) -> torch.Tensor:
    """Hugging Face's own greedy ``generate`` (no end-of-sequence stop): the new tokens only."""
    from transformers import GenerationConfig

    config = GenerationConfig(max_new_tokens=n, min_new_tokens=0, do_sample=False, pad_token_id=0)
    config.eos_token_id = None
    with torch.no_grad():
        out = hf.generate(tokens, attention_mask=mask, generation_config=config)
    return out[:, tokens.shape[1] :]


def within(segments: list, model) -> list:
    """The utterance with its unit ids taken modulo the model's number of units (the organism has 200)."""
    n = model.speech_vocab.n_units
    return [
        Speech(units=[u % n for u in s.units], words=list(s.words)) if isinstance(s, Speech) else s
        for s in segments
    ]


@pytest.mark.parametrize("name", GENERATION_MODELS)
def test_greedy_generation_equals_hugging_face_generate(name, generation_pair):
    """The default generate (one utterance, a left-padded batch, a token tensor) gives Hugging Face's
    greedy tokens; TransformerBridge's KV-cache path (which does not) is refused."""
    model, hf = generation_pair(name)
    n = 5
    prompts = [within(utterance(), model), within(short_utterance(), model)]
    for one in prompts[:1]:
        encoded = model.encode(one)
        expected = hf_greedy(hf, encoded.tokens, encoded.attention_mask, n)
        ours = model.generate(one, max_new_tokens=n, do_sample=False, stop_at_eos=False, verbose=False)
        assert ours[:, encoded.tokens.shape[1] :].tolist() == expected.tolist()
        tensor = model.generate(
            encoded.tokens, max_new_tokens=n, do_sample=False, stop_at_eos=False, verbose=False
        )
        assert tensor[:, encoded.tokens.shape[1] :].tolist() == expected.tolist()
    encoded = model.encode(prompts)
    tokens, mask = left_pad(encoded.tokens, encoded.attention_mask, 0)
    expected = hf_greedy(hf, tokens, mask, n)
    together = model.generate(prompts, max_new_tokens=n, do_sample=False, stop_at_eos=False, verbose=False)
    assert together[:, tokens.shape[1] :].tolist() == expected.tolist()
    with pytest.raises(InteropError, match="use_past_kv_cache"):
        model.generate(one, max_new_tokens=2, use_past_kv_cache=True, verbose=False)


@pytest.mark.parametrize("name", GENERATION_MODELS)
def test_to_string_round_trips_through_the_hugging_face_tokenizer(name, generation_pair):
    """Llama-3-based SIMS, SpiritLM and the organism prepend a BOS that their tokenizer adds again."""
    model, _ = generation_pair(name)
    batch = [within(utterance(), model), within(short_utterance(), model)]
    encoded = model.encode(batch)
    for text, row, n in zip(model.to_string(batch), encoded.tokens, encoded.lengths, strict=True):
        assert model.tokenizer(text)["input_ids"] == row[:n].tolist()


def test_right_padded_token_batch_is_refused(checkpoint_factory):
    import slm_transformerlens as slt

    path, kwargs = checkpoint_factory("sims-llama3-tied")
    model = slt.load(path, progress=False, **kwargs)
    right = model.to_tokens([utterance(), short_utterance()])
    with pytest.raises(InteropError, match="right-padded"):
        model.generate(right, max_new_tokens=2, do_sample=False, verbose=False)


def test_left_pad_moves_padding_only():
    tokens = torch.tensor([[1, 2, 3], [4, 5, 0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    padded, new_mask = left_pad(tokens, mask, 0)
    assert padded.tolist() == [[1, 2, 3], [0, 4, 5]]
    assert new_mask.tolist() == [[1, 1, 1], [0, 1, 1]]


def test_test_prompt_ranks_the_answer_tokens_as_the_logits_do(sims_model, capsys):
    model = sims_model
    prompt = utterance()[:2]  # ends in speech: a text answer starts with the <text> marker
    table = model.test_prompt(prompt, "and rome", top_k=5)
    full = model.to_tokens([*prompt, Text("and rome")])[0]
    n = model.to_tokens(prompt).shape[1]
    assert table["token"].tolist() == full[n:].tolist()
    assert table["str_token"].iloc[0] == model.speech_vocab.marker_tokens["text"]
    with torch.no_grad():
        logits = model(full[None])[0]
    for row in table.itertuples():
        step = logits[row.position - 1]
        assert row.rank == int((step > step[row.token]).sum())
        assert row.logit == pytest.approx(float(step[row.token]), abs=1e-5)
        assert row.prob == pytest.approx(float(step.softmax(-1)[row.token]), abs=1e-6)
        assert row.top_k[0] == model.to_str_tokens(step.argmax()[None])[0]
    assert "Tokenized answer" in capsys.readouterr().out
    units = model.test_prompt(
        utterance()[:1], Speech(units=[3, 4], words=[(" x", 0.0, 0.08)]), print_details=False
    )
    assert units["str_token"].tolist() == [model.speech_vocab.marker_tokens["speech"], "<Un3>", "<Un4>"]
    with pytest.raises(InteropError, match="one utterance"):
        model.test_prompt([utterance(), short_utterance()], "x")
