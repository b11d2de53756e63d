"""compare_models / slm-lens compare: two tiny checkpoints of different depth in one report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from slm_transformerlens import testing
from slm_transformerlens.apps.compare import CompareError, compare_models, rate_knowledge_correlation
from slm_transformerlens.cli import main
from slm_transformerlens.knowledge import FACTS, items_from_facts
from slm_transformerlens.lens import LensProtocol
from slm_transformerlens.speech.inputs import Speech, Text

FIXTURE = Path(__file__).resolve().parent / "fixtures/knowledge/facts_espeak.parquet"
WORDS = ["the", "little", "girl", "went", "to", "the", "forest"]


@pytest.fixture(scope="module")
def two_checkpoints(spiritlm_checkpoint, tmp_path_factory):
    """The 3-layer tiny SpiritLM and a 2-layer one (another seed)."""
    shallow = testing.make_spiritlm_checkpoint(tmp_path_factory.mktemp("shallow"), n_layers=2, seed=1)
    return [spiritlm_checkpoint, shallow]


def _utterances(model, n: int = 3) -> list:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        units = rng.integers(0, model.speech_vocab.n_units, 3 * len(WORDS)).tolist()
        words = [(w, 0.12 * i, 0.12 * (i + 1)) for i, w in enumerate(WORDS)]
        out.append([Text("once upon a time"), Speech(units=units, words=words)])
    return out


def test_compare_two_checkpoints_writes_one_report_with_both(two_checkpoints, tmp_path):
    result = compare_models(
        two_checkpoints,
        _utterances,
        tmp_path / "cmp",
        names=["deep", "shallow"],
        knowledge_items=items_from_facts(FACTS[:4]),
        knowledge_mode="text",
        protocol=LensProtocol(positions="max", k=5, n_boot=100),
        progress=False,
    )
    assert set(result.summary["model"]) == {"deep", "shallow"}
    assert result.summary.groupby("model")["layer"].nunique().to_dict() == {"deep": 3, "shallow": 2}
    peaks = result.peaks.set_index("model")
    assert list(peaks["n_layers"]) == [3, 2]
    np.testing.assert_allclose(peaks["peak_depth"], (peaks["peak_layer"] + 1) / peaks["n_layers"])
    assert (peaks["knowledge_n"] == 4).all()
    expected = result.knowledge.groupby("model")["score_mean"].mean()
    np.testing.assert_allclose(peaks["knowledge_accuracy"], expected[peaks.index])
    assert {"shuffled_rate", "swapped_rate", "heard", "cluster_low", "cluster_high"} <= set(
        result.summary.columns
    )
    assert "prior_rate" not in result.summary.columns  # max-pooled: no single-guess prior beside it
    report = result.report.read_text()
    assert (
        "prior_rate" not in report and "frequency prior" not in (tmp_path / "cmp" / "rates.html").read_text()
    )
    for name in ("deep", "shallow"):  # one headline per model, at the top
        assert f"- **{name}**: heard above context: " in report.split("## Protocol")[0]
    assert "deep" in report and "shallow" in report
    assert "pooling `max`" in report and "top-5" in report
    assert "not defined (n = 2 model(s)" in report
    assert "fraction of depth" in report  # depths differ
    assert "text-knowledge accuracy per model" in report and "spoken knowledge" not in report.replace(
        "-", " "
    )  # knowledge_mode="text"
    chart = (tmp_path / "cmp" / "rates.html").read_text()
    assert "deep" in chart and "shallow" in chart and "depth" in chart


def test_correlation_matches_scipy():
    from scipy import stats

    rates = [0.1, 0.4, 0.35, 0.8, 0.6]
    accuracies = [0.5, 0.55, 0.6, 0.7, 0.7]  # a tie: Spearman uses average ranks
    got = rate_knowledge_correlation(rates, accuracies)
    assert got["n"] == 5
    assert got["pearson"] == pytest.approx(stats.pearsonr(rates, accuracies)[0])
    assert got["spearman"] == pytest.approx(stats.spearmanr(rates, accuracies)[0])
    assert np.isnan(rate_knowledge_correlation([0.1, 0.2], [0.3, 0.4])["pearson"])
    assert rate_knowledge_correlation([0.1, np.nan, 0.3], [0.5, 0.6, np.nan])["n"] == 1


def test_names_must_match_checkpoints(two_checkpoints, tmp_path):
    with pytest.raises(CompareError, match="one distinct name"):
        compare_models(two_checkpoints, _utterances, tmp_path, names=["a"], progress=False)


def test_cli_compare_with_unit_files_and_knowledge(two_checkpoints, tmp_path, capsys):
    rng = np.random.default_rng(1)
    files = []
    for i in range(2):
        path = tmp_path / f"utt{i}.json"
        aligned = [[w, 0.12 * j, 0.12 * (j + 1)] for j, w in enumerate(WORDS)]
        path.write_text(json.dumps({"units": rng.integers(0, 400, 21).tolist(), "aligned_text": aligned}))
        files.append(str(path))
    out = tmp_path / "out"
    argv = ["compare", *map(str, two_checkpoints), "--data", *files, "--names", "a", "b"]
    argv += ["--knowledge", str(FIXTURE), "--knowledge-mode", "text", "--positions", "any", "--out", str(out)]
    argv += ["--no-png", "--quiet", "--content-words"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("knowledge accuracy") == 2
    report = (out / "report.md").read_text()
    assert "pooling `any`" in report and "stop words excluded" in report
    assert (out / "knowledge.csv").is_file() and (out / "rates.html").is_file()


def test_compare_reads_with_the_lens_it_is_given(two_checkpoints, tmp_path):
    """compare_models(make_lens=PatchscopeLens) gives each model the per-layer rates of transcription_table
    read with that lens directly (hits counted by hand), not the logit lens's."""
    import slm_transformerlens as slt
    from slm_transformerlens.lens import PatchscopeLens, transcription_table

    k = 100  # a rate away from 0 on a random model (the text vocabulary has ~400 tokens)
    protocol = LensProtocol(k=k, ks=(k,), controls=False, swapped_audio=False, n_boot=50)
    result = compare_models(
        two_checkpoints,
        _utterances,
        tmp_path / "cmp",
        names=["deep", "shallow"],
        protocol=protocol,
        make_lens=lambda model: PatchscopeLens(model, progress=False),
        charts=False,
        progress=False,
    )
    assert "read-out: PatchscopeLens" in result.report.read_text()
    for name, path in zip(["deep", "shallow"], two_checkpoints, strict=True):
        model = slt.load(path, progress=False)
        rows = result.summary[(result.summary["model"] == name) & (result.summary["k"] == k)]
        for lens, same in ((PatchscopeLens(model, progress=False), True), (None, False)):
            table = transcription_table(model, _utterances(model), lens=lens, views=("text",), progress=False)
            table = table[table["modality"] == "speech"]
            for metric, rank in (("transcription", "rank"), ("next_word", "next_rank")):
                got = rows[rows["metric"] == metric].set_index("layer")["rate"]
                ranks = table.dropna(subset=[rank])
                expected = (ranks[rank] < k).groupby(ranks["layer"]).mean()
                assert len(got) == model.cfg.n_layers and (got > 0).any()
                assert np.allclose(got.sort_index(), expected.sort_index()) == same, (name, metric, lens)


def test_cli_compare_lens_options(two_checkpoints, tmp_path, capsys):
    files = []
    for i in range(2):
        path = tmp_path / f"utt{i}.json"
        aligned = [[w, 0.12 * j, 0.12 * (j + 1)] for j, w in enumerate(WORDS)]
        units = np.random.default_rng(i).integers(0, 400, 21).tolist()
        path.write_text(json.dumps({"units": units, "aligned_text": aligned}))
        files.append(str(path))
    argv = ["compare", *map(str, two_checkpoints), "--data", *files, "--names", "a", "b", "--quiet"]
    argv += ["--no-charts", "--controls", "none", "--out", str(tmp_path / "out")]
    assert main([*argv, "--patchscope-prompt", "identity"]) == 2
    assert "--patchscope-prompt needs --lens patchscope" in capsys.readouterr().err
    assert main([*argv, "--lens", "patchscope", "--patchscope-prompt", "cat cat ; {x}"]) == 0
    assert "read-out: PatchscopeLens" in (tmp_path / "out" / "report.md").read_text()
