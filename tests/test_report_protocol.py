"""Reports state their protocol and heard headline, draw the chance lines and label heatmap positions with
input tokens."""

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
        "- chance level: the shuffled-target control (`shuffled_rate`): the same `any` read-out",
        "in the top-k at ANY position of the span",
        "- frequency prior: not shown: this read-out pools several positions",
        "- context control: swapped audio",
        "| layer | rate | shuffled_rate | shuffled_sd | swapped_rate | heard | heard_low | heard_high |",
    ):
        assert expected in report, expected
    assert report.splitlines()[2].startswith("**heard above context: ")  # the headline comes first
    assert result.headline in report
    # a pooled read-out (several tries per word) is never shown beside a single-guess prior
    assert "prior_rate" not in report
    assert {"shuffled_rate", "swapped_rate", "heard", "cluster_low"} <= set(result.summary.columns)
    assert "prior_rate" not in result.summary.columns and "prior_rate" not in result.peaks.columns
    assert not result.summary.loc[result.summary.modality == "speech", "shuffled_rate"].isna().any()
    speech_chart = (tmp_path / "rates_speech.html").read_text()
    assert "shuffled_rate" in speech_chart and "swapped_rate" in speech_chart
    assert "prior_rate" not in speech_chart
    assert (tmp_path / "swapped_transcription.parquet").is_file()
    heat = pd.read_csv(tmp_path / "heatmap.csv.gz")
    _, spans = data[0]
    first_unit = int(spans.loc[spans.word == "red", "start"].iloc[0])
    assert heat.loc[heat.position == first_unit, "input_token"].iloc[0].startswith("[Hu")
    heat_html = (tmp_path / "heatmap.html").read_text()
    assert "labelExpr" in heat_html and "[Speech]" in heat_html
    assert (tmp_path / "heatmap.png").stat().st_size > 1000  # the label expression renders
