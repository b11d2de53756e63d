"""``organism.spread`` and ``slm-lens organism spread``: heard across runs, checked against hand-made
evaluation folders whose peaks, inner lower bounds, criteria and Wilson intervals are worked out here."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from slm_transformerlens.cli import main as cli_main
from slm_transformerlens.errors import SLMError
from slm_transformerlens.organism.recipe import RECIPES, Recipe
from slm_transformerlens.organism.spread import format_spread, heard_spread, spread_verdict

MAIN, RANDOM = "main_phoneme", "random_init_phoneme"


def _evaluation(
    folder: Path,
    heard: dict[tuple[str, str], list[float]],
    holds: dict[str, bool],
    *,
    low_type: dict[tuple[str, str], list[float]] | None = None,
    layers: tuple[int, ...] = (1,),
) -> Path:
    """A folder like ``organism evaluate``'s: heard per (split, model) over 4 layers, lower bound = heard -
    0.02, upper = heard + 0.02, lower bound by word type = heard - 0.03 unless ``low_type`` gives that
    (split, model)'s per layer; a ``max`` read-out row set (0.5 higher) that must be ignored; the
    criterion holds at ``layers`` where it holds; knowledge 0.6 of 50."""
    folder.mkdir(parents=True)
    rows = []
    for (split, model), values in heard.items():
        by_type = (low_type or {}).get((split, model), [h - 0.03 for h in values])
        for layer, (h, t) in enumerate(zip(values, by_type, strict=True)):
            for readout, shift in (("any", 0.0), ("max", 0.5)):
                rows.append(
                    {
                        "split": split,
                        "model": model,
                        "readout": readout,
                        "layer": layer,
                        "heard": h + shift,
                        "heard_low": h + shift - 0.02,
                        "heard_high": h + shift + 0.02,
                        "heard_low_type": t + shift,
                        "n": 100,
                    }
                )
    pd.DataFrame(rows).to_csv(folder / "heard.csv", index=False)
    verdicts = {MAIN: {s: {"holds": ok, "layers": list(layers) if ok else []} for s, ok in holds.items()}}
    (folder / "heard_acceptance.json").write_text(json.dumps(verdicts))
    knowledge = {m: {"speech_accuracy": 0.6, "speech_n": 50} for m in (MAIN, RANDOM)}
    (folder / "knowledge.json").write_text(json.dumps(knowledge))
    return folder


def _run(tmp: Path, name: str, holds: dict[str, bool], **kwargs) -> Path:
    heard = {
        ("heldout", MAIN): [0.01, 0.05, 0.03, 0.09],  # peak at the LAST layer; best inner low 0.05 - 0.02
        ("heldout", RANDOM): [0.02, 0.01, 0.00, 0.00],
        ("new", MAIN): [0.07, 0.04, 0.06, 0.01],
        ("new", RANDOM): [0.00, 0.03, 0.00, 0.00],
    }
    return _evaluation(tmp / name, heard, holds, **kwargs)


def test_spread_rows_by_hand(tmp_path: Path) -> None:
    table = heard_spread({"s0": _run(tmp_path, "a", {"heldout": True, "new": False})})
    main = table[(table["model"] == MAIN) & (table["split"] == "heldout")].iloc[0]
    assert (main["heard_peak"], main["peak_layer"], main["n_layers"]) == (0.09, 3, 4)  # `any`, not `max`
    assert main["heard_low"] == pytest.approx(0.07) and main["heard_high"] == pytest.approx(0.11)
    assert main["best_inner_low"] == pytest.approx(0.03)  # layers 1..2 only
    assert main["criterion"] == "holds" and main["criterion_layers"] == "1"
    new = table[(table["model"] == MAIN) & (table["split"] == "new")].iloc[0]
    assert new["criterion"] == "fails" and new["peak_layer"] == 0
    assert set(table.loc[table["model"] == RANDOM, "criterion"]) == {""}
    # Wilson 95% interval of 30 / 50, by the textbook formula; only on the held-out voice's rows
    z, p, n = 1.959963984540054, 0.6, 50
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert main["spoken_low"] == pytest.approx(centre - half, abs=1e-6)
    assert main["spoken_high"] == pytest.approx(centre + half, abs=1e-6)
    assert math.isnan(new["spoken_knowledge"])


def test_majority_rule_counts_runs_that_hold_on_every_split(tmp_path: Path) -> None:
    both, one = {"heldout": True, "new": True}, {"heldout": False, "new": True}
    minority = heard_spread({f"s{i}": _run(tmp_path, f"m{i}", h) for i, h in enumerate([both, one, one])})
    assert spread_verdict(minority) == {
        MAIN: {
            "runs": 3,
            "holds_on_every_split": ["s0"],
            "majority": False,
            "robust_on_every_split": ["s0"],  # by type: 0.05 - 0.03 and 0.04 - 0.03 at layer 1, both > 0
            "robust_majority": False,
        }
    }
    assert "1 of 3 runs (s0): NOT a majority" in format_spread(minority)
    majority = heard_spread({f"s{i}": _run(tmp_path, f"j{i}", h) for i, h in enumerate([both, one, both])})
    assert spread_verdict(majority)[MAIN] == {
        "runs": 3,
        "holds_on_every_split": ["s0", "s2"],
        "majority": True,
        "robust_on_every_split": ["s0", "s2"],
        "robust_majority": True,
    }
    tie = heard_spread({f"s{i}": _run(tmp_path, f"t{i}", h) for i, h in enumerate([both, one])})
    assert spread_verdict(tie)[MAIN]["majority"] is False  # half is not a majority


def test_by_word_type_at_the_criterion_layers_by_hand(tmp_path: Path) -> None:
    """Round 3's rule: the criterion (by utterance) on every split AND, on each, main's lower bound by word
    type above 0 at one of its criterion layers (the largest over those layers, not over all layers)."""
    both, one = {"heldout": True, "new": True}, {"heldout": False, "new": True}
    # criterion layers 1 and 2; s1's `new` is above 0 by type only at layers 0 and 3, outside them
    s1_type = {("new", MAIN): [0.5, -0.004, -0.010, 0.5]}
    table = heard_spread(
        {
            "s0": _run(tmp_path, "r0", both, layers=(1, 2)),
            "s1": _run(tmp_path, "r1", both, layers=(1, 2), low_type=s1_type),
            "s2": _run(tmp_path, "r2", one, layers=(1, 2)),
        }
    )
    row = {(r.run, r.split, r.model): r for r in table.itertuples()}
    # s0 heldout: by type 0.05 - 0.03 = 0.02 at layer 1, 0.03 - 0.03 = 0 at layer 2 -> 0.02
    assert row["s0", "heldout", MAIN].type_low == pytest.approx(0.02)
    assert row["s0", "heldout", MAIN].robust == "holds"
    # s0 new: 0.04 - 0.03 = 0.01 at layer 1, 0.06 - 0.03 = 0.03 at layer 2 -> 0.03
    assert row["s0", "new", MAIN].type_low == pytest.approx(0.03)
    assert row["s1", "new", MAIN].type_low == pytest.approx(-0.004)  # not 0.5 (layers 0, 3)
    assert (row["s1", "new", MAIN].robust, row["s1", "heldout", MAIN].robust) == ("fails", "holds")
    assert math.isnan(row["s2", "heldout", MAIN].type_low) and row["s2", "heldout", MAIN].robust == "fails"
    assert row["s2", "new", MAIN].robust == "holds"
    assert set(table.loc[table["model"] == RANDOM, "robust"]) == {""}
    assert table.loc[table["model"] == RANDOM, "type_low"].isna().all()
    assert spread_verdict(table) == {
        MAIN: {
            "runs": 3,
            "holds_on_every_split": ["s0", "s1"],
            "majority": True,
            "robust_on_every_split": ["s0"],
            "robust_majority": False,
        }
    }
    text = format_spread(table)
    lines = text.splitlines()
    assert (
        lines[0]
        == "- main_phoneme: issue 21's criterion holds on every test split in 2 of 3 runs (s0, s1): a majority."
    )
    assert lines[1] == (
        "- main_phoneme: issue 21's criterion holds on every test split and by word type too (heard_low_type "
        "above 0 at a criterion layer) in 1 of 3 runs (s0): NOT a majority."
    )
    assert "| criterion | by word type at criterion layers | spoken knowledge [95%] |" in text
    assert (
        "| s0 | heldout | main_phoneme | +0.090 [+0.070, +0.110] (3) | +0.030 | holds (1, 2) | +0.020 (holds) |"
        in text
    )
    assert (
        "| s1 | new | main_phoneme | +0.070 [+0.050, +0.090] (0) | +0.040 | holds (1, 2) | -0.004 (fails) |  |"
        in text
    )
    assert "| s2 | heldout | main_phoneme | +0.090 [+0.070, +0.110] (3) | +0.030 | fails | fails |" in text
    assert "| s2 | heldout | random_init_phoneme | +0.020 [+0.000, +0.040] (0) | -0.010 |  |  | 0.600" in text


def test_an_evaluation_without_heard_low_type_gives_n_a(tmp_path: Path) -> None:
    """A heard.csv written before the bound by word type: the criterion as before, by type "n/a"."""
    old = _run(tmp_path, "old", {"heldout": True, "new": True})
    heard = pd.read_csv(old / "heard.csv")
    heard.drop(columns="heard_low_type").to_csv(old / "heard.csv", index=False)
    new = _run(tmp_path, "new", {"heldout": True, "new": True})
    table = heard_spread({"old": old, "new": new})
    mains = table[table["model"] == MAIN]
    assert list(mains["criterion"]) == ["holds"] * 4
    assert list(mains["robust"]) == ["n/a", "n/a", "holds", "holds"]
    assert mains["type_low"].iloc[:2].isna().all()
    assert set(table.loc[table["model"] == RANDOM, "robust"]) == {""}
    v = spread_verdict(table)[MAIN]
    assert (v["holds_on_every_split"], v["majority"]) == (["old", "new"], True)
    assert (v["robust_on_every_split"], v["robust_majority"]) == (["new"], False)
    text = format_spread(table)
    assert "| old | heldout | main_phoneme | +0.090 [+0.070, +0.110] (3) | +0.030 | holds (1) | n/a |" in text
    assert "in 1 of 2 runs (new): NOT a majority. (old: no heard_low_type, counted as not holding)" in text


def test_spread_refuses_a_folder_without_heard(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "curves.csv").write_text("x\n")
    with pytest.raises(SLMError, match=r"no heard\.csv or heard_acceptance\.json.*organism evaluate"):
        heard_spread({"old": tmp_path / "old"})


def test_spread_cli_writes_a_new_file_and_never_overwrites(tmp_path: Path, capsys) -> None:
    a = _run(tmp_path, "a", {"heldout": True, "new": True})
    b = _run(tmp_path, "b", {"heldout": False, "new": False})
    out = tmp_path / "spread.md"
    assert cli_main(["organism", "spread", f"seed 0={a}", str(b), "--out", str(out)]) == 0
    text = out.read_text()
    assert (
        "| seed 0 | heldout | main_phoneme | +0.090 [+0.070, +0.110] (3) | +0.030 | holds (1) | +0.020 (holds) |"
        in text
    )
    assert "| b | new | main_phoneme |" in text and "1 of 2 runs (seed 0): NOT a majority" in text
    assert text in capsys.readouterr().out
    odd = _run(tmp_path, "lr=3e-3", {"heldout": True, "new": True})  # an existing path is a folder
    assert cli_main(["organism", "spread", str(odd)]) == 0
    assert "| lr=3e-3 | heldout |" in capsys.readouterr().out
    assert cli_main(["organism", "spread", str(a), "--out", str(out)]) != 0
    assert "never overwrites" in capsys.readouterr().err
    assert out.read_text() == text


def test_round2_presets_change_only_what_they_name() -> None:
    hear = Recipe.preset("hear")
    assert {"hear-short", "hear-large"} <= set(RECIPES)
    short, large = Recipe.preset("hear-short"), Recipe.preset("hear-large")
    changed = lambda r: {k for k, v in vars(r).items() if vars(hear)[k] != v}  # noqa: E731
    assert changed(short) == {"name", "phase2_tokens"} and short.phase2_tokens == hear.phase2_tokens // 3
    assert changed(large) == {"name", "d_model", "n_layers", "n_heads", "d_mlp"}
    large_long = Recipe.preset("hear-large-long")
    assert changed(large_long) == changed(large) | {"phase2_tokens"}
    assert large_long.phase2_tokens == Recipe.preset("hear-long").phase2_tokens == 3 * hear.phase2_tokens


SHIPPED = Path(__file__).resolve().parents[2] / "slm_transformerlens" / "data" / "organism" / "hear"


@pytest.mark.parametrize(
    ("spread", "prefix"),
    [
        ("round2/spread_hear.md", "round2/hear_seed"),
        ("round2/spread_hear-short.md", "round2/short_seed"),
        ("round2/spread_hear-large.md", "round2/large_seed"),
        ("round2/spread_hear-large-long.md", "round2/large_long_seed"),
        ("round3/spread_hear-large-long-gpu.md", "round3/large_long_gpu_seed"),
        ("round3/spread_hear-xl.md", "round3/xl_seed"),
    ],
)
def test_shipped_spread_files_are_what_the_shipped_evaluations_give(spread: str, prefix: str) -> None:
    """``round2/`` and ``round3/spread_{recipe}.md`` (quoted by MODEL_CARD.md) are regenerated from the
    shipped folders, so a table cannot drift from the evaluations it summarises; the labels are the
    files' own."""
    text = (SHIPPED / spread).read_text()
    runs = {}
    for row in text.splitlines():
        cells = [c.strip() for c in row.split("|")[1:-1]]
        if len(cells) == 8 and cells[0].startswith("seed "):
            seed = cells[0].split()[1]
            folder = SHIPPED / "evaluation" if cells[0] == "seed 0 (round 1)" else SHIPPED / f"{prefix}{seed}"
            runs[cells[0]] = folder
    assert len(runs) >= 3
    assert format_spread(heard_spread(runs)) == text


