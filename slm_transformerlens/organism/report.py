"""Tables and acceptance checks of the organism's evaluation (``curves.csv`` from ``evaluate_all``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from slm_transformerlens.lens.metrics import wilson_interval

__all__ = [
    "acceptance",
    "format_results",
    "heard_summary",
    "heard_table",
    "heard_verdict_lines",
    "knowledge_vs_transcription",
    "layer_table",
    "markdown_table",
    "peak_summary",
]

_LAYER_METRICS = (
    "transcription_span",
    "transcription_span_shuffled",
    "transcription_last",
    "transcription_last_shuffled",
    "next_word",
    "next_word_shuffled",
    "mass_speech",
    "mass_text",
    "mass_marker",
)


def layer_table(curves: pd.DataFrame, model: str) -> pd.DataFrame:
    """Per-layer rates of one model (rows: layers; columns: metrics)."""
    c = curves[(curves["model"] == model) & (curves["layer"] >= 0)]
    table = c.pivot_table(index="layer", columns="metric", values="rate")
    return table[[m for m in _LAYER_METRICS if m in table.columns]]


def _row(curves: pd.DataFrame, model: str, metric: str, layer: int | None = None) -> pd.Series:
    c = curves[(curves["model"] == model) & (curves["metric"] == metric)]
    if layer is None:
        return c.sort_values("layer").loc[c.sort_values("layer")["rate"].idxmax()]
    return c[c["layer"] == layer].iloc[0]


def peak_summary(curves: pd.DataFrame) -> pd.DataFrame:
    """Per model: transcription peak (layer, rate, interval), its shuffled control at that layer, the
    frequency prior, the next-word peak and the last layer's speech / text mass."""
    rows = []
    for model in sorted(curves["model"].unique()):
        peak = _row(curves, model, "transcription_span")
        layer = int(peak["layer"])
        shuffled = _row(curves, model, "transcription_span_shuffled", layer)
        nxt = _row(curves, model, "next_word")
        last = int(curves[(curves["model"] == model) & (curves["layer"] >= 0)]["layer"].max())
        rows.append(
            {
                "model": model,
                "n_layers": last + 1,
                "n_words": int(peak["n"]),
                "transcription_peak_layer": layer,
                "transcription_peak": float(peak["rate"]),
                "transcription_ci": (float(peak["ci_low"]), float(peak["ci_high"])),
                "shuffled_at_peak": float(shuffled["rate"]),
                "shuffled_ci": (float(shuffled["ci_low"]), float(shuffled["ci_high"])),
                "frequency_prior": float(_row(curves, model, "transcription_span_prior")["rate"]),
                "transcription_last_peak": float(_row(curves, model, "transcription_last")["rate"]),
                "next_word_peak_layer": int(nxt["layer"]),
                "next_word_peak": float(nxt["rate"]),
                "next_word_ci": (float(nxt["ci_low"]), float(nxt["ci_high"])),
                "next_word_shuffled_max": float(
                    curves[(curves["model"] == model) & (curves["metric"] == "next_word_shuffled")][
                        "rate"
                    ].max()
                ),
                "mass_speech_last": float(_row(curves, model, "mass_speech", last)["rate"]),
                "mass_text_last": float(_row(curves, model, "mass_text", last)["rate"]),
            }
        )
    return pd.DataFrame(rows)


