"""The packaged organisms: loader parity, the shipped results reproduce, and the acceptance criteria
of issue 10 that hold on the held-out voice and sentences (see MODEL_CARD.md for every number)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from organism_helpers import assert_hf_parity

from slm_transformerlens.organism.report import acceptance
from slm_transformerlens.organism.shipped import (
    MAIN,
    load_organism,
    shipped_checkpoint,
    shipped_models,
    shipped_root,
)

pytestmark = pytest.mark.slow


def test_packaged_models_are_small_fp16_sims_checkpoints() -> None:
    from safetensors import safe_open

    names = shipped_models()
    assert {
        "main_kmeans",
        "random_init_kmeans",
        "speech_only_kmeans",
        "no_interleave_kmeans",
        "untrained_units_kmeans",
    } <= set(names)
    total = 0
    for name in names:
        path = shipped_checkpoint(name)
        config = json.loads((path / "config.json").read_text())
        assert config["architectures"] == ["UnitLM"] and config["tie_word_embeddings"]
        with safe_open(str(path / "model.safetensors"), "pt") as f:
            assert all(f.get_slice(k).get_dtype() == "F16" and k.startswith("lm.") for k in f.keys())  # noqa: SIM118
        total += (path / "model.safetensors").stat().st_size
    assert total < 40 * 2**20


def test_main_organism_loads_with_hf_parity() -> None:
    model = load_organism(MAIN, progress=False)
    vocab = model.speech_vocab
    units = list(range(vocab.units.start, vocab.units.start + 12))
    tokens = [vocab.bos_token_id, 260, 300, vocab.markers["speech"], *units, vocab.markers["text"], 280]
    assert_hf_parity(model, shipped_checkpoint(MAIN), torch.tensor([tokens]))


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, list[dict], dict]:
    from slm_transformerlens.organism.evaluate import evaluate_all

    out = tmp_path_factory.mktemp("organism_eval")
    curves = evaluate_all(shipped_root(), shipped_root() / "eval", out, heard=False)  # heard: below
    differences = json.loads((out / "differences.json").read_text())
    return curves, differences, acceptance(curves, differences, main=MAIN)


def test_shipped_evaluation_reproduces(evaluation: tuple[pd.DataFrame, list[dict], dict]) -> None:
    curves, _, _ = evaluation
    shipped = pd.read_csv(shipped_root() / "evaluation" / "curves.csv")
    merged = curves.merge(shipped, on=["model", "metric", "layer"], suffixes=("", "_shipped"))
    assert len(merged) == len(shipped) == len(curves)
    assert (merged["rate"] - merged["rate_shipped"]).abs().max() < 1e-6
    assert (merged["n"] == merged["n_shipped"]).all()


#: The issue's criteria that hold on the shipped main organism. Three do NOT hold and are not tested
#: (MODEL_CARD.md gives their numbers): the next-word rate peaks at layer 5, before the transcription
#: peak (layer 6); random initialisation is not significantly weaker at this budget; the last-unit
#: read-out does not clear the frequency prior (the span read-out is pooled: no single-guess prior).
HOLDING = (
    "middle_peak",
    "clears_shuffled",
    "clears_untrained",
    "speech_mass_last_layers",
    "weaker_no_interleave_kmeans",
    "weaker_speech_only_kmeans",
    "weaker_untrained_units_kmeans",
)


@pytest.mark.parametrize("criterion", HOLDING)
def test_acceptance_criterion_holds(
    evaluation: tuple[pd.DataFrame, list[dict], dict], criterion: str
) -> None:
    holds, numbers = evaluation[2][criterion]
    assert holds, numbers


def test_shipped_heard_covers_every_model_and_read_out() -> None:
    """The shipped heard table (``heard.csv``, recomputing it costs minutes per model, so it is checked
    for completeness and consistency here; tests/organism/test_heard.py tests its computation)."""
    from slm_transformerlens.organism.evaluate import heard_acceptance

    heard = pd.read_csv(shipped_root() / "evaluation" / "heard.csv")
    assert set(shipped_models()) <= set(heard["model"])  # + random_init_phoneme (evaluated, not shipped)
    assert set(heard["readout"]) == {"any", "max", "last"} and set(heard["split"]) == {"heldout"}
    assert (heard["n"] == 1563).all() and (
        heard["heard"] - (heard["rate"] - heard["swapped_rate"])
    ).abs().max() < 1e-9
    shipped = json.loads((shipped_root() / "evaluation" / "heard_acceptance.json").read_text())
    again = heard_acceptance(heard, main=MAIN, baselines=("random_init_kmeans", "untrained_units_kmeans"))
    assert shipped[MAIN] == json.loads(json.dumps(again))
    # the rates without the swap are the curves' transcription_span (any unit of the span)
    curves = pd.read_csv(shipped_root() / "evaluation" / "curves.csv")
    span = curves[curves["metric"] == "transcription_span"].merge(
        heard[heard["readout"] == "any"], on=["model", "layer"], suffixes=("", "_heard")
    )
    assert len(span) == 8 * len(shipped_models()) and (span["rate"] - span["rate_heard"]).abs().max() < 1e-9


def test_knowledge_is_reported_per_model(evaluation: tuple[pd.DataFrame, list[dict], dict]) -> None:
    knowledge = json.loads((shipped_root() / "evaluation" / "knowledge.json").read_text())
    assert set(knowledge) == set(shipped_models())
    assert all(v["speech_n"] == 133 and v["text_n"] == 133 for v in knowledge.values())
    # the text phase taught the facts: the text-initialised models know them in writing
    assert knowledge["untrained_units_kmeans"]["text_accuracy"] > 0.8


@pytest.mark.parametrize("folder", ["evaluation", "evaluation_long", "evaluation_text"])
def test_packaged_hear_evaluations_are_complete_and_consistent(folder: str) -> None:
    """The hear recipe's evaluations (weights not shipped): every model, both test sets, every read-out,
    heard = rate - swapped, and the acceptance verdict recomputes from the table."""
    from slm_transformerlens.organism.evaluate import heard_acceptance

    root = shipped_root() / "hear" / folder
    heard = pd.read_csv(root / "heard.csv")
    models = {"main_phoneme", "random_init_phoneme", "untrained_units_phoneme"}
    assert set(heard["model"]) == models and set(heard["split"]) == {"heldout", "new"}
    assert set(heard["readout"]) == {"any", "max", "last"} and set(heard["layer"]) == set(range(6))
    assert (heard["heard"] - (heard["rate"] - heard["swapped_rate"])).abs().max() < 1e-9
    assert (heard["heard_low"] <= heard["heard"] + 1e-12).all() and (
        heard["heard"] <= heard["heard_high"] + 1e-12
    ).all()
    shipped = json.loads((root / "heard_acceptance.json").read_text())
    again = heard_acceptance(
        heard, main="main_phoneme", baselines=("random_init_phoneme", "untrained_units_phoneme")
    )
    assert shipped["main_phoneme"] == json.loads(json.dumps(again))
    corpus = json.loads((shipped_root() / "hear" / "eval" / "corpus.json").read_text())
    assert len(corpus["heldout"]) == len(corpus["new"]) == 240 and set(corpus["longest_shared_run"]) == {
        "heldout",
        "new",
    }
    assert (root / "results.md").read_text().startswith("## Heard above context")


@pytest.mark.parametrize(
    "folder",
    [f"round3/{name}_seed{seed}" for name in ("large_long_gpu", "xl") for seed in range(5)],
)
def test_round3_gpu_evaluations_are_complete_and_their_verdicts_recompute(folder: str) -> None:
    """Issue 21's round 3 (trained on an H200, evaluated there; weights not shipped): every model, both
    test sets, every read-out at every layer, heard = rate - swapped, and the shipped verdict recomputes
    from the shipped table; the training logs name the recipe and the GPU."""
    from slm_transformerlens.organism.evaluate import heard_acceptance
    from slm_transformerlens.organism.recipe import Recipe

    root = shipped_root() / "hear" / folder
    logs = json.loads((root / "train_logs.json").read_text())
    recipe = Recipe.preset("hear-xl" if "xl" in folder else "hear-large-long")
    assert {log["recipe"] for log in logs.values()} == {recipe.name}
    assert {log["device"] for log in logs.values() if log.get("phase2_log")} == {"cuda"}
    heard = pd.read_csv(root / "heard.csv")
    assert set(heard["model"]) == set(logs) and set(heard["split"]) == {"heldout", "new"}
    assert set(heard["readout"]) == {"any", "max", "last"}
    assert set(heard["layer"]) == set(range(recipe.n_layers))
    assert (heard["heard"] - (heard["rate"] - heard["swapped_rate"])).abs().max() < 1e-9
    assert (heard["heard_low_type"] <= heard["heard"] + 1e-12).all()
    again = heard_acceptance(
        heard, main="main_phoneme", baselines=("random_init_phoneme", "untrained_units_phoneme")
    )
    shipped = json.loads((root / "heard_acceptance.json").read_text())
    assert shipped["main_phoneme"] == json.loads(json.dumps(again))
