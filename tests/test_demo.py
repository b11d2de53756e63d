"""``slm-lens demo`` (the embedded default, real SmolLM2 + real speech) and ``slm-lens analyze``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from slm_transformerlens.apps.demo import DEMO_CLIPS, build_demo_assets, clip_paths
from slm_transformerlens.apps.report import markdown_table
from slm_transformerlens.cli import main
from slm_transformerlens.errors import SpeechInputError
from slm_transformerlens.speech.dataset import load_speech_dataset, read_unit_file


@pytest.mark.slow
@pytest.mark.realmodel
def test_demo_writes_the_report(demo_cache: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    argv = ["demo", "--model", "smollm2", "--out", str(out), "--cache", str(demo_cache)]
    assert main([*argv, "--no-png", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "report:" in printed and "next_word" in printed
    names = {p.name for p in out.iterdir()}
    assert {
        "report.md",
        "summary.csv",
        "peaks.csv",
        "heatmap.csv.gz",
        "heatmap.html",
        "modality_mass.html",
    } <= names
    assert {"rates_speech.html", "rates_text.html"} <= names
    assert "transcription.parquet" in names or "transcription.csv.gz" in names
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["modality"]) == {"speech", "text"} and summary["layer"].nunique() == 30
    assert summary["rate"].between(0, 1).all() and (summary["ci_low"] <= summary["rate"]).all()
    # real text weights: next-word prediction of written words is a late-layer phenomenon
    peaks = pd.read_csv(out / "peaks.csv")
    text_next = peaks.query("modality == 'text' and metric == 'next_word' and k == 10 and view == 'text'")
    assert len(text_next) == 1
    assert text_next["peak_layer"].item() >= 20 and text_next["peak_rate"].item() >= 0.3
    rates = summary.query("modality == 'text' and metric == 'next_word' and k == 10 and view == 'text'")
    assert rates.query("layer < 10")["rate"].max() < text_next["peak_rate"].item()
    report = (out / "report.md").read_text()
    assert "untrained" in report and "| layer | rate |" in report and "heatmap.html" in report
    assert (
        "<script" in (out / "heatmap.html").read_text()[:5000]
        and "cdn." not in (out / "heatmap.html").read_text()
    )


def test_analyze_wav_and_unit_files(checkpoint_factory, demo_cache: Path, tmp_path: Path, capsys) -> None:
    path, kwargs = checkpoint_factory("sims-qwen2-tied")
    assets = build_demo_assets(demo_cache, progress=False)
    data = tmp_path / "data"
    data.mkdir()
    for name in DEMO_CLIPS:
        for source in clip_paths(name):
            shutil.copy(source, data / source.name)
    wavs = sorted(str(p) for p in data.glob("*.wav"))
    # a unit file too: the first clip's units, written by hand
    import slm_transformerlens as slt

    model = slt.load(path, progress=False, **kwargs)
    speech = load_speech_dataset(wavs[:1], model.speech_vocab, hubert=assets.hubert, quantizer=assets.kmeans)
    segment = speech[0][0]
    unit_file = tmp_path / "units.json"
    unit_file.write_text(
        json.dumps(
            {
                "units": list(segment.units),
                "durations": list(segment.durations),
                "aligned_text": [[w.word, w.start, w.end] for w in segment.words],
            }
        )
    )
    assert read_unit_file(unit_file).units == segment.units
    out = tmp_path / "out"
    argv = ["analyze", str(path), *wavs, str(unit_file), "--tokenizer", str(kwargs["tokenizer"])]
    argv += ["--hubert", str(assets.hubert), "--quantizer", str(assets.kmeans), "--plan", "alternate"]
    argv += ["--out", str(out), "--no-charts", "--quiet", "-k", "5"]
    assert main(argv) == 0
    assert "top-5 rate peaks" in capsys.readouterr().out
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["modality"]) == {"speech", "text"} and summary["layer"].nunique() == 3
    assert not (out / "heatmap.html").exists()

    # bad input: one line naming the problem, no traceback
    lonely = tmp_path / "lonely.wav"
    shutil.copy(wavs[0], lonely)
    lonely_out = ["--out", str(tmp_path / "lonely-out")]
    assert (
        main(["analyze", str(path), str(lonely), "--tokenizer", str(kwargs["tokenizer"]), *lonely_out]) == 2
    )
    assert "--hubert" in capsys.readouterr().err
    assert not (tmp_path / "lonely-out").exists()  # a missing --hubert is found before the folder is used
    argv = ["analyze", str(path), str(lonely), "--tokenizer", str(kwargs["tokenizer"]), *lonely_out]
    argv += ["--hubert", str(assets.hubert), "--quantizer", str(assets.kmeans)]
    assert main(argv) == 2
    assert "no word alignment" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"units": [1, 2, 9999], "aligned_text": [["x", 0.0, 0.12]]}))
    with pytest.raises(SpeechInputError, match="out of range"):
        load_speech_dataset([bad], model.speech_vocab)
    bad.write_text(json.dumps({"aligned_text": []}))
    with pytest.raises(SpeechInputError, match="not a unit file"):
        load_speech_dataset([bad], model.speech_vocab)


def test_markdown_table() -> None:
    frame = pd.DataFrame({"a": [1, 2], "b": [0.5, 0.25], "c": ["x|y", "z"]})
    assert markdown_table(frame).splitlines() == [
        "| a | b | c |",
        "|---|---|---|",
        "| 1 | 0.500 | x\\|y |",
        "| 2 | 0.250 | z |",
    ]
    assert markdown_table(frame.iloc[0:0]) == "_(no rows)_"


def test_report_refuses_an_empty_selection(spiritlm_model, tmp_path: Path) -> None:
    from slm_transformerlens.apps.report import write_lens_report
    from slm_transformerlens.lens import LensError
    from tests.lens.conftest import make_utterance

    tokens, spans = make_utterance(spiritlm_model)
    written_only = (tokens, spans[spans["modality"] == "text"])
    with pytest.raises(LensError, match="nothing to analyse"):
        write_lens_report(spiritlm_model, [written_only], tmp_path, modalities=("speech",), progress=False)
    with pytest.raises(LensError, match=r"unknown \['pitch'\]; choose from \['speech', 'text'\]"):
        write_lens_report(spiritlm_model, [(tokens, spans)], tmp_path, modalities=("pitch",), progress=False)
    with pytest.raises(LensError, match="heatmap_utterance=3"):
        write_lens_report(spiritlm_model, [(tokens, spans)], tmp_path, heatmap_utterance=3, progress=False)
    done = write_lens_report(spiritlm_model, [(tokens, spans)], tmp_path, charts=False, progress=False)
    assert done.report.read_text().count("| layer | rate |") == 4  # 2 modalities x 2 metrics