def knowledge_vs_transcription(
    curves: pd.DataFrame, knowledge: Mapping[str, Mapping[str, Any]], *, confidence: float = 0.95
) -> pd.DataFrame:
    """Per model: the transcription peak with its interval beside spoken and written fact accuracy.

    Args:
        curves: the evaluation's ``curves.csv``.
        knowledge: the evaluation's ``knowledge.json`` (``speech_accuracy``, ``speech_n``,
            ``text_accuracy``, ``text_n`` per model); models missing from it are left out.
        confidence: of the accuracies' Wilson intervals (a tie counts as half a correct answer).

    Returns:
        Columns ``model, transcription_peak_layer, transcription_peak, transcription_ci_low,
        transcription_ci_high`` (the cluster-bootstrap interval of ``curves``), ``spoken_knowledge,
        spoken_ci_low, spoken_ci_high, n_facts, written_knowledge, written_ci_low, written_ci_high,
        n_written``; chance is 0.5.
    """
    rows = []
    for model, peak in peak_summary(curves).set_index("model").iterrows():
        if model not in knowledge:
            continue
        facts = knowledge[model]
        row: dict[str, Any] = {
            "model": model,
            "transcription_peak_layer": int(peak["transcription_peak_layer"]),
            "transcription_peak": float(peak["transcription_peak"]),
            "transcription_ci_low": float(peak["transcription_ci"][0]),
            "transcription_ci_high": float(peak["transcription_ci"][1]),
        }
        for name, key, n_name in (("spoken", "speech", "n_facts"), ("written", "text", "n_written")):
            accuracy, n = float(facts[f"{key}_accuracy"]), int(facts[f"{key}_n"])
            low, high = wilson_interval(np.asarray(accuracy * n), n, confidence)  # a tie is half a hit
            row |= {
                f"{name}_knowledge": accuracy,
                f"{name}_ci_low": float(low),
                f"{name}_ci_high": float(high),
                n_name: n,
            }
        rows.append(row)
    return pd.DataFrame(rows)


def acceptance(
    curves: pd.DataFrame, differences: list[dict] | None = None, *, main: str = "main_kmeans"
) -> dict[str, tuple[bool, str]]:
    """The issue's acceptance criteria for ``main`` (``{criterion: (holds, numbers)}``).

    Layers are the blocks 0..n-1 (``resid_post``); the first sixth is ``l < n/6``, the last sixth
    ``l >= n - n/6``.
    """
    summary = peak_summary(curves).set_index("model")
    kind = main.split("_", 1)[1]
    s = summary.loc[main]
    n = int(s["n_layers"])
    layer = int(s["transcription_peak_layer"])
    low, high = s["transcription_ci"]
    out: dict[str, tuple[bool, str]] = {}
    out["middle_peak"] = (n / 6 <= layer < n - n / 6, f"peak at layer {layer} of 0..{n - 1}")
    out["clears_shuffled"] = (
        low > s["shuffled_ci"][1],
        f"{s['transcription_peak']:.3f} [{low:.3f}, {high:.3f}] vs shuffled {s['shuffled_at_peak']:.3f} "
        f"[{s['shuffled_ci'][0]:.3f}, {s['shuffled_ci'][1]:.3f}]",
    )
    # the frequency prior is ONE constant guess: the chance level of a single read-out (the last unit), not
    # of the span read-out, which gets several tries per word
    last = _row(curves, main, "transcription_last")
    last_peak = curves[(curves["model"] == main) & (curves["metric"] == "transcription_last")]
    out["last_unit_clears_prior"] = (
        float(last["ci_low"]) > s["frequency_prior"],
        f"last-unit read-out peak {float(last['rate']):.3f} [{float(last['ci_low']):.3f}, "
        f"{float(last['ci_high']):.3f}] (layer {int(last_peak.loc[last_peak['rate'].idxmax(), 'layer'])}) vs "
        f"prior {s['frequency_prior']:.3f}",
    )
    baseline = f"untrained_units_{kind}"
    if baseline in summary.index:
        b = summary.loc[baseline]
        out["clears_untrained"] = (
            low > b["transcription_ci"][1],
            f"ci low {low:.3f} vs untrained peak {b['transcription_peak']:.3f} (ci high {b['transcription_ci'][1]:.3f})",
        )
    out["next_word_later"] = (
        int(s["next_word_peak_layer"]) > layer,
        f"next-word peak layer {int(s['next_word_peak_layer'])} vs transcription {layer}",
    )
    last_layers = [ell for ell in range(n) if ell >= n - n / 6]
    masses = curves[(curves["model"] == main) & curves["layer"].isin(last_layers)]
    speech = masses[masses["metric"] == "mass_speech"]["rate"].to_numpy()
    text = masses[masses["metric"] == "mass_text"]["rate"].to_numpy()
    out["speech_mass_last_layers"] = (
        bool((speech > text).all()),
        f"layers {last_layers}: speech {speech.round(3).tolist()} vs text {text.round(3).tolist()}",
    )
    for d in differences or []:
        if d["versus"] == main:
            out[f"weaker_{d['model']}"] = (
                d["ci_low"] > 0,
                f"main - {d['model']} peak: {d['peak_difference']:.3f} [{d['ci_low']:.3f}, {d['ci_high']:.3f}]",
            )
    return out


