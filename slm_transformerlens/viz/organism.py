"""Altair charts of the model organisms' evaluation: the ablation comparison and spoken knowledge.

Both take the evaluation's own tables (``slm-lens organism evaluate`` writes them; the package ships
them in ``slm_transformerlens/data/organism/evaluation``) and draw them as they are, recomputing
nothing: :func:`ablation_chart` the per-layer transcription rate of every organism beside its
shuffled-target control (``curves.csv``), :func:`knowledge_chart` spoken-knowledge accuracy against the
transcription peak (:func:`slm_transformerlens.organism.report.knowledge_vs_transcription`). Save them
with :func:`slm_transformerlens.viz.html.save_chart`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from slm_transformerlens.viz.charts import import_altair

__all__ = ["ablation_chart", "heard_chart", "knowledge_chart"]

#: The legend's names of the two read-outs of :func:`ablation_chart`.
_SERIES = ("read-out", "shuffled targets")


def ablation_chart(
    curves: pd.DataFrame,
    *,
    metric: str = "transcription_span",
    models: Sequence[str] | None = None,
    k: int = 10,
    title: str | None = None,
) -> Any:
    """Per-layer rate of every model on one chart: its interval as a band, its shuffled control dashed.

    Each model has one colour: a solid line (the rate) in its interval band, and a dashed line (the same
    read-out scored against shuffled targets, ``{metric}_shuffled``): the chance level of every read-out.
    The frequency prior (``{metric}_prior``, one constant guess) is a grey dotted rule only for a
    single-position read-out (not ``*_span``, which gets several tries per word); the title gives it and
    the number of words.

    Args:
        curves: the evaluation's ``curves.csv`` (columns ``model, metric, layer, rate, ci_low, ci_high, n``).
        metric: the rate to draw (``"transcription_span"``, ``"transcription_last"``, ``"next_word"``).
        models: which models, in this order (default: all, sorted).
        k: the top-k of the evaluation (axis title only).
    """
    alt = import_altair()
    models = sorted(curves["model"].unique()) if models is None else list(models)
    rows = curves[curves["model"].isin(models) & (curves["layer"] >= 0)]
    series = {metric: _SERIES[0], f"{metric}_shuffled": _SERIES[1]}
    df = rows[rows["metric"].isin(series)].copy()
    if df.empty or not (df["metric"] == metric).any():
        raise ValueError(f"no {metric!r} rows for models {models}")
    df["series"] = df["metric"].map(series)
    df = df[["model", "series", "layer", "rate", "ci_low", "ci_high", "n"]].reset_index(drop=True)
    prior = curves[curves["model"].isin(models) & (curves["metric"] == f"{metric}_prior")]
    priors = [] if metric.endswith("_span") else sorted(prior["rate"].round(3).unique())
    n_words = sorted(df.loc[df["series"] == _SERIES[0], "n"].unique())
    scale = alt.Scale(zero=True)
    color = alt.Color(
        "model:N", title="model", sort=models, legend=alt.Legend(symbolType="stroke", symbolStrokeWidth=2)
    )
    x = alt.X("layer:Q", title="layer", axis=alt.Axis(tickMinStep=1))
    tooltip = [
        "model:N",
        "series:N",
        "layer:Q",
        alt.Tooltip("rate:Q", format=".3f"),
        alt.Tooltip("ci_low:Q", format=".3f"),
        alt.Tooltip("ci_high:Q", format=".3f"),
        "n:Q",
    ]
    lines = (
        alt.Chart(df)
        .mark_line()
        .encode(
            x=x,
            y=alt.Y("rate:Q", title=f"{metric} top-{k} rate", scale=scale),
            color=color,
            strokeDash=alt.StrokeDash(
                "series:N",
                title="targets",
                scale=alt.Scale(domain=list(_SERIES), range=[[1, 0], [5, 4]]),
                legend=alt.Legend(symbolType="stroke", symbolStrokeColor="black", symbolStrokeWidth=2),
            ),
            detail="series:N",
        )
    )
    points = (
        alt.Chart(df).mark_point(filled=True, size=25).encode(x=x, y="rate:Q", color=color, tooltip=tooltip)
    )
    band = (
        alt.Chart(df[df["series"] == _SERIES[0]])
        .mark_area(opacity=0.15)
        .encode(x=x, y=alt.Y("ci_low:Q", stack=None, scale=scale), y2="ci_high:Q", color=color)
    )
    layers = [lines, points, band]  # the lines first: the legends take their symbols from it
    if priors:
        layers.append(
            alt.Chart(pd.DataFrame({"prior": priors}))
            .mark_rule(color="grey", strokeDash=[1, 3])
            .encode(y="prior:Q", tooltip=[alt.Tooltip("prior:Q", format=".3f")])
        )
    n_text = ", ".join(f"{n:,}" for n in n_words)
    prior_text = f"; grey dotted: frequency prior {', '.join(f'{p:.3f}' for p in priors)}" if priors else ""
    lines_of_title = [
        title or f"{metric} top-{k} rate per layer, every organism (n = {n_text} words each)",
        f"bands: 95% intervals; dashed: shuffled-target control (the chance level){prior_text}",
    ]
    return alt.layer(*layers).properties(width=460, height=280, title=alt.TitleParams(lines_of_title))


def heard_chart(
    heard: pd.DataFrame,
    *,
    readout: str = "any",
    split: str = "heldout",
    models: Sequence[str] | None = None,
    k: int = 10,
    title: str | None = None,
) -> Any:
    """Heard above context per layer of every model: ``rate - swapped_rate`` with its 95% paired interval.

    Each model has one colour: a solid line (heard) in its interval band; the zero rule in grey (heard = 0:
    the read-out is what context alone gives, the swapped-audio control).

    Args:
        heard: the evaluation's ``heard.csv`` (columns ``model, split, readout, layer, n, rate,
            swapped_rate, heard, heard_low, heard_high``).
        readout: ``"any"`` (headline), ``"max"`` or ``"last"``.
        split: the test set (``"heldout"``; ``"new"`` for the ``hear`` recipe's second unseen voice).
        models: which models, in this order (default: all, sorted).
        k: the top-k of the evaluation (axis title only).
    """
    alt = import_altair()
    df = heard[(heard["readout"] == readout) & (heard["split"] == split)]
    models = sorted(df["model"].unique()) if models is None else list(models)
    df = df[df["model"].isin(models)][
        ["model", "layer", "n", "rate", "swapped_rate", "heard", "heard_low", "heard_high"]
    ].reset_index(drop=True)
    if df.empty:
        raise ValueError(f"no heard rows for read-out {readout!r}, split {split!r}, models {models}")
    color = alt.Color(
        "model:N", title="model", sort=models, legend=alt.Legend(symbolType="stroke", symbolStrokeWidth=2)
    )
    x = alt.X("layer:Q", title="layer", axis=alt.Axis(tickMinStep=1))
    tooltip = [
        "model:N",
        "layer:Q",
        *(
            alt.Tooltip(f"{c}:Q", format=".3f")
            for c in ("heard", "heard_low", "heard_high", "rate", "swapped_rate")
        ),
        "n:Q",
    ]
    y = alt.Y("heard:Q", title=f"heard = top-{k} rate - swapped-audio rate")
    lines = alt.Chart(df).mark_line().encode(x=x, y=y, color=color)
    points = (
        alt.Chart(df).mark_point(filled=True, size=25).encode(x=x, y="heard:Q", color=color, tooltip=tooltip)
    )
    band = (
        alt.Chart(df)
        .mark_area(opacity=0.15)
        .encode(x=x, y=alt.Y("heard_low:Q", stack=None), y2="heard_high:Q", color=color)
    )
    zero = alt.Chart(pd.DataFrame({"zero": [0.0]})).mark_rule(color="grey").encode(y="zero:Q")
    n_text = ", ".join(f"{n:,}" for n in sorted(df["n"].unique()))
    lines_of_title = [
        title or f"heard above context per layer ({split}, read-out {readout}; n = {n_text} content words)",
        "heard = rate - rate with each word's audio swapped for another word's (context kept); "
        "bands: 95% paired cluster bootstrap by utterance; grey: 0",
    ]
    return alt.layer(lines, points, band, zero).properties(
        width=460, height=280, title=alt.TitleParams(lines_of_title)
    )


def knowledge_chart(table: pd.DataFrame, *, chance: float = 0.5, title: str | None = None) -> Any:
    """Spoken-knowledge accuracy against the transcription peak, one point per model, name annotated.

    Each model is a filled circle at (peak transcription rate, spoken accuracy) with both intervals as
    error bars, and a hollow square at the same x for its written accuracy; the chance level is a
    dashed rule.

    Args:
        table: :func:`~slm_transformerlens.organism.report.knowledge_vs_transcription` (columns ``model,
            transcription_peak, transcription_ci_low, transcription_ci_high, spoken_knowledge,
            spoken_ci_low, spoken_ci_high, written_knowledge, n_facts``).
        chance: the accuracy of a coin flip (two completions: 0.5).
    """
    alt = import_altair()
    needed = [
        "model",
        "transcription_peak",
        "transcription_ci_low",
        "transcription_ci_high",
        "spoken_knowledge",
        "spoken_ci_low",
        "spoken_ci_high",
        "written_knowledge",
        "n_facts",
    ]
    missing = [c for c in needed if c not in table.columns]
    if missing or table.empty:
        raise ValueError(f"the knowledge table is empty or lacks columns {missing}")
    df = table[needed + [c for c in ("transcription_peak_layer",) if c in table.columns]].reset_index(
        drop=True
    )
    df["label_y"] = _label_heights(
        df["transcription_peak"].to_numpy(),
        df["spoken_knowledge"].to_numpy(),
        float(df["transcription_ci_high"].max()),
    )
    models = list(df["model"])
    x_max = float(df["transcription_ci_high"].max())
    x = alt.X(
        "transcription_peak:Q",
        title="peak transcription rate (top-10, 95% interval)",
        scale=alt.Scale(domain=[0, round(x_max * 1.3 + 0.05, 1)]),
    )
    y_scale = alt.Scale(domain=[0, 1])
    color = alt.Color("model:N", title="model", sort=models)
    base = alt.Chart(df)
    tooltip = [
        "model:N",
        alt.Tooltip("transcription_peak:Q", format=".3f"),
        alt.Tooltip("spoken_knowledge:Q", format=".3f"),
        alt.Tooltip("written_knowledge:Q", format=".3f"),
        "n_facts:Q",
    ]
    x_bars = base.mark_rule().encode(
        x=alt.X("transcription_ci_low:Q"), x2="transcription_ci_high:Q", y="spoken_knowledge:Q", color=color
    )
    y_bars = base.mark_rule().encode(
        x=x, y=alt.Y("spoken_ci_low:Q", scale=y_scale), y2="spoken_ci_high:Q", color=color
    )
    spoken = base.mark_point(filled=True, size=70, opacity=1).encode(
        x=x,
        y=alt.Y("spoken_knowledge:Q", title="fact accuracy (95% Wilson interval)", scale=y_scale),
        color=color,
        tooltip=tooltip,
    )
    written = base.mark_point(shape="square", filled=False, size=60).encode(
        x=x, y=alt.Y("written_knowledge:Q", scale=y_scale), color=color, tooltip=tooltip
    )
    names = base.mark_text(align="left", dx=6, baseline="middle", fontSize=9).encode(
        x=x, y="label_y:Q", text="model:N", color=color
    )
    rule = (
        alt.Chart(pd.DataFrame({"chance": [chance]}))
        .mark_rule(color="grey", strokeDash=[4, 3])
        .encode(y="chance:Q", tooltip=["chance:Q"])
    )
    n_text = ", ".join(f"{n:,}" for n in sorted(df["n_facts"].unique()))
    lines_of_title = [
        title or f"spoken knowledge vs transcription (n = {n_text} facts per model)",
        f"filled: spoken facts; hollow square: written facts; dashed: chance {chance:g}",
    ]
    return alt.layer(rule, x_bars, y_bars, written, spoken, names).properties(
        width=460, height=300, title=alt.TitleParams(lines_of_title)
    )


def _label_heights(x: Any, y: Any, x_range: float) -> list[float]:
    """Heights (data units of a 0-1 axis) for point labels written to the right of each point: just
    above it, unless a label already placed nearby (left to right) is there, then below, then further."""
    placed: list[tuple[float, float]] = []
    out = [0.0] * len(x)
    width, height = 0.3 * max(x_range, 1e-9), 0.035  # a label's extent, roughly
    for i in sorted(range(len(x)), key=lambda j: float(x[j])):
        for offset in (0.025, -0.035, 0.06, -0.07, 0.095):
            candidate = float(y[i]) + offset
            if all(abs(float(x[i]) - px) > width or abs(candidate - py) > height for px, py in placed):
                break
        placed.append((float(x[i]), candidate))
        out[i] = candidate
    return out
