"""``slm-lens analyze`` on unit files tells a planted hearer from a planted guesser.

The route: the test loads the checkpoint itself, activates the plant's hooks on that model, and has the CLI
use it (``cli._load_model`` is monkeypatched to return it). Everything else is the real command: reading the
unit files, the parts, the merge, the swapped-audio pass, the summary, the report and the printed lines.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from slm_transformerlens import cli
from slm_transformerlens.builders import guesser_lookup, hearer_lookup, plant_guesser, plant_hearer
from slm_transformerlens.lens import WordTargetResolver
from tests.conftest import distinct_words

PLANTED = (2, 3)


def _write_unit_files(directory: Path, words: list[str], n_files: int = 20) -> None:
    """Files of 4 (written word i, spoken word i) pairs; each word in 2-4 random units, new at every
    occurrence (as real speech varies)."""
    import random

    rng = random.Random(0)
    written, spoken = words[8:], words[:8]
    directory.mkdir()
    for f in range(n_files):
        all_units, aligned, frame = [], [], 0
        for _ in range(4):
            i = rng.randrange(8)
            for word in (written[i], spoken[i]):
                k = 2 + i % 3
                all_units += [rng.randrange(500) for _ in range(k)]
                aligned.append([" " + word, round(frame * 0.04, 2), round((frame + 2 * k) * 0.04, 2)])
                frame += 2 * k
        payload = {"units": all_units, "durations": [2] * len(all_units), "aligned_text": aligned}
        (directory / f"utt{f:03d}.json").write_text(json.dumps(payload))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import slm_transformerlens as slt
    from slm_transformerlens.speech.dataset import load_speech_dataset
    from slm_transformerlens.testing import make_spiritlm_checkpoint

    root = tmp_path_factory.mktemp("planted-cli")
    path = make_spiritlm_checkpoint(root / "ckpt", n_layers=6)
    model = slt.load(path, progress=False)
    _write_unit_files(root / "units", distinct_words(WordTargetResolver(model.tokenizer), 16))
    data = load_speech_dataset([root / "units"], model.speech_vocab, plan="alternate", progress=False)
    return root, path, model, data


def _analyze(setup, plant, name, monkeypatch, capsys):
    root, path, model, _ = setup
    monkeypatch.setattr(cli, "_load_model", lambda args, checkpoint, device=None: model)
    out = root / name
    argv = ["analyze", str(path), str(root / "units"), "--out", str(out), "--plan", "alternate"]
    with plant:
        assert cli.main([*argv, "--no-charts", "--quiet", "--n-permutations", "3"]) == 0
    printed = capsys.readouterr().out.splitlines()
    summary = pd.read_csv(out / "summary.csv")
    rows = summary[
        (summary.modality == "speech")
        & (summary.view == "text")
        & (summary.metric == "transcription")
        & (summary.k == 10)
    ]
    return printed, (out / "report.md").read_text(), rows.set_index("layer")


def test_analyze_hears_the_planted_hearer(setup, monkeypatch, capsys):
    _, _, model, data = setup
    plant = plant_hearer(model, hearer_lookup(model, data), layers=range(PLANTED[0], PLANTED[1] + 1))
    printed, report, rows = _analyze(setup, plant, "hearer", monkeypatch, capsys)
    assert printed[0].startswith("heard above context: +")
    assert int(printed[0].split(" at layer ")[1].split()[0]) in PLANTED
    assert report.splitlines()[2] == f"**{printed[0]}**"
    for layer in range(6):
        if layer in PLANTED:
            assert rows.loc[layer, "heard_low"] > 0.5 and rows.loc[layer, "rate"] == 1.0
        else:  # nothing heard
            assert rows.loc[layer, "heard_low"] <= 0 <= rows.loc[layer, "heard_high"]
            assert rows.loc[layer, "heard_low_type"] <= 0
    assert "chance (shuffled)" in printed[1] and "swapped audio" in printed[1]


def test_analyze_does_not_hear_the_planted_guesser(setup, monkeypatch, capsys):
    _, _, model, data = setup
    plant = plant_guesser(model, guesser_lookup(model, data), layers=range(PLANTED[0], PLANTED[1] + 1))
    printed, report, rows = _analyze(setup, plant, "guesser", monkeypatch, capsys)
    assert printed[0].startswith("heard above context: no layer clears")
    assert (rows.loc[list(PLANTED), "rate"] == 1.0).all()
    planted = rows.loc[list(PLANTED)]  # read out by the guess, and context explains all of it
    assert ((planted["heard_low"] <= 0) & (planted["heard_high"] >= 0)).all()
    assert not ((rows["heard_low"] > 0) & (rows["heard_low_type"] > 0)).any()  # no layer clears
    assert "no layer clears" in report.splitlines()[2]


def test_analyze_controls_option(setup, monkeypatch, capsys):
    root, path, model, _ = setup
    monkeypatch.setattr(cli, "_load_model", lambda args, checkpoint, device=None: model)
    argv = ["analyze", str(path), str(root / "units"), "--no-charts", "--quiet", "--plan", "alternate"]
    assert cli.main([*argv, "--out", str(root / "bad"), "--controls", "shuffled,bogus"]) == 2
    assert "--controls 'shuffled,bogus': unknown ['bogus']" in capsys.readouterr().err
    assert not (root / "bad").exists()  # refused before anything ran
    assert cli.main([*argv, "--out", str(root / "shuffled-only"), "--controls", "shuffled"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("heard above context: not measured (swapped-audio control turned off")
    summary = pd.read_csv(root / "shuffled-only" / "summary.csv")
    assert "shuffled_rate" in summary and "swapped_rate" not in summary
    assert not (root / "shuffled-only" / "swapped_transcription.parquet").exists()
    report = (root / "shuffled-only" / "report.md").read_text()
    assert "- context control: none (swapped-audio control off)" in report