def markdown_table(frame: pd.DataFrame, *, index: bool = False) -> str:
    """A GitHub markdown table (floats with 3 decimals) without optional dependencies."""
    frame = frame.reset_index() if index else frame

    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.3f}"
        if isinstance(value, tuple):
            return "[" + ", ".join(cell(v) for v in value) + "]"
        return str(value)

    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def heard_summary(heard: pd.DataFrame, *, readout: str = "any", split: str = "heldout") -> pd.DataFrame:
    """Per model: the layer where heard peaks (first on ties) with its paired interval, the rate, the
    swapped-audio and shuffled-target controls there, the layers whose interval lies above 0, and ``n``."""
    rows = []
    part = heard[(heard["readout"] == readout) & (heard["split"] == split)]
    for model, g in part.groupby("model"):
        g = g.sort_values("layer")
        peak = g.loc[g["heard"].idxmax()]
        clear = [int(ell) for ell in g.loc[g["heard_low"] > 0, "layer"]]
        rows.append(
            {
                "model": model,
                "n": int(peak["n"]),
                "heard_peak_layer": int(peak["layer"]),
                "heard": float(peak["heard"]),
                "heard_ci": (float(peak["heard_low"]), float(peak["heard_high"])),
                "rate": float(peak["rate"]),
                "swapped_rate": float(peak["swapped_rate"]),
                "shuffled_rate": float(peak.get("shuffled_rate", np.nan)),
                "layers_heard_above_0": ", ".join(map(str, clear)) or "none",
            }
        )
    return pd.DataFrame(rows)


def heard_table(
    heard: pd.DataFrame, model: str, *, readout: str = "any", split: str = "heldout"
) -> pd.DataFrame:
    """Per-layer heard of one model: rate, swapped-audio rate, heard [95% paired interval], shuffled."""
    g = heard[(heard["model"] == model) & (heard["readout"] == readout) & (heard["split"] == split)]
    g = g.sort_values("layer")
    return pd.DataFrame(
        {
            "layer": g["layer"].astype(int).to_numpy(),
            "rate": g["rate"].to_numpy(),
            "swapped_audio": g["swapped_rate"].to_numpy(),
            "heard": g["heard"].to_numpy(),
            "heard_95": [(float(a), float(b)) for a, b in zip(g["heard_low"], g["heard_high"], strict=True)],
            "shuffled_targets": g["shuffled_rate"].to_numpy() if "shuffled_rate" in g else np.nan,
        }
    )


def heard_verdict_lines(heard: pd.DataFrame, verdicts: Mapping[str, Mapping[str, Any]] | None) -> list[str]:
    """Plain sentences: for every model and test set, whether heard clears 0 (read-out ``any``), and issue
    21's criterion for each main model."""
    lines = []
    for split in sorted(heard.loc[heard["readout"] == "any", "split"].unique()):
        summary = heard_summary(heard, split=str(split))
        for r in summary.itertuples():
            if r.layers_heard_above_0 == "none":
                lines.append(
                    f"- {split}: **{r.model} does not clear**: heard's 95% interval includes 0 or lies below it "
                    f"at every layer (best {r.heard:+.3f} [{r.heard_ci[0]:+.3f}, {r.heard_ci[1]:+.3f}] at "
                    f"layer {r.heard_peak_layer}, n = {r.n:,})."
                )
            else:
                lines.append(
                    f"- {split}: {r.model} hears above context at layers {r.layers_heard_above_0} (peak "
                    f"{r.heard:+.3f} [{r.heard_ci[0]:+.3f}, {r.heard_ci[1]:+.3f}] at layer {r.heard_peak_layer}; "
                    f"rate {r.rate:.3f}, swapped audio {r.swapped_rate:.3f}, n = {r.n:,})."
                )
    for main, by_split in (verdicts or {}).items():
        for split, v in by_split.items():
            best = ", ".join(f"{b} {x:+.3f}" for b, x in v["baseline_best"].items()) or "no baseline"
            if v["holds"]:
                rows = heard[
                    (heard["model"] == main)
                    & (heard["split"] == split)
                    & (heard["readout"] == "any")
                    & heard["layer"].isin(v["layers"])
                ]
                margin = float(rows["heard_low"].max()) - float(v["bar"])
                lines.append(
                    f"- {split}: issue 21's criterion holds for {main} at inner layers {v['layers']} only, by a "
                    f"margin of {margin:+.4f}: heard's lower bound is above 0 and above the baselines' best heard "
                    f"({best})."
                )
            else:
                lines.append(
                    f"- {split}: issue 21's criterion does NOT hold for {main}: at no inner layer is heard's lower "
                    f"bound above 0 and above the baselines' best heard ({best})."
                )
    return lines


