"""Several lenses side by side: per-layer rate of the logit lens, the tuned lens and the patchscope,
each beside its shuffled-target control (optional extra ``plot``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from slm_transformerlens.viz.charts import import_altair, select_one

__all__ = ["lens_comparison_chart", "lens_comparison_frame"]

#: Panel order: the lenses the package ships, then any other name in the order given.
LENS_ORDER = ("logit", "tuned", "patchscope")


def lens_comparison_frame(
    summaries: Mapping[str, pd.DataFrame],
    *,
    k: int = 10,
    metric: str = "transcription",
    view: str | None = "text",
    site: str | None = None,
) -> pd.DataFrame:
    """One tidy frame ``lens, layer, rate, ci_low, ci_high, shuffled_rate, n`` from per-lens summaries.

    Args:
        summaries: ``{lens name: summarize_transcription(...) output}`` (with the chance controls for the
            ``shuffled_rate`` column; without them it is NaN).
        k, metric, view, site: which rows of each summary to keep.

    Raises:
        ValueError: a summary without rows for ``k`` / ``metric`` (or several views or sites and none picked).
    """
    frames = []
    for name, summary in summaries.items():
        df = summary[(summary["k"] == k) & (summary["metric"] == metric)]
        df = select_one(select_one(df, "view", view, "view"), "site", site, "site")
        if df.empty:
            raise ValueError(f"the {name!r} summary has no rows for k={k}, metric={metric!r}")
        low, high = ("cluster_low", "cluster_high") if "cluster_low" in df.columns else ("ci_low", "ci_high")
        frames.append(
            pd.DataFrame(
                {
                    "lens": name,
                    "layer": df["layer"].to_numpy(),
                    "rate": df["rate"].to_numpy(),
                    "ci_low": df[low].to_numpy(),
                    "ci_high": df[high].to_numpy(),
                    "shuffled_rate": df["shuffled_rate"].to_numpy()
                    if "shuffled_rate" in df
                    else float("nan"),
                    "n": df["n"].to_numpy() if "n" in df else pd.NA,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def lens_comparison_chart(frame: pd.DataFrame, *, k: int = 10, title: str | None = None) -> Any:
    """Per-layer rate (line, interval band) and shuffled control (dashed) of each lens, one panel per lens.

    Args:
        frame: ``lens, layer, rate, ci_low, ci_high, shuffled_rate`` rows (:func:`lens_comparison_frame`,
            or the organism's patchscope curves).
        k: the top-k of the rates (for the axis title).

    Raises:
        ValueError: missing columns or an empty frame.
    """
    alt = import_altair()
    needed = ["lens", "layer", "rate", "ci_low", "ci_high", "shuffled_rate"]
    missing = [c for c in needed if c not in frame.columns]
    if missing or frame.empty:
        raise ValueError(f"the comparison frame needs rows with columns {needed} (missing {missing})")
    names = list(dict.fromkeys(frame["lens"]))
    order = [n for n in LENS_ORDER if n in names] + [n for n in names if n not in LENS_ORDER]
    scale = alt.Scale(domain=[0, 1])
    base = alt.Chart().encode(x=alt.X("layer:Q", title="layer"))
    band = base.mark_area(opacity=0.25).encode(
        y=alt.Y("ci_low:Q", title=f"top-{k} rate", stack=None, scale=scale), y2="ci_high:Q"
    )
    line = base.mark_line(point=True).encode(
        y=alt.Y("rate:Q", scale=scale),
        tooltip=[
            "lens:N",
            "layer:Q",
            alt.Tooltip("rate:Q", format=".3f"),
            alt.Tooltip("shuffled_rate:Q", format=".3f"),
        ],
    )
    control = base.mark_line(strokeDash=[4, 3], color="grey").encode(y=alt.Y("shuffled_rate:Q", scale=scale))
    chart = alt.layer(band, line, control, data=frame[[*needed, *(["n"] if "n" in frame else [])]])
    return chart.properties(width=240, height=220).facet(
        column=alt.Column("lens:N", sort=order, title=None),
        title=title or f"top-{k} rate per layer by lens (dashed: shuffled-target control)",
    )
