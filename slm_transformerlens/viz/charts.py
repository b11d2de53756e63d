"""Altair charts from the lens tables (optional extra ``plot``: altair + vl-convert-python).

Every function takes the tidy DataFrames of :mod:`slm_transformerlens.lens` and returns an altair chart;
save it with :func:`slm_transformerlens.viz.html.save_chart` (offline HTML, PNG or SVG).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pandas as pd

from slm_transformerlens.viz.html import save_chart

__all__ = [
    "import_altair",
    "lens_heatmap",
    "lens_kl_chart",
    "modality_mass_chart",
    "save_chart",
    "select_one",
    "transcription_rate_chart",
]


def import_altair() -> Any:
    """The altair module, or an ImportError naming the extra that installs it."""
    try:
        import altair as alt
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("charts need altair: pip install 'slm_transformerlens[plot]'") from error
    return alt


def _printable(text: str) -> str:
    """Control characters as escapes (``\\n``, ``\\x00``): renderers choke on raw ones."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def select_one(df: pd.DataFrame, column: str, value: Any, what: str) -> pd.DataFrame:
    """The rows where ``column == value``; with ``value=None`` the table must hold one value of it (or none)."""
    if column not in df.columns:
        return df
    if value is None:
        values = df[column].dropna().unique()
        if len(values) > 1:
            raise ValueError(f"the table holds several {what}s {list(values)}; pass {column}=... to pick one")
        return df
    out = df[df[column] == value]
    if out.empty:
        raise ValueError(f"no rows with {column}={value!r}; available: {list(df[column].dropna().unique())}")
    return out


def lens_heatmap(
    table: pd.DataFrame,
    *,
    batch: int = 0,
    view: str | None = "full",
    site: str | None = None,
    value: str = "top_prob",
    title: str | None = None,
    cell_width: int = 34,
    cell_height: int = 16,
) -> Any:
    """Layer x position heatmap with the top token written in each cell and word boundaries marked.

    Args:
        table: a :func:`~slm_transformerlens.lens.lens_table` result (any position mode; ``"all"`` is typical).
        batch: which batch row to draw.
        view: which vocabulary view (``"full"``, ``"text"``...).
        site: which residual site (needed when the table holds several).
        value: the colour: ``"top_prob"`` (probability of the top token), ``"entropy"`` or a ``mass_*`` column.

    With an ``input_token`` column (the report adds it) each position is labelled with its input token and
    the first letter of its word's modality (``t`` text, ``s`` speech, ``-`` outside words).
    """
    alt = import_altair()
    df = table[table["batch"] == batch] if "batch" in table.columns else table
    df = select_one(select_one(df, "view", view, "view"), "site", site, "site").copy()
    if df.empty:
        raise ValueError("nothing to draw: the selection is empty")
    df["top_prob"] = [p[0] if len(p) else float("nan") for p in df["top_probs"]]
    tokens = df["top_token"] if "top_token" in df.columns else df["top_ids"].map(lambda ids: str(ids[0]))
    df["top_token_text"] = tokens.astype(str).map(_printable).str.slice(0, 8)
    words = df["word"].astype("object").where(df["word"].notna(), "")
    df["position_label"] = df["position"].astype(str) + " " + words.astype(str)
    axis = alt.Axis(labelAngle=0)
    if "input_token" in df.columns:  # label each position with its input token and modality
        modality = df["modality"].astype("object").where(df["modality"].notna(), "-").astype(str)
        labels = (
            df["input_token"].astype(str).map(_printable).str.slice(0, 10) + " " + modality.str.slice(0, 1)
        )
        df["position_label"] = df["position"].astype(str) + " " + labels + " " + words.astype(str)
        mapping = dict(zip(df["position"].astype(int), labels, strict=True))
        expr = "{" + ", ".join(f"{p}: {json.dumps(f'{p} {t}')}" for p, t in sorted(mapping.items())) + "}"
        axis = alt.Axis(labelAngle=-60, labelExpr=f"{expr}[datum.value]", labelFontSize=8)
    plot = df[["position", "layer", "top_prob", "top_token_text", "position_label", "entropy", value]].copy()
    plot = plot.loc[:, ~plot.columns.duplicated()]
    n_pos = plot["position"].nunique()
    n_layers = plot["layer"].nunique()
    x_title = (
        "input token (position, token, modality t/s/m)" if "input_token" in df.columns else "token position"
    )
    x = alt.X("position:O", title=x_title, sort="ascending", axis=axis)
    y = alt.Y("layer:O", sort="descending", title="layer")
    base = alt.Chart(plot).properties(width=cell_width * n_pos, height=cell_height * n_layers)
    rect = base.mark_rect().encode(
        x=x,
        y=y,
        color=alt.Color(f"{value}:Q", scale=alt.Scale(scheme="blues"), title=value),
        tooltip=[
            "position_label:N",
            "layer:O",
            "top_token_text:N",
            alt.Tooltip("top_prob:Q", format=".3f"),
            "entropy:Q",
        ],
    )
    text = base.mark_text(fontSize=8).encode(x=x, y=y, text="top_token_text:N")
    layers = [rect, text]
    spans = df.dropna(subset=["word_index"]) if "word_index" in df.columns else df.iloc[0:0]
    if not spans.empty:
        starts = spans.groupby("word_index")["position"].min().reset_index()
        words_at = spans.groupby("word_index")["word"].first().reset_index()
        bounds = starts.merge(words_at, on="word_index")
        bounds["word"] = bounds["word"].astype(str).map(_printable)
        rule = (
            alt.Chart(bounds)
            .mark_rule(color="crimson", strokeWidth=1.5, xOffset=-cell_width / 2)
            .encode(x=alt.X("position:O", sort="ascending"), tooltip=["word:N"])
        )
        label = (
            alt.Chart(bounds)
            .mark_text(color="crimson", align="left", dy=-8, fontSize=9)
            .encode(x=alt.X("position:O", sort="ascending"), y=alt.value(0), text="word:N")
        )
        layers += [rule, label]
    return alt.layer(*layers).properties(title=title or "lens: top token per layer and position")


