"""SAELens on a speech LM (transformer-lens 3.9 job: SAELens pins transformer-lens < 4).

HookedSAETransformer from our checkpoint, Speech / Text inputs, SAE features equal to the SAE applied
to our residual stream, marker + BOS exclusion, the interleaved token data set, and the example.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from interop_helpers import utterance

sae_lens = pytest.importorskip(
    "sae_lens", reason="SAELens pins transformer-lens < 4: .ci/tl39.sh installs it and runs this module"
)

import slm_transformerlens as slt  # noqa: E402
from slm_transformerlens.interop import InteropError  # noqa: E402
from slm_transformerlens.interop.saelens import (  # noqa: E402
    export_token_dataset,
    sae_exclude_token_ids,
    token_dataset,
)
from slm_transformerlens.legacy import to_hooked_transformer  # noqa: E402

LAYER = 1
HOOK = f"blocks.{LAYER}.hook_resid_post"


@pytest.fixture(scope="module")
def sims(checkpoint_factory):
    path, kwargs = checkpoint_factory("sims-llama3-tied")
    model = to_hooked_transformer(path, model_class=sae_lens.HookedSAETransformer, **kwargs)
    return path, kwargs, model


def _random_sae(model, seed: int = 0):
    torch.manual_seed(seed)
    cfg = sae_lens.StandardSAEConfig(d_in=model.cfg.d_model, d_sae=2 * model.cfg.d_model)
    sae = sae_lens.StandardSAE(cfg)
    with torch.no_grad():
        for parameter in sae.parameters():
            parameter.copy_(0.3 * torch.randn_like(parameter))
    sae.cfg.metadata.hook_name = HOOK
    return sae


def test_hooked_sae_transformer_takes_speech_inputs_and_matches_the_bridge(sims):
    path, kwargs, model = sims
    assert isinstance(model, sae_lens.HookedSAETransformer)
    bridge = slt.load(path, progress=False, **kwargs)
    batch = [utterance(), utterance()[:2]]
    with torch.no_grad():
        ours = model(batch).log_softmax(-1)
        reference = bridge(batch).log_softmax(-1)
    mask = bridge.encode(batch).attention_mask.bool()
    torch.testing.assert_close(ours[mask], reference[mask], atol=1e-4, rtol=1e-4)
    assert model.to_str_tokens(utterance()) == bridge.to_str_tokens(utterance())
    with pytest.raises(InteropError, match="subclass"):
        to_hooked_transformer(path, model_class=torch.nn.Module, **kwargs)


def test_sae_features_equal_the_sae_on_our_residual_stream(sims):
    _, _, model = sims
    sae = _random_sae(model)
    with torch.no_grad():
        _, cache = model.run_with_cache_with_saes(utterance(), saes=[sae])
        _, plain = model.run_with_cache(utterance())
        expected = sae.encode(plain[HOOK])
    torch.testing.assert_close(cache[f"{HOOK}.hook_sae_acts_post"], expected)
    assert float(expected.abs().sum()) > 0


def test_markers_and_bos_are_excluded(sims):
    _, _, model = sims
    vocab = model.speech_vocab
    ids = sae_exclude_token_ids(model)
    assert {*vocab.markers.values(), vocab.bos_token_id} <= set(ids)
    assert not set(ids) & set(range(vocab.units.start, vocab.units.stop))
    from sae_lens.util import get_special_token_ids

    assert not set(vocab.markers.values()) & set(get_special_token_ids(model.tokenizer))  # what True misses
    sae = _random_sae(model, seed=1)
    tokens = model.to_tokens(utterance())[0]
    excluded = torch.isin(tokens, torch.tensor(ids))
    assert int(excluded.sum()) >= 3  # BOS, <text>, <speech>, <text>
    with torch.no_grad():
        _, plain = model.run_with_cache(utterance())
        model.add_sae(sae, exclude_special_tokens=ids)
        try:
            _, cache = model.run_with_cache(utterance())
        finally:
            model.reset_saes()
    after = cache[f"{HOOK}.hook_sae_output"][0]
    original = plain[HOOK][0]
    torch.testing.assert_close(after[excluded], original[excluded])
    with torch.no_grad():
        reconstruction = sae.decode(sae.encode(original))
    torch.testing.assert_close(after[~excluded], reconstruction[~excluded])


def test_token_dataset_rows_are_the_concatenated_encodings(sims, tmp_path):
    import datasets

    _, _, model = sims
    utterances = [utterance(), utterance()[:2], utterance()[1:]] * 3
    stream = [int(t) for u in utterances for t in model.to_tokens(u)[0]]
    dataset = token_dataset(model, utterances, context_size=16, progress=False)
    rows = dataset["input_ids"]
    assert all(len(row) == 16 for row in rows) and len(rows) == len(stream) // 16
    assert [t for row in rows for t in row] == stream[: 16 * len(rows)]
    out = export_token_dataset(model, utterances, tmp_path / "ds", context_size=16, progress=False)
    assert datasets.load_dataset(str(out), split="train")["input_ids"] == rows
    with pytest.raises(InteropError, match="fewer than one row"):
        token_dataset(model, [utterance()], context_size=10_000, progress=False)


@pytest.mark.slow
def test_the_sae_example_trains_and_reads_features_at_spoken_words(sims):
    _, _, model = sims
    spec = importlib.util.spec_from_file_location(
        "sae_on_speech", Path(__file__).resolve().parents[2] / "examples" / "sae_on_speech.py"
    )
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    utterances = example.interleaved_utterances(40, n_units=model.speech_vocab.n_units)
    sae = example.train_sae(model, utterances, layer=LAYER, training_tokens=2048, context_size=16)
    frame = example.features_at_spoken_words(model, sae, utterances[0])
    spans = model.encode(utterances[0]).word_spans
    assert frame["position"].tolist() == spans.loc[spans["modality"] == "speech", "last"].tolist()
    with torch.no_grad():
        _, plain = model.run_with_cache(utterances[0])
        acts = sae.encode(plain[HOOK])[0]
    for row in frame.itertuples():
        assert row.activations == [round(float(acts[row.position, f]), 3) for f in row.features]
