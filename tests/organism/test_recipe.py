"""The organism recipe end to end at toy size: build -> train -> load (parity vs HF) -> evaluate."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from organism_helpers import assert_hf_parity

from slm_transformerlens.organism.build import load_renderings
from slm_transformerlens.organism.espeak import Voice, synthesize
from slm_transformerlens.organism.recipe import Recipe
from slm_transformerlens.organism.train import train_all


def test_merged_espeak_words_are_split_not_dropped() -> None:
    text = "the cat sat on the mat and there was a dog in the garden"
    result = synthesize(text, Voice("en-US"))
    words = [w for w, _, _ in result.words]
    assert words == text.split()
    starts = [s for _, s, _ in result.words]
    assert all(b > a for a, b in itertools.pairwise(starts))  # "on the", "there was" split
    assert all(e > s for _, s, e in result.words)
    phoneme_starts = {round(t, 6) for _, t in result.phonemes}
    on, the = result.words[3], result.words[4]
    assert round(the[1], 6) in phoneme_starts and on[2] <= the[1]  # the cut is a phoneme boundary


@pytest.fixture(scope="module")
def toy(toy_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    models = tmp_path_factory.mktemp("organism") / "models"
    train_all(toy_data, models, variants=["main", "untrained_units"], unit_kinds=["kmeans"], threads=1)
    return toy_data, models


@pytest.mark.slow
def test_toy_build_writes_the_sims_layout(toy: tuple[Path, Path]) -> None:
    data, _models = toy
    recipe = Recipe.from_json(data / "recipe.json")
    sizes = json.loads((data / "vocab.json").read_text())
    streams = np.load(data / "streams_kmeans.npz")
    unit0 = sizes["base_vocab"]
    speech = streams["speech"]
    assert speech.shape[1] == recipe.seq_len and (speech[:, 0] == 0).all()  # BOS
    assert (speech[:, 1:] >= unit0).all() and (speech[:, 1:] < unit0 + sizes["n_units"]["kmeans"]).all()
    markers = {unit0 + sizes["n_units"]["kmeans"], unit0 + sizes["n_units"]["kmeans"] + 1}
    interleaved = streams["interleaved"]
    assert np.isin(interleaved, list(markers)).any(axis=1).all()  # every interleaved sequence switches
    held = [r for r in load_renderings(data, "kmeans") if r["split"] == "heldout"]
    assert held and all(r["voice"]["name"] == "en-GB-x-rp" for r in held)


@pytest.mark.slow
def test_toy_checkpoint_loads_with_parity(toy: tuple[Path, Path]) -> None:
    import slm_transformerlens as slt

    _, models = toy
    checkpoint = models / "main_kmeans"
    model = slt.load(checkpoint, tokenizer=checkpoint / "base_tokenizer", progress=False)
    vocab = model.speech_vocab
    assert_hf_parity(
        model, checkpoint, torch.tensor([[0, 300, vocab.markers["speech"], vocab.units.start + 3, 7]])
    )
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["organism"]["variant"] == "main" and config["organism"]["phase2_log"]


@pytest.mark.slow
def test_toy_evaluation_has_curves_controls_and_knowledge(toy: tuple[Path, Path]) -> None:
    from slm_transformerlens.organism.evaluate import evaluate_checkpoint

    data, models = toy
    result = evaluate_checkpoint(models / "main_kmeans", data)
    metrics = {c["metric"] for c in result["curves"]}
    for name in (
        "transcription_span",
        "transcription_span_shuffled",
        "next_word",
        "mass_speech",
        "transcription_span_prior",
    ):
        assert name in metrics
    layers = {c["layer"] for c in result["curves"] if c["metric"] == "transcription_span"}
    assert layers == set(range(result["n_layers"]))
    assert all(c["ci_low"] <= c["rate"] <= c["ci_high"] for c in result["curves"] if c["n"] > 0)
    assert result["knowledge"]["speech_n"] == 16 and result["knowledge"]["text_n"] > 100


def test_phase2_mixture_is_exactly_the_budget_or_an_error() -> None:
    from slm_transformerlens.errors import SLMError
    from slm_transformerlens.organism.recipe import VARIANTS
    from slm_transformerlens.organism.train import _mixture

    recipe = Recipe.preset("toy")
    n = recipe.phase2_tokens // recipe.seq_len
    streams = {
        k: np.full((n, recipe.seq_len), i, dtype=np.uint16)
        for i, k in enumerate(("text", "interleaved", "speech"))
    }
    mixed = _mixture(VARIANTS["main"], recipe, streams)
    assert mixed.size == recipe.phase2_tokens
    assert [(mixed[:, 0] == i).sum() for i in range(3)] == [n // 4, n // 2, n // 4]
    with pytest.raises(SLMError, match="rebuild the data"):
        _mixture(VARIANTS["main"], _bigger(recipe), streams)


def _bigger(recipe: Recipe) -> Recipe:
    from dataclasses import replace

    return replace(recipe, phase2_tokens=recipe.phase2_tokens * 4)


@pytest.mark.parametrize(
    ("device", "message"),
    [("cuda", "CUDA is not available"), ("gpu", "unknown device 'gpu'; use cpu, cuda or cuda:N")],
)
def test_evaluation_refuses_a_device_it_cannot_use_before_writing(
    toy: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, device: str, message: str
) -> None:
    from slm_transformerlens.errors import SLMError
    from slm_transformerlens.organism.evaluate import evaluate_all

    data, models = toy
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "evaluation"
    with pytest.raises(SLMError, match=message):
        evaluate_all(models, data, out, device=device)
    assert not out.exists()


def test_evaluate_device_reaches_every_model_load(
    toy: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`organism evaluate --device X` loads every checkpoint on X, for the curves and for heard alike."""
    import slm_transformerlens as slt
    from slm_transformerlens.cli import main

    data, models = toy
    seen: list[object] = []
    real_load = slt.load

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(kwargs.get("device"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(slt, "load", spy)
    out = tmp_path / "evaluation"
    assert (
        main(
            [
                "organism",
                "evaluate",
                "--data",
                str(data),
                "--models",
                str(models),
                "--out",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert seen == ["cpu"] * 4  # two checkpoints (main, untrained units), each loaded for curves and heard
    assert (out / "heard.csv").exists()
