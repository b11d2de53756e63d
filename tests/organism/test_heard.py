"""The organism's heard evaluation and the ``hear`` recipe at toy size (issue 21).

The swapped-audio items are checked by hand: every content word gets its own item whose context (the
tokens before the word) is the original utterance's, and whose span holds the donor word's original units.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from slm_transformerlens.organism.build import build_data, load_renderings
from slm_transformerlens.organism.corpus import is_content_word
from slm_transformerlens.organism.hear_corpus import hear_passages, longest_shared_runs
from slm_transformerlens.organism.recipe import HEAR_HELDOUT_VOICE, HEAR_NEW_VOICE, HEAR_TRAIN_VOICES, Recipe
from slm_transformerlens.organism.train import train_all

pytestmark = pytest.mark.slow


def test_longest_shared_runs_by_hand() -> None:
    train = ["a b c d e", "x y z"]
    assert longest_shared_runs(["a b c q", "q r", "y z a b c d"], train) == [3, 0, 4]


def test_hear_passages_repeat_their_content_words() -> None:
    passages = hear_passages(200, seed=3)
    assert len(set(passages)) == 200
    repeated = [p for p in passages if any(p.split().count(w) > 1 for w in p.split() if is_content_word(w))]
    assert len(repeated) > 100  # most passages say a content word twice
    assert set(hear_passages(20, seed=4, exclude=passages)).isdisjoint(passages)


@pytest.fixture(scope="module")
def hear_toy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    data = build_data(tmp_path_factory.mktemp("hear") / "data", Recipe.preset("hear-toy"), progress=False)
    models = data.parent / "models"
    train_all(data, models, variants=["main"], threads=1)
    return data, models


def test_hear_toy_build_has_unseen_voices_and_overlap_report(hear_toy: tuple[Path, Path]) -> None:
    data, _ = hear_toy
    assert not (data / "kmeans.npy").exists() and not (data / "streams_kmeans.npz").exists()
    corpus = json.loads((data / "corpus.json").read_text())
    renderings = load_renderings(data, "phoneme")
    by_split = {s: [r for r in renderings if r["split"] == s] for s in ("train", "heldout", "new")}
    train_voices = {r["voice"]["name"] for r in by_split["train"]}
    assert train_voices <= {name for name, _ in HEAR_TRAIN_VOICES}
    assert {r["voice"]["name"] for r in by_split["heldout"]} == {HEAR_HELDOUT_VOICE[0]}
    assert {r["voice"]["name"] for r in by_split["new"]} == {HEAR_NEW_VOICE[0]}
    assert not {HEAR_HELDOUT_VOICE[0], HEAR_NEW_VOICE[0]} & train_voices
    assert set(corpus["new"]).isdisjoint(corpus["train"]) and set(corpus["heldout"]).isdisjoint(
        corpus["train"]
    )
    assert corpus["longest_shared_run"]["heldout"] == longest_shared_runs(corpus["heldout"], corpus["train"])


def test_swapped_items_keep_the_context_and_take_the_donor_units(hear_toy: tuple[Path, Path]) -> None:
    import slm_transformerlens as slt
    from slm_transformerlens.lens import swap_audio
    from slm_transformerlens.organism.evaluate import _encode, _speech
    from slm_transformerlens.organism.heard import _one_word_items

    data, models = hear_toy
    checkpoint = models / "main_phoneme"
    model = slt.load(checkpoint, tokenizer=checkpoint / "base_tokenizer", progress=False)
    held = [r for r in load_renderings(data, "phoneme") if r["split"] == "heldout" and r["words"]]
    batches = [_encode(model, [[_speech(r)]]) for r in held]
    items, owners = _one_word_items(batches)
    n_content = sum(
        int(
            ((b.word_spans["stop"] > b.word_spans["start"]) & b.word_spans["word"].map(is_content_word)).sum()
        )
        for b in batches
    )
    assert len(items) == n_content > 0
    swapped = swap_audio(model, items, seed=0)
    for i, (item, new) in enumerate(zip(items, swapped, strict=True)):
        span, new_span = item.word_spans.iloc[0], new.word_spans.iloc[0]
        original = batches[owners[i]].tokens[0]
        start = int(span["start"])
        assert new.tokens[0, :start].tolist() == original[:start].tolist()  # context unchanged
        donor = swapped.donors.iloc[i]
        d_span = items[int(donor["donor_utterance"])].word_spans.iloc[0]
        donor_units = items[int(donor["donor_utterance"])].tokens[
            0, int(d_span["start"]) : int(d_span["stop"])
        ]
        got = new.tokens[0, int(new_span["start"]) : int(new_span["stop"])]
        assert got.tolist() == donor_units.tolist()
        assert donor["donor_word"] != donor["word"]


def test_heard_curves_are_rate_minus_swapped_with_paired_intervals(hear_toy: tuple[Path, Path]) -> None:
    from slm_transformerlens.organism.evaluate import evaluate_heard

    data, models = hear_toy
    heard = evaluate_heard(models / "main_phoneme", data, readouts=("any", "last"))
    assert set(heard["split"]) == {"heldout", "new"} and set(heard["readout"]) == {"any", "last"}
    assert np.allclose(heard["heard"], heard["rate"] - heard["swapped_rate"])
    assert (heard["heard_low"] <= heard["heard"] + 1e-12).all() and (
        heard["heard"] <= heard["heard_high"] + 1e-12
    ).all()
    assert heard["shuffled_rate"].between(0, 1).all()
    layers = heard.groupby(["split", "readout"])["layer"].apply(lambda s: sorted(s))
    assert all(ls == list(range(4)) for ls in layers)