def transcription_rate_chart(
    summary: pd.DataFrame,
    *,
    k: int = 10,
    view: str | None = "text",
    site: str | None = None,
    title: str | None = None,
) -> Any:
    """Per-layer transcription rate and next-word rate with their interval bands and chance levels.

    The band is the cluster-bootstrap interval when the summary has one, else Wilson's. With the chance
    controls, dashed lines are each metric's shuffled-target rate (the chance level), dotted lines the
    swapped-audio rate (what context alone gives) and the grey band reaches the frequency prior (drawn only
    when the summary has one: single read-outs).

    Args:
        summary: :func:`~slm_transformerlens.lens.summarize_transcription` output.
        k: which top-k hit rate to draw.
    """
    alt = import_altair()
    df = summary[summary["k"] == k]
    df = select_one(select_one(df, "view", view, "view"), "site", site, "site")
    if df.empty:
        raise ValueError(f"no summary rows for k={k}")
    low, high = ("cluster_low", "cluster_high") if "cluster_low" in df.columns else ("ci_low", "ci_high")
    controls = [
        c for c in ("shuffled_rate", "prior_rate", "swapped_rate") if c in df.columns and df[c].notna().any()
    ]
    df = df[["layer", "metric", "rate", "n", *dict.fromkeys(["ci_low", "ci_high", low, high]), *controls]]
    scale = alt.Scale(domain=[0, 1])
    base = alt.Chart(df).encode(
        x=alt.X("layer:Q", title="layer"), color=alt.Color("metric:N", title="metric")
    )
    layers = []
    if "prior_rate" in controls:
        prior = df.groupby("layer", as_index=False)["prior_rate"].max()
        layers.append(
            alt.Chart(prior)
            .mark_area(opacity=0.15, color="grey")
            .encode(x="layer:Q", y=alt.Y("prior_rate:Q", stack=None, scale=scale))
        )
    band = base.mark_area(opacity=0.25).encode(
        y=alt.Y(f"{low}:Q", title=f"top-{k} rate", stack=None, scale=scale), y2=f"{high}:Q"
    )
    line = base.mark_line(point=True).encode(
        y=alt.Y("rate:Q", scale=scale),
        tooltip=["metric:N", "layer:Q", alt.Tooltip("rate:Q", format=".3f"), "n:Q"],
    )
    layers += [band, line]
    if "shuffled_rate" in controls:
        layers.append(base.mark_line(strokeDash=[4, 3]).encode(y=alt.Y("shuffled_rate:Q", scale=scale)))
    if "swapped_rate" in controls:  # what context alone gives (the audio swapped)
        layers.append(base.mark_line(strokeDash=[1, 2]).encode(y=alt.Y("swapped_rate:Q", scale=scale)))
    return alt.layer(*layers).properties(
        width=420, height=260, title=title or f"transcription and next-word top-{k} rate per layer"
    )


def modality_mass_chart(
    table: pd.DataFrame,
    *,
    groups: Sequence[str] | None = None,
    site: str | None = None,
    title: str | None = None,
) -> Any:
    """Mean probability mass per vocabulary group per layer (stacked), from the ``full`` view."""
    alt = import_altair()
    df = table[table["view"] == "full"] if "view" in table.columns else table
    df = select_one(df, "site", site, "site")
    columns = [c for c in df.columns if c.startswith("mass_")]
    if groups is not None:
        columns = [f"mass_{g}" for g in groups]
    if not columns or df.empty:
        raise ValueError("the table has no full-view mass_* columns")
    means = df.groupby("layer")[columns].mean().reset_index()
    long = means.melt(id_vars="layer", var_name="group", value_name="mass")
    long["group"] = long["group"].str.removeprefix("mass_")
    return (
        alt.Chart(long)
        .mark_area()
        .encode(
            x=alt.X("layer:Q", title="layer"),
            y=alt.Y("mass:Q", stack="zero", title="mean probability mass"),
            color=alt.Color("group:N", title="vocabulary group"),
            tooltip=["layer:Q", "group:N", alt.Tooltip("mass:Q", format=".3f")],
        )
        .properties(width=420, height=260, title=title or "which modality is each layer in")
    )


def lens_kl_chart(evaluation: pd.DataFrame, *, metric: str = "kl", title: str | None = None) -> Any:
    """Per-layer KL to the final distribution (or ``metric="ce"``) for each lens (e.g. logit vs tuned)."""
    alt = import_altair()
    if metric not in evaluation.columns:
        raise ValueError(f"the evaluation table has no {metric!r} column")
    df = evaluation[["lens", "layer", metric]]
    return (
        alt.Chart(df)
        .mark_line(point=True)
        .encode(
            x=alt.X("layer:Q", title="layer"),
            y=alt.Y(f"{metric}:Q", title=f"{metric} (nats)"),
            color=alt.Color("lens:N", title="lens"),
            tooltip=["lens:N", "layer:Q", alt.Tooltip(f"{metric}:Q", format=".3f")],
        )
        .properties(
            width=420, height=260, title=title or f"{metric.upper()} to the final distribution per layer"
        )
    )
