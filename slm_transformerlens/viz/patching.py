"""Altair charts of patching results: layer x aligned position heatmaps, one facet per component.

Token labels are made readable (SentencePiece ``▁`` and byte-level ``Ġ`` shown as a leading space
marker ``·``), word boundaries are drawn as vertical rules (black around the differing words), and
charts are saved as self-contained HTML (the Vega libraries inlined: no CDN).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pandas as pd

from slm_transformerlens.patching.alignment import PatchingError

__all__ = ["head_heatmap", "patching_heatmap", "readable_token", "save_html"]


def readable_token(token: str) -> str:
    """A token string for an axis label: leading-space markers shown as ``·``, control bytes escaped."""
    text = str(token).replace("▁", "·").replace("Ġ", "·").replace("Ċ", "\\n")
    return text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text


def _frame(result: Any) -> pd.DataFrame:
    frame = getattr(result, "frame", result)
    if not isinstance(frame, pd.DataFrame):
        raise PatchingError("pass a SweepResult or its .frame DataFrame")
    return frame


def _select(
    frame: pd.DataFrame, metric: str | None, direction: str, method: str | None
) -> tuple[pd.DataFrame, str]:
    metrics = list(dict.fromkeys(frame["metric"]))
    metric = metric or metrics[0]
    if metric not in metrics:
        raise PatchingError(f"metric {metric!r} not in the results; have {metrics}")
    rows = frame[(frame["metric"] == metric) & (frame["direction"] == direction)]
    if method is not None:
        rows = rows[rows["method"] == method]
    if rows.empty:
        raise PatchingError(f"no rows for metric={metric!r}, direction={direction!r}, method={method!r}")
    return rows, metric


def patching_heatmap(
    result: Any,
    *,
    metric: str | None = None,
    value: Literal["value", "normalized"] = "normalized",
    direction: Literal["denoise", "noise"] = "denoise",
    method: str | None = "activation",
    head: int | None = None,
    width: int = 18,
    height: int = 14,
) -> Any:
    """A layer x aligned-position heatmap per component (facets), for one metric and direction.

    Args:
        result: a ``SweepResult`` or its ``frame``.
        metric: the metric to show (default: the first).
        value: ``"normalized"`` (0 = corrupted, 1 = clean) or the raw ``"value"``.
        direction: ``"denoise"`` or ``"noise"``.
        method: ``"activation"``, ``"attribution"`` or ``None`` (both, as separate facet rows).
        head: for ``head_out`` results, the head to show (default: the sum over heads is NOT taken;
            ``head_out`` rows are left out unless a head is given).
        width: pixels per position; height: pixels per layer.

    Returns:
        An ``altair`` chart (save it with :func:`save_html`).
    """
    import altair as alt

    rows, metric = _select(_frame(result), metric, direction, method)
    rows = rows[rows["slot"] >= 0]
    rows = rows[rows["head"] < 0] if head is None else rows[(rows["head"] < 0) | (rows["head"] == head)]
    if rows.empty:
        raise PatchingError("no position-wise rows to plot (head_out_all_pos results: use head_heatmap)")
    rows = rows.copy()
    rows["label"] = [
        f"{readable_token(t)} ({p})" for t, p in zip(rows["token"], rows["position"], strict=True)
    ]
    order = list(dict.fromkeys(rows.sort_values("slot")["label"]))
    n_layers = rows["layer"].nunique()
    firsts = rows.sort_values("slot").drop_duplicates("slot")
    starts = firsts["word_index"].ne(firsts["word_index"].shift()) | firsts["role"].ne(firsts["role"].shift())
    starts &= firsts["slot"] > firsts["slot"].min()
    edge = {
        int(s): ("diff" if r == "diff" or p == "diff" else "word")
        for s, r, p in zip(
            firsts["slot"][starts], firsts["role"][starts], firsts["role"].shift()[starts], strict=True
        )
    }
    rows["edge"] = rows["slot"].map(edge)
    values = rows[value].astype(float)
    bound = float(max(abs(values.min()), abs(values.max()), 1e-12))
    if value == "value":
        scale = alt.Scale(scheme="redblue", domain=[-bound, bound], reverse=True)
    else:
        scale = alt.Scale(scheme="redblue", domainMid=0, reverse=True)
    base = alt.Chart(rows)
    cells = base.mark_rect().encode(
        x=alt.X(
            "label:N", sort=order, title="aligned position (target-run token)", axis=alt.Axis(labelAngle=-60)
        ),
        y=alt.Y("layer:O", sort="descending", title="layer"),
        color=alt.Color(f"{value}:Q", scale=scale, title=value),
        tooltip=[
            "component",
            "layer",
            "head",
            "slot",
            "position",
            "source_position",
            "token",
            "source_token",
            "word",
            "role",
            alt.Tooltip(f"{value}:Q", format=".4f"),
        ],
    )
    rules = (
        base.transform_filter("isValid(datum.edge)")
        .mark_rule(strokeWidth=1.5)
        .encode(
            x=alt.X("label:N", sort=order, bandPosition=0),
            stroke=alt.Stroke(
                "edge:N",
                scale=alt.Scale(domain=["word", "diff"], range=["#999999", "#000000"]),
                legend=alt.Legend(title="word boundary"),
            ),
        )
    )
    layered = alt.layer(cells, rules).properties(width=width * len(order), height=height * n_layers)
    title = f"{metric} ({value}, {direction})"
    column = alt.Column("component:N", title=None, sort=list(dict.fromkeys(rows["component"])))
    if method is None:
        chart = layered.facet(column=column, row=alt.Row("method:N", title=None))
    else:
        chart = layered.facet(column=column)
    return chart.properties(title=title)


def head_heatmap(
    result: Any,
    *,
    metric: str | None = None,
    value: Literal["value", "normalized"] = "normalized",
    direction: Literal["denoise", "noise"] = "denoise",
    method: str | None = "activation",
) -> Any:
    """A layer x head heatmap of ``head_out_all_pos`` results."""
    import altair as alt

    rows, metric = _select(_frame(result), metric, direction, method)
    rows = rows[rows["component"] == "head_out_all_pos"]
    if rows.empty:
        raise PatchingError("no head_out_all_pos rows: run the sweep with components=('head_out_all_pos',)")
    return (
        alt.Chart(rows)
        .mark_rect()
        .encode(
            x=alt.X("head:O"),
            y=alt.Y("layer:O", sort="descending"),
            color=alt.Color(f"{value}:Q", scale=alt.Scale(scheme="redblue", domainMid=0, reverse=True)),
            column=alt.Column("method:N", title=None),
            tooltip=["layer", "head", alt.Tooltip(f"{value}:Q", format=".4f")],
        )
        .properties(title=f"{metric} per head, all positions ({value}, {direction})")
    )


def save_html(chart: Any, path: str | Path) -> Path:
    """Save a chart as one self-contained HTML file (Vega, Vega-Lite and Vega-Embed inlined; no CDN).

    Uses the project's :func:`slm_transformerlens.viz.html.save_chart` (``.html``, ``.png``, ``.svg``) when
    present, else altair's ``inline=True`` export (needs ``vl-convert-python``).
    """
    path = Path(path)
    try:
        from slm_transformerlens.viz.html import save_chart
    except ImportError:  # pragma: no cover - the shared helper ships with the package
        chart.save(str(path), format="html", inline=True)
        return path
    return Path(save_chart(chart, path))
