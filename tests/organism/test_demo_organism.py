"""``slm-lens demo`` runs on the packaged main organism by default."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from slm_transformerlens.cli import main


@pytest.mark.slow
def test_demo_defaults_to_the_organism(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--no-png", "--quiet"]) == 0
    assert "report:" in capsys.readouterr().out
    names = {p.name for p in out.iterdir()}
    assert {"report.md", "summary.csv", "peaks.csv", "organism_results.md", "organism_curves.csv"} <= names
    summary = pd.read_csv(out / "summary.csv")
    assert summary["layer"].nunique() == 8 and set(summary["modality"]) == {"speech", "text"}
    assert "model organism" in (out / "report.md").read_text()
    results = (out / "organism_results.md").read_text()
    assert "main_kmeans" in results and results.startswith("## Heard above context")
    assert report_first_note_is_heard(out / "report.md")
    # the ablation comparison and spoken knowledge vs transcription, drawn from the shipped evaluation
    charts = ["organism_ablation.html", "organism_rates.html", "organism_knowledge.html"]
    assert set(charts) <= names and not {"organism_ablation.png", "organism_knowledge.png"} & names
    report = (out / "report.md").read_text()
    for name in [*charts, "organism_results.md", "organism_curves.csv"]:
        assert f"- `{name}`" in report  # listed under Files
    assert all(f"- `{name}`:" in results for name in charts)


def report_first_note_is_heard(report: Path) -> bool:
    """The demo report's first note is the heard headline (before any rate)."""
    text = report.read_text()
    return 0 <= text.find("Heard above context") < text.find("transcription")
