"""Heard across runs: one table for several ``slm-lens organism evaluate`` folders (seeds, recipes).

A single training run can hear or not by chance (issue 21, round 2: the ``hear`` recipe's seed 0 hears,
its seed 1 does not), so a claim about a recipe needs its spread over seeds. This module reads each
evaluation's ``heard.csv``, ``heard_acceptance.json`` and ``knowledge.json`` as written, recomputes
nothing, and puts them side by side:

- :func:`heard_spread`: per run, test split and model, heard's peak (read-out ``any``) with its 95% paired
  interval and layer, the best lower bound at an inner layer, issue 21's criterion (main models), whether
  it also holds by word type (main's ``heard_low_type`` above 0 at a criterion layer), and spoken-fact
  accuracy with its Wilson interval;
- :func:`spread_verdict`: the rule fixed before round 2 (``data/organism/hear/PLAN_round2.md``): a recipe's
  main model hears more than its baselines only if the criterion holds on every test split in a majority
  of its runs; and the one fixed before round 3 (``PLAN_round3.md``): it hears robustly only if, in a
  majority of its runs, the criterion holds on every test split and by word type too;
- :func:`format_spread`: both as markdown (``slm-lens organism spread``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from slm_transformerlens.errors import SLMError
from slm_transformerlens.lens.metrics import wilson_interval
from slm_transformerlens.organism.report import markdown_table

__all__ = ["format_spread", "heard_spread", "read_evaluation", "spread_verdict"]

_NEEDED = ("heard.csv", "heard_acceptance.json")
#: The facts are spoken by the held-out voice, so spoken knowledge goes on that split's rows only.
_FACTS_SPLIT = "heldout"


def read_evaluation(directory: str | Path) -> tuple[pd.DataFrame, dict[str, Any], dict[str, Any]]:
    """``(heard, verdicts, knowledge)`` of one evaluation folder; ``knowledge`` is ``{}`` when absent.

    Raises:
        SLMError: the folder lacks ``heard.csv`` or ``heard_acceptance.json`` (it was evaluated with
            ``heard=False`` or is not an evaluation folder).
    """
    folder = Path(directory)
    missing = [name for name in _NEEDED if not (folder / name).is_file()]
    if missing:
        raise SLMError(
            f"{folder} has no {' or '.join(missing)}: point at a folder written by "
            "`slm-lens organism evaluate` (which measures heard by default)"
        )
    heard = pd.read_csv(folder / "heard.csv")
    verdicts = json.loads((folder / "heard_acceptance.json").read_text())
    knowledge_path = folder / "knowledge.json"
    knowledge = json.loads(knowledge_path.read_text()) if knowledge_path.is_file() else {}
    return heard, verdicts, knowledge


def heard_spread(runs: Mapping[str, str | Path], *, readout: str = "any") -> pd.DataFrame:
    """One row per run x test split x model.

    Args:
        runs: ``{label: evaluation folder}``, e.g. ``{"hear seed 0": ..., "hear seed 1": ...}``.
        readout: heard's read-out (``any`` is issue 21's headline).

    Returns:
        Columns ``run, split, model, heard_peak, heard_low, heard_high, peak_layer, n_layers,
        best_inner_low`` (the highest lower bound at a layer strictly between the first and the last),
        ``criterion`` (``"holds"`` / ``"fails"`` for a main model, ``""`` for a baseline),
        ``criterion_layers``, ``type_low`` (a main model whose criterion holds: the largest lower bound by
        word type, ``heard_low_type``, over its criterion layers; NaN otherwise and when ``heard.csv``
        has no ``heard_low_type``), ``robust`` (a main model: ``"holds"`` when the criterion holds and
        ``type_low`` is above 0, ``"fails"`` otherwise, ``"n/a"`` without ``heard_low_type``; ``""``
        for a baseline), ``spoken_knowledge``, ``spoken_low``, ``spoken_high`` (95% Wilson, a tie
        counting half; on the ``heldout`` rows only, whose voice speaks the facts; NaN elsewhere and
        without ``knowledge.json``) and ``n``.
    """
    if not runs:
        raise SLMError("heard_spread needs at least one evaluation folder")
    rows = []
    for label, folder in runs.items():
        heard, verdicts, knowledge = read_evaluation(folder)
        part = heard[heard["readout"] == readout]
        if part.empty:
            raise SLMError(
                f"{folder}/heard.csv has no read-out {readout!r}; it has {sorted(heard['readout'].unique())}"
            )
        # an evaluation older than the bound by word type has no heard_low_type
        by_type = "heard_low_type" in heard.columns
        for (split, model), g in part.groupby(["split", "model"], sort=True):
            g = g.sort_values("layer")
            peak = g.loc[g["heard"].idxmax()]
            verdict = verdicts.get(str(model), {}).get(str(split))
            facts = knowledge.get(str(model), {}) if split == _FACTS_SPLIT else {}
            spoken, low, high = np.nan, np.nan, np.nan
            if "speech_accuracy" in facts:
                spoken, n_facts = float(facts["speech_accuracy"]), int(facts["speech_n"])
                low, high = (float(x) for x in wilson_interval(np.asarray(spoken * n_facts), n_facts, 0.95))
            type_low, robust = np.nan, ""
            if verdict is not None:
                if not by_type:
                    robust = "n/a"
                elif verdict["holds"]:
                    at = g.loc[g["layer"].isin([int(x) for x in verdict["layers"]]), "heard_low_type"]
                    type_low = float(at.max()) if len(at) else np.nan
                    robust = "holds" if type_low > 0 else "fails"
                else:
                    robust = "fails"
            rows.append(
                {
                    "run": label,
                    "split": str(split),
                    "model": str(model),
                    "heard_peak": float(peak["heard"]),
                    "heard_low": float(peak["heard_low"]),
                    "heard_high": float(peak["heard_high"]),
                    "peak_layer": int(peak["layer"]),
                    "n_layers": len(g),
                    "best_inner_low": float(g.iloc[1:-1]["heard_low"].max()) if len(g) > 2 else np.nan,
                    "criterion": "" if verdict is None else ("holds" if verdict["holds"] else "fails"),
                    "criterion_layers": "" if verdict is None else ", ".join(map(str, verdict["layers"])),
                    "type_low": type_low,
                    "robust": robust,
                    "spoken_knowledge": spoken,
                    "spoken_low": low,
                    "spoken_high": high,
                    "n": int(peak["n"]),
                }
            )
    return pd.DataFrame(rows)


def _runs_holding(rows: pd.DataFrame, column: str) -> list[str]:
    """The runs (in table order) whose ``column`` is ``"holds"`` on every one of their rows (splits)."""
    return [str(run) for run, values in rows.groupby("run", sort=False)[column] if (values == "holds").all()]


def spread_verdict(table: pd.DataFrame) -> dict[str, Any]:
    """Per main model (the rows with a criterion): in how many runs the criterion holds on every test
    split, and whether that is a strict majority of its runs (the round-2 rule); and the same for the
    criterion holding by word type too (``robust``, the round-3 rule): ``robust_on_every_split`` and
    ``robust_majority``.

    Every run in ``table`` counts, so give it the runs (seeds) of one recipe: runs of several recipes
    would be pooled into one verdict."""
    mains = table[table["criterion"] != ""]
    out: dict[str, Any] = {}
    for model, g in mains.groupby("model", sort=True):
        held, robust, n_runs = _runs_holding(g, "criterion"), _runs_holding(g, "robust"), g["run"].nunique()
        out[str(model)] = {
            "runs": n_runs,
            "holds_on_every_split": held,
            "majority": len(held) * 2 > n_runs,
            "robust_on_every_split": robust,
            "robust_majority": len(robust) * 2 > n_runs,
        }
    return out


def format_spread(table: pd.DataFrame) -> str:
    """Markdown: the verdicts in plain words (by utterance, then by word type too), then the table (heard
    peaks with intervals, criterion, the lower bound by word type at its layers, spoken knowledge)."""
    lines = []
    for model, v in spread_verdict(table).items():
        held = ", ".join(v["holds_on_every_split"]) or "none"
        word = "a majority" if v["majority"] else "NOT a majority"
        lines.append(
            f"- {model}: issue 21's criterion holds on every test split in {len(v['holds_on_every_split'])} "
            f"of {v['runs']} runs ({held}): {word}."
        )
        robust = ", ".join(v["robust_on_every_split"]) or "none"
        word = "a majority" if v["robust_majority"] else "NOT a majority"
        unknown = table[(table["model"] == model) & (table["robust"] == "n/a")]["run"].unique()
        missing = (
            f" ({', '.join(map(str, unknown))}: no heard_low_type, counted as not holding)"
            if len(unknown)
            else ""
        )
        lines.append(
            f"- {model}: issue 21's criterion holds on every test split and by word type too (heard_low_type "
            f"above 0 at a criterion layer) in {len(v['robust_on_every_split'])} of {v['runs']} runs "
            f"({robust}): {word}.{missing}"
        )
    shown = pd.DataFrame(
        {
            "run": table["run"],
            "split": table["split"],
            "model": table["model"],
            "heard peak [95%] (layer)": [
                f"{r.heard_peak:+.3f} [{r.heard_low:+.3f}, {r.heard_high:+.3f}] ({r.peak_layer})"
                for r in table.itertuples()
            ],
            "best inner lower bound": table["best_inner_low"].map(lambda x: f"{x:+.3f}"),
            "criterion": [
                f"{r.criterion} ({r.criterion_layers})" if r.criterion == "holds" else r.criterion
                for r in table.itertuples()
            ],
            "by word type at criterion layers": [
                f"{r.type_low:+.3f} ({r.robust})"
                if r.criterion == "holds" and not np.isnan(r.type_low)
                else r.robust
                for r in table.itertuples()
            ],
            "spoken knowledge [95%]": [
                ""
                if np.isnan(r.spoken_knowledge)
                else f"{r.spoken_knowledge:.3f} [{r.spoken_low:.3f}, {r.spoken_high:.3f}]"
                for r in table.itertuples()
            ],
        }
    )
    return "\n".join([*lines, "", markdown_table(shown), ""])