def test_round3_xl_preset_is_what_plan_round3_says() -> None:
    """`hear-xl` (PLAN_round3.md, committed before the run): d_model 384, 12 layers, 6 heads, MLP 1,536,
    28.6M parameters, 1.2M + 3.6M tokens, learning rate 1e-3 with 200 warm-up steps; the data as `hear`."""
    from slm_transformerlens.organism.train import _new_model

    hear, xl = Recipe.preset("hear"), Recipe.preset("hear-xl")
    changed = {k for k, v in vars(xl).items() if vars(hear)[k] != v}
    assert changed == {
        "name",
        "d_model",
        "n_layers",
        "n_heads",
        "d_mlp",
        "phase1_tokens",
        "phase2_tokens",
    } | {
        "lr",
        "warmup_steps",
    }
    assert (xl.d_model, xl.n_layers, xl.n_heads, xl.d_mlp) == (384, 12, 6, 1536)
    assert (xl.phase1_tokens, xl.phase2_tokens, xl.lr, xl.warmup_steps) == (1_200_000, 3_600_000, 1e-3, 200)
    vocab = 768 + 68 + 2  # base tokenizer + 68 phoneme units + 2 markers (the hear build's vocab.json)
    n_parameters = sum(p.numel() for p in _new_model(xl, vocab, seed=0).parameters())
    assert n_parameters == 28_642_944  # 28.6M
