"""The organism charts draw the shipped evaluation's numbers as they are (read back from the figures)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("altair")
pytest.importorskip("vl_convert")

from slm_transformerlens.apps.organism_demo import write_organism_charts
from slm_transformerlens.lens import wilson_interval
from slm_transformerlens.organism.report import format_results, knowledge_vs_transcription
from slm_transformerlens.organism.shipped import shipped_models, shipped_root
from slm_transformerlens.viz.organism import ablation_chart, heard_chart, knowledge_chart

EVALUATION = shipped_root() / "evaluation"


@pytest.fixture(scope="module")
def curves() -> pd.DataFrame:
    return pd.read_csv(EVALUATION / "curves.csv")


@pytest.fixture(scope="module")
def knowledge() -> dict[str, Any]:
    return json.loads((EVALUATION / "knowledge.json").read_text())


def figure_layers(chart: Any) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    """Each layer's Vega-Lite spec and the rows it draws, from the serialised figure."""
    spec = chart.to_dict()
    out = []
    for layer in spec["layer"]:
        data = layer.get("data", spec.get("data"))
        rows = data["values"] if "values" in data else spec["datasets"][data["name"]]
        out.append((layer, pd.DataFrame(rows)))
    return out


def title_of(chart: Any) -> str:
    return " ".join(chart.to_dict()["title"]["text"])


def test_ablation_chart_draws_every_curve_and_its_shuffled_control(curves: pd.DataFrame) -> None:
    chart = ablation_chart(curves)
    layers = figure_layers(chart)
    lines, points, band = (rows for _, rows in layers)  # no prior rule: the span read-out is pooled
    assert layers[0][0]["encoding"]["strokeDash"]["field"] == "series"  # solid vs dashed per model
    assert layers[0][0]["encoding"]["color"]["field"] == "model"  # one colour per model
    expected = curves[curves["metric"].isin(["transcription_span", "transcription_span_shuffled"])]
    expected = expected.assign(
        series=expected["metric"].map(
            {"transcription_span": "read-out", "transcription_span_shuffled": "shuffled targets"}
        )
    )
    keys = ["model", "series", "layer"]
    for drawn in (lines, points):
        merged = expected.merge(drawn, on=keys, suffixes=("", "_drawn"), validate="one_to_one")
        assert len(merged) == len(expected) == len(drawn) == 6 * 8 * 2
        for column in ("rate", "ci_low", "ci_high", "n"):
            np.testing.assert_array_equal(merged[column], merged[f"{column}_drawn"])
    # the bands are the read-out's intervals (not the control's)
    assert set(band["series"]) == {"read-out"} and len(band) == 6 * 8
    merged = expected.merge(band, on=keys, suffixes=("", "_drawn"))
    np.testing.assert_array_equal(merged["ci_low"], merged["ci_low_drawn"])
    np.testing.assert_array_equal(merged["ci_high"], merged["ci_high_drawn"])
    # the chance level is the shuffled control; a pooled read-out is never drawn beside the single-guess prior
    assert "n = 1,563 words" in title_of(chart) and "prior" not in title_of(chart)
    # a single-position read-out keeps its frequency prior (one constant guess: like for like)
    last_layers = figure_layers(ablation_chart(curves, metric="transcription_last"))
    priors = curves.loc[curves["metric"] == "transcription_last_prior", "rate"].round(3).unique()
    assert len(last_layers) == 4 and last_layers[3][1]["prior"].tolist() == sorted(priors.tolist())
    assert "frequency prior" in title_of(ablation_chart(curves, metric="transcription_last"))
    assert "shuffled" in title_of(chart)
    # a subset, in a given order
    two = figure_layers(ablation_chart(curves, models=["main_kmeans", "untrained_units_kmeans"]))[0][1]
    assert set(two["model"]) == {"main_kmeans", "untrained_units_kmeans"}
    with pytest.raises(ValueError, match="no 'nope' rows"):
        ablation_chart(curves, metric="nope")


