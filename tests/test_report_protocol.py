"""Reports state their protocol, draw the chance band and label heatmap positions with input tokens."""

from __future__ import annotations

import pandas as pd

from slm_transformerlens.lens import LensProtocol, TargetConfig, WordFilter
from slm_transformerlens.report import write_lens_report
from tests.lens.conftest import make_utterance


def test_report_states_protocol_and_draws_chance(spiritlm_model, tmp_path):
    data = [make_utterance(spiritlm_model, seed) for seed in range(3)]
    protocol = LensProtocol(
        positions="any",
        k=5,
        modalities=None,
        target_config=TargetConfig(case_variants=("capitalize",), space_variants=True),
        word_filter=WordFilter(most_frequent=1),
        cluster_by="word",
        n_boot=50,
    )
    result = write_lens_report(spiritlm_model, data, tmp_path, protocol=protocol, png=True, progress=False)
    report = result.report.read_text()
    for expected in (
        "## Protocol",
        "pooling `any`",
        "top-5 of the `text` view",
        "case variants capitalize",
        "with and without the leading space",
        "the 1 most frequent word types excluded",
        "cluster bootstrap by word",
        "shuffled targets",
        "| layer | rate | shuffled_rate | prior_rate |",
    ):
        assert expected in report, expected
    assert {"shuffled_rate", "prior_rate", "cluster_low"} <= set(result.summary.columns)
    assert {"shuffled_rate", "prior_rate"} <= set(result.peaks.columns)
    speech_chart = (tmp_path / "rates_speech.html").read_text()
    assert "shuffled_rate" in speech_chart and "prior_rate" in speech_chart
    heat = pd.read_csv(tmp_path / "heatmap.csv.gz")
    _, spans = data[0]
    first_unit = int(spans.loc[spans.word == "red", "start"].iloc[0])
    assert heat.loc[heat.position == first_unit, "input_token"].iloc[0].startswith("[Hu")
    heat_html = (tmp_path / "heatmap.html").read_text()
    assert "labelExpr" in heat_html and "[Speech]" in heat_html
    assert (tmp_path / "heatmap.png").stat().st_size > 1000  # the label expression renders
