"""``slm-lens knowledge``: accuracy printed, table written, errors as one line."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from slm_transformerlens.cli import main

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures/knowledge/facts_espeak.parquet"


def test_knowledge_text_mode_on_the_fixture(spiritlm_checkpoint, tmp_path, capsys):
    out = tmp_path / "k"
    rc = main(
        ["knowledge", str(spiritlm_checkpoint), str(FIXTURE), "--mode", "text", "--out", str(out), "--quiet"]
    )
    assert rc == 0
    table = pd.read_csv(out / "knowledge.csv")
    assert len(table) == 24
    printed = capsys.readouterr().out
    assert f"knowledge accuracy {table['score_mean'].mean():.3f} (n=24, mode text" in printed


def test_knowledge_speech_without_hubert_is_one_line(spiritlm_checkpoint, tmp_path, capsys):
    rc = main(["knowledge", str(spiritlm_checkpoint), str(FIXTURE), "--out", str(tmp_path), "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "speech tokenizer" in err[0] and "--hubert" in err[0]
