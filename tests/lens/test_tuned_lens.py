"""Tuned lens: identity at init, exact save/load, refusal on another model, published format, training."""

from __future__ import annotations

import json

import pytest
import torch

from slm_transformerlens.lens import (
    LensError,
    LogitLens,
    TunedLens,
    evaluate_lenses,
    lens_table,
    train_tuned_lens,
)


def _data(model, n=4, length=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = model.speech_vocab.text_token_ids
    return [ids[torch.randint(0, len(ids), (2, length), generator=g)] for _ in range(n)]


def test_untrained_tuned_lens_is_the_logit_lens(spiritlm_model, utterance):
    tokens, spans = utterance
    tuned, logit = TunedLens(spiritlm_model, include_mid=True), LogitLens(spiritlm_model)
    _, cache = spiritlm_model.run_with_cache(tokens)
    for layer in range(spiritlm_model.cfg.n_layers):
        for site in ("resid_pre", "resid_mid", "resid_post"):
            h = cache[f"blocks.{layer}.hook_{site}"]
            assert torch.equal(tuned.logits(h, layer, site), logit.logits(h, layer, site))
    a = lens_table(spiritlm_model, tokens, word_spans=spans, lens=tuned)
    b = lens_table(spiritlm_model, tokens, word_spans=spans, lens=logit)
    assert a.drop(columns=["top_probs"]).equals(b.drop(columns=["top_probs"]))


def test_training_lowers_kl_and_round_trips(spiritlm_model, spiritlm_checkpoint, tmp_path):
    data = _data(spiritlm_model)
    grads_before = [p.requires_grad for p in spiritlm_model.parameters()]
    tuned = train_tuned_lens(spiritlm_model, data, num_steps=25, progress=False)
    assert [p.requires_grad for p in spiritlm_model.parameters()] == grads_before
    assert all(p.grad is None for p in spiritlm_model.parameters())  # the model stayed frozen
    assert tuned.layer_translators[1].weight.abs().sum() > 0
    held = _data(spiritlm_model, n=2, seed=1)
    ev = evaluate_lenses(
        spiritlm_model, held, {"logit": LogitLens(spiritlm_model), "tuned": tuned}, progress=False
    )
    kl = ev.pivot(index="layer", columns="lens", values="kl")
    assert (kl.loc[: kl.index.max() - 1, "tuned"] < kl.loc[: kl.index.max() - 1, "logit"]).all()
    assert kl.loc[kl.index.max()].abs().max() < 1e-6  # final layer: both lenses are the model
    assert set(ev.columns) >= {"lens", "layer", "site", "kl", "ce", "n_tokens"}

    tuned.save(tmp_path / "lens")
    assert sorted(p.name for p in (tmp_path / "lens").iterdir()) == ["config.json", "params.safetensors"]
    config = json.loads((tmp_path / "lens" / "config.json").read_text())
    assert config["vocab_fingerprint"] == spiritlm_model.speech_vocab.fingerprint() and config["unembed_hash"]
    loaded = TunedLens.load(tmp_path / "lens", spiritlm_model)
    for key, value in tuned.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    h = torch.randn(3, spiritlm_model.cfg.d_model)
    assert torch.equal(loaded.logits(h, 0), tuned.logits(h, 0))

    import slm_transformerlens as slt
    from slm_transformerlens.testing import make_spiritlm_checkpoint

    other = slt.load(make_spiritlm_checkpoint(tmp_path / "other", n_layers=3, seed=7), progress=False)
    with pytest.raises(LensError, match="different unembedding"):
        TunedLens.load(tmp_path / "lens", other)
    config["vocab_fingerprint"] = "0" * 64
    (tmp_path / "lens" / "config.json").write_text(json.dumps(config))
    with pytest.raises(LensError, match="speech vocabulary"):
        TunedLens.load(tmp_path / "lens", spiritlm_model)
    with pytest.raises(LensError, match="missing"):
        TunedLens.load(tmp_path / "nowhere", spiritlm_model)


def test_reads_the_published_tuned_lens_format(spiritlm_model, tmp_path):
    from slm_transformerlens.lens.tuned_lens import unembedding_hash

    d, n = spiritlm_model.cfg.d_model, spiritlm_model.cfg.n_layers
    g = torch.Generator().manual_seed(0)
    state = {}
    for i in range(n):
        state[f"{i}.weight"] = 0.01 * torch.randn(d, d, generator=g)
        state[f"{i}.bias"] = 0.01 * torch.randn(d, generator=g)
    directory = tmp_path / "published"
    directory.mkdir()
    torch.save(state, directory / "params.pt")
    config = {
        "base_model_name_or_path": "x/y",
        "d_model": d,
        "num_hidden_layers": n,
        "bias": True,
        "base_model_revision": None,
        "unembed_hash": unembedding_hash(spiritlm_model),
        "lens_type": "linear_tuned_lens",
    }
    (directory / "config.json").write_text(json.dumps(config))
    lens = TunedLens.from_tuned_lens(directory, spiritlm_model)
    h = torch.randn(4, d)
    expected = LogitLens(spiritlm_model).logits(h + h @ state["1.weight"].T + state["1.bias"], 1, "resid_pre")
    torch.testing.assert_close(lens.logits(h, 1, "resid_pre"), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lens.logits(h, 0, "resid_post"), expected, atol=1e-5, rtol=1e-5)
    # prefixed keys are accepted too; a wrong hash is refused unless forced
    torch.save({f"layer_translators.{k}": v for k, v in state.items()}, directory / "params.pt")
    config["unembed_hash"] = "f" * 64
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(LensError, match="check_hash=False"):
        TunedLens.from_tuned_lens(directory, spiritlm_model)
    forced = TunedLens.from_tuned_lens(directory, spiritlm_model, check_hash=False)
    torch.testing.assert_close(forced.logits(h, 1, "resid_pre"), expected, atol=1e-5, rtol=1e-5)
    config["num_hidden_layers"] = n + 1
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(LensError, match="layers"):
        TunedLens.from_tuned_lens(directory, spiritlm_model, check_hash=False)


@pytest.mark.slow
@pytest.mark.realmodel
def test_tuned_lens_beats_logit_lens_on_real_smollm2(smollm2_sims_model):
    from slm_transformerlens.testing import SAMPLE_TEXT

    model = smollm2_sims_model
    ids = model.tokenizer(SAMPLE_TEXT, add_special_tokens=False).input_ids
    seqs = [torch.tensor([ids[i : i + 16]]) for i in range(0, len(ids) - 16, 16)]
    train, held = seqs[:-2], seqs[-2:]
    middle = [10, 14, 18]  # hidden_states indices = resid_post of blocks 9, 13, 17
    tuned = train_tuned_lens(model, train, num_steps=6, layers=middle, progress=False)
    ev = evaluate_lenses(
        model,
        held,
        {"logit": LogitLens(model), "tuned": tuned},
        layers=[m - 1 for m in middle],
        progress=False,
    )
    kl = ev.pivot(index="layer", columns="lens", values="kl")
    assert (kl["tuned"] < kl["logit"]).all(), kl