def test_knowledge_chart_draws_the_shipped_accuracies(
    curves: pd.DataFrame, knowledge: dict[str, Any]
) -> None:
    table = knowledge_vs_transcription(curves, knowledge)
    chart = knowledge_chart(table)
    layers = figure_layers(chart)
    rule = layers[0][1]
    assert rule["chance"].tolist() == [0.5]
    drawn = layers[4][1].set_index("model")  # the spoken points (every layer draws the same rows)
    assert layers[4][0]["mark"]["filled"] and layers[4][0]["encoding"]["y"]["field"] == "spoken_knowledge"
    assert layers[3][0]["encoding"]["y"]["field"] == "written_knowledge"
    assert layers[5][0]["mark"]["type"] == "text" and layers[5][0]["encoding"]["text"]["field"] == "model"
    assert sorted(drawn.index) == shipped_models()
    span = curves[curves["metric"] == "transcription_span"]
    for model, row in drawn.iterrows():
        facts = knowledge[model]
        peak = span[span["model"] == model].sort_values("layer")
        peak = peak.loc[peak["rate"].idxmax()]
        assert (row["transcription_peak"], row["transcription_ci_low"], row["transcription_ci_high"]) == (
            peak["rate"],
            peak["ci_low"],
            peak["ci_high"],
        )
        assert row["transcription_peak_layer"] == peak["layer"]
        assert row["spoken_knowledge"] == facts["speech_accuracy"]
        assert row["written_knowledge"] == facts["text_accuracy"]
        assert row["n_facts"] == facts["speech_n"] == 133
        low, high = wilson_interval(np.asarray(facts["speech_accuracy"] * 133), 133)
        assert (row["spoken_ci_low"], row["spoken_ci_high"]) == (float(low), float(high))
        assert row["spoken_ci_low"] < row["spoken_knowledge"] < row["spoken_ci_high"]
    assert "n = 133 facts" in title_of(chart) and "chance 0.5" in title_of(chart)
    with pytest.raises(ValueError, match="lacks columns"):
        knowledge_chart(table.drop(columns=["spoken_ci_low"]))


def test_results_table_is_unchanged_by_the_knowledge_table(
    curves: pd.DataFrame, knowledge: dict[str, Any]
) -> None:
    differences = json.loads((EVALUATION / "differences.json").read_text())
    heard = pd.read_csv(EVALUATION / "heard.csv")
    verdicts = json.loads((EVALUATION / "heard_acceptance.json").read_text())
    report = format_results(curves, differences, knowledge, heard, verdicts)
    assert report.strip() == (EVALUATION / "results.md").read_text().strip()
    assert report.startswith("## Heard above context")  # heard first, what holds in plain words


def test_heard_chart_draws_every_heard_row_with_its_interval() -> None:
    heard = pd.read_csv(EVALUATION / "heard.csv")
    chart = heard_chart(heard)
    lines, _points, band, zero = (rows for _, rows in figure_layers(chart))
    expected = heard[(heard["readout"] == "any") & (heard["split"] == "heldout")]
    assert set(shipped_models()) <= set(expected["model"])
    merged = lines.merge(expected, on=["model", "layer"], suffixes=("", "_csv"))
    assert len(merged) == len(expected) == len(lines)
    for column in ("heard", "heard_low", "heard_high"):
        assert np.allclose(merged[column], merged[column + "_csv"])
    assert np.allclose(band["heard_low"], lines["heard_low"]) and zero["zero"].tolist() == [0.0]
    assert "n = 1,563" in title_of(chart)


def test_write_organism_charts(tmp_path: Path) -> None:
    files = write_organism_charts(EVALUATION, tmp_path, png=False)
    assert sorted(files) == ["organism_ablation_html", "organism_knowledge_html", "organism_rates_html"]
    for path in files.values():
        html = path.read_text()
        assert "<script" in html and "cdn." not in html  # self-contained
    assert "main_kmeans" in files["organism_knowledge_html"].read_text()