def format_results(
    curves: pd.DataFrame,
    differences: list[dict] | None = None,
    knowledge: dict[str, dict] | None = None,
    heard: pd.DataFrame | None = None,
    verdicts: Mapping[str, Mapping[str, Any]] | None = None,
) -> str:
    """A markdown report: heard above context first (what holds, in plain words, then every model's
    per-layer heard with its controls), then the rates without the context control: the peak summary,
    spoken knowledge (with intervals) against the transcription peak, every model's per-layer table and
    the ablation differences."""
    lines: list[str] = []
    if heard is not None and not heard.empty:
        lines += [
            "## Heard above context (read this first)",
            "",
            "heard = (top-10 rate of the word's text token, text view, content words) - (the same rate with "
            "the word's units swapped for another spoken word's, context unchanged): what the word's own "
            "audio adds to what context gives. 95% paired cluster bootstrap by utterance. Read-out `any` "
            "(any unit of the span) is the headline; `max` and `last` below.",
            "",
            *heard_verdict_lines(heard, verdicts),
            "",
        ]
        for split in sorted(heard["split"].unique()):
            for readout in ("any", "max", "last"):
                summary = heard_summary(heard, readout=readout, split=split)
                if summary.empty:
                    continue
                lines += [f"### Heard peaks: {split}, read-out `{readout}`", "", markdown_table(summary), ""]
        for split in sorted(heard["split"].unique()):
            for model in sorted(heard["model"].unique()):
                for readout in ("any", "max", "last"):
                    table = heard_table(heard, model, readout=readout, split=split)
                    if len(table):
                        lines += [
                            f"#### {model}: {split}, read-out `{readout}`",
                            "",
                            markdown_table(table),
                            "",
                        ]
        lines += [
            "## Rates without the context control",
            "",
            "The rates below are NOT corrected for what context alone gives (see heard above); their "
            "shuffled-target control is the mean over 10 permutations (its interval: mean -/+ 1.96 sd over "
            "the permutations). The frequency prior is a single constant guess: it is the chance level of "
            "`transcription_last` only, not of the pooled span read-out.",
            "",
        ]
    summary = peak_summary(curves)
    lines += ["## Peaks (content words, top-10, text-restricted ranks)", "", markdown_table(summary), ""]
    if knowledge:
        columns = [
            "model",
            "transcription_peak",
            "spoken_knowledge",
            "spoken_ci_low",
            "spoken_ci_high",
            "written_knowledge",
            "written_ci_low",
            "written_ci_high",
            "n_facts",
        ]
        table = knowledge_vs_transcription(curves, knowledge)[columns]
        lines += [
            "## Spoken knowledge vs transcription (chance 0.5; 95% Wilson intervals)",
            "",
            markdown_table(table),
            "",
        ]
    for model in summary["model"]:
        lines += [f"### {model}", "", markdown_table(layer_table(curves, model), index=True), ""]
    if differences:
        lines += [
            "## Peak differences vs main (paired cluster bootstrap)",
            "",
            markdown_table(pd.DataFrame(differences)),
            "",
        ]
    return "\n".join(lines)
