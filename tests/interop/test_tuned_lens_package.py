"""TunedLens.save(format="tuned-lens"): the file format, and the tuned-lens package reading it exactly.

The main job checks the format against tuned-lens' documented layout (its package does not import
beside transformer-lens 4); the transformer-lens 3.9 job, where tuned-lens 0.2.0 installs, also
loads the files with the package itself (Llama bases only: tuned-lens 0.2.0 has no Qwen2).
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from interop_helpers import utterance

import slm_transformerlens as slt
from slm_transformerlens.interop.tuned_lens_format import TUNED_LENS_CONFIG_KEYS
from slm_transformerlens.lens import TunedLens
from slm_transformerlens.lens.base import LensError


def _trained_like(model, seed: int = 0) -> TunedLens:
    """A tuned lens with non-zero translators (as after training)."""
    lens = TunedLens(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in lens.layer_translators.parameters():
            parameter.copy_(0.05 * torch.randn(parameter.shape, generator=generator))
    return lens


@pytest.fixture(scope="module")
def llama_sims(checkpoint_factory):
    path, kwargs = checkpoint_factory("sims-llama3-tied")
    return path, kwargs, slt.load(path, progress=False, **kwargs)


def test_tuned_lens_format_files_and_round_trip(llama_sims, tmp_path):
    _, _, model = llama_sims
    lens = _trained_like(model)
    directory = lens.save(tmp_path / "lens", format="tuned-lens")
    config = json.loads((directory / "config.json").read_text())
    assert tuple(config) == TUNED_LENS_CONFIG_KEYS
    assert (config["d_model"], config["num_hidden_layers"], config["lens_type"]) == (
        model.cfg.d_model,
        model.cfg.n_layers,
        "linear_tuned_lens",
    )
    state = torch.load(directory / "params.pt", weights_only=True)
    assert set(state) == {f"{i}.{p}" for i in range(model.cfg.n_layers) for p in ("weight", "bias")}
    again = TunedLens.from_tuned_lens(directory, model)
    h = torch.randn(5, model.cfg.d_model)
    for layer in range(model.cfg.n_layers):
        torch.testing.assert_close(again.logits(h, layer, "resid_pre"), lens.logits(h, layer, "resid_pre"))
    with pytest.raises(LensError, match="resid_mid"):
        TunedLens(model, include_mid=True).save(tmp_path / "mid", format="tuned-lens")
    with pytest.raises(LensError, match="unknown lens format"):
        lens.save(tmp_path / "x", format="pickle")


@pytest.mark.skipif(
    importlib.util.find_spec("tuned_lens") is None,
    reason="tuned-lens 0.2.0 installs in the transformer-lens 3.9 job only (.ci/tl39.sh runs this test there)",
)
def test_the_tuned_lens_package_reads_our_lens_and_we_read_its_lens(llama_sims, tmp_path):
    from tuned_lens.nn.lenses import TunedLens as PackageTunedLens

    path, kwargs, model = llama_sims
    hf_model, *_ = slt.load_hf(path, progress=False, **kwargs)
    lens = _trained_like(model)
    lens.save(tmp_path / "ours", format="tuned-lens")
    theirs = PackageTunedLens.from_model_and_pretrained(hf_model, str(tmp_path / "ours"))
    tokens = model.to_tokens(utterance())
    with torch.no_grad():
        hidden = hf_model(tokens, output_hidden_states=True).hidden_states
        for layer in range(model.cfg.n_layers):
            expected = lens.logits(hidden[layer], layer, "resid_pre")
            torch.testing.assert_close(theirs(hidden[layer], layer), expected, atol=1e-5, rtol=1e-5)
    # and the other way: a lens the package saves reads back exactly
    with torch.no_grad():
        for translator in theirs.layer_translators:
            translator.weight.mul_(-2.0)
    theirs.save(tmp_path / "theirs")
    ours = TunedLens.from_tuned_lens(tmp_path / "theirs", model)
    with torch.no_grad():
        for layer in range(model.cfg.n_layers):
            torch.testing.assert_close(
                ours.logits(hidden[layer], layer, "resid_pre"),
                theirs(hidden[layer], layer),
                atol=1e-5,
                rtol=1e-5,
            )
