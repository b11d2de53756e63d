"""The same transcription analysis on several checkpoints, side by side, with their spoken-knowledge accuracy.

:func:`compare_models` loads the checkpoints ONE AT A TIME (each is freed before the next is loaded),
runs :func:`~slm_transformerlens.lens.transcription_table` + :func:`~slm_transformerlens.lens.
summarize_transcription` (with chance controls) and, when items are given,
:func:`~slm_transformerlens.knowledge.knowledge_table`, then writes one report: every model's curve on
one chart (layer as a fraction of depth when depths differ), a peak table, knowledge accuracy per model,
and the correlation between peak transcription rate and knowledge accuracy across models with its n.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from slm_transformerlens.apps.report import report_headline, swapped_control
from slm_transformerlens.errors import SLMError
from slm_transformerlens.lens import peak_layers
from slm_transformerlens.lens.base import Lens
from slm_transformerlens.lens.controls import POOLED_READOUTS
from slm_transformerlens.lens.protocol import LensProtocol
from slm_transformerlens.outputs import claim_output_files

__all__ = [
    "CompareError",
    "Comparison",
    "compare_models",
    "comparison_chart",
    "knowledge_label",
    "rate_knowledge_correlation",
]


class CompareError(SLMError, ValueError):
    """A comparison cannot run as asked (no checkpoints, names that do not match, ...)."""


@dataclass
class Comparison:
    """What :func:`compare_models` computed and wrote.

    Attributes:
        summary: every model's :func:`summarize_transcription` rows, with ``model``, ``n_layers`` and
            ``depth`` (``(layer + 1) / n_layers``).
        peaks: one row per model at the protocol's k, view and metric ``transcription``: ``peak_layer``,
            ``peak_depth``, ``peak_rate``, intervals, controls, ``knowledge_accuracy``, ``knowledge_n``.
        knowledge: every model's :func:`knowledge_table` rows with ``model`` (empty without items).
        correlation: ``{"n", "pearson", "spearman"}`` between peak transcription rate and knowledge accuracy.
        headlines: per model, where heard above context peaks (or why it was not measured).
    """

    out_dir: Path
    summary: pd.DataFrame
    peaks: pd.DataFrame
    knowledge: pd.DataFrame
    correlation: dict[str, float]
    protocol: LensProtocol
    files: dict[str, Path] = field(default_factory=dict)
    headlines: dict[str, str] = field(default_factory=dict)
    knowledge_mode: str = "speech"

    @property
    def knowledge_label(self) -> str:
        """What the knowledge accuracy measures, after its mode (``"spoken-knowledge"``, ``"text-knowledge"``...)."""
        return knowledge_label(self.knowledge_mode)

    @property
    def report(self) -> Path:
        """The Markdown report."""
        return self.files["report"]


def knowledge_label(mode: str) -> str:
    """The name of a knowledge accuracy in ``mode``: spoken (speech), written (text), or mixed."""
    mode = "speech_text" if mode == "interleaved" else mode
    labels = {
        "speech": "spoken-knowledge",
        "text": "text-knowledge",
        "speech_text": "knowledge (spoken prompt, written completion)",
        "text_speech": "knowledge (written prompt, spoken completion)",
    }
    return labels.get(mode, f"knowledge ({mode})")


def rate_knowledge_correlation(
    rates: Sequence[float] | np.ndarray | pd.Series, accuracies: Sequence[float] | np.ndarray | pd.Series
) -> dict[str, float]:
    """Pearson and Spearman correlation of two per-model sequences, with ``n`` (pairs with both values).

    NaN when fewer than 3 models or a constant sequence (no correlation is defined).
    """
    frame = pd.DataFrame({"r": rates, "a": accuracies}, dtype=float).dropna()
    n = len(frame)
    out = {"n": float(n), "pearson": float("nan"), "spearman": float("nan")}
    if n >= 3 and frame["r"].nunique() > 1 and frame["a"].nunique() > 1:
        out["pearson"] = float(np.corrcoef(frame["r"], frame["a"])[0, 1])
        out["spearman"] = float(np.corrcoef(frame["r"].rank(), frame["a"].rank())[0, 1])
    return out


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def compare_models(
    checkpoints: Sequence[str | Path],
    data: Sequence[Any] | Callable[[Any], Sequence[Any]],
    out_dir: str | Path,
    *,
    names: Sequence[str] | None = None,
    loader: Callable[[str | Path], Any] | None = None,
    knowledge_items: Sequence[Any] | None = None,
    knowledge_mode: str = "speech",
    speech_tokenizer: Any = None,
    protocol: LensProtocol | None = None,
    make_lens: Callable[[Any], Lens] | None = None,
    charts: bool = True,
    png: bool = False,
    progress: bool = True,
) -> Comparison:
    """Run the lens analysis (and the knowledge benchmark) on each checkpoint and write one report.

    Args:
        checkpoints: checkpoint directories.
        data: the utterances, or a function ``model -> utterances`` (units depend on the model's vocabulary,
            e.g. ``lambda m: load_speech_dataset(paths, m.speech_vocab, ...)``).
        out_dir: output folder (created; checked before any model loads: a file of a name the comparison
            writes that the package did not write stops it with an ``OutputError``, nothing overwritten).
        names: a label per checkpoint (default: the directory names).
        loader: ``path -> model`` (default ``slt.load(path, progress=False)``).
        knowledge_items: :class:`~slm_transformerlens.knowledge.KnowledgeItem` list (``None``: no benchmark).
        knowledge_mode: see :func:`~slm_transformerlens.knowledge.knowledge_table`.
        speech_tokenizer: audio -> ``Speech`` for knowledge parts given as audio.
        protocol: the analysis settings (:class:`LensProtocol`; its ``k``, ``view``, pooling, targets,
            filter, controls and intervals are used for every model).
        make_lens: ``model -> lens`` for each model (default: the logit lens), e.g.
            ``lambda m: PatchscopeLens(m)``; the swapped-audio control reads with the same lens.
        charts: write the comparison chart (needs the ``plot`` extra); ``png`` also as PNG.
        progress: show progress bars.

    Returns:
        A :class:`Comparison` (tables, correlation and files: ``summary.csv``, ``peaks.csv``,
        ``knowledge.csv``, ``rates.html``, ``report.md``).
    """
    if not checkpoints:
        raise CompareError("pass at least one checkpoint to compare")
    names = [Path(c).name for c in checkpoints] if names is None else list(names)
    if len(names) != len(checkpoints) or len(set(names)) != len(names):
        raise CompareError(f"need one distinct name per checkpoint, got {names} for {len(checkpoints)}")
    protocol = protocol or LensProtocol()
    if loader is None:
        import slm_transformerlens as slt

        def loader(path: str | Path) -> Any:
            return slt.load(path, progress=False)

    ks = sorted({*protocol.ks, protocol.k})
    protocol = replace(protocol, ks=tuple(ks))
    written = ["summary.csv", "peaks.csv", "report.md"] + (
        ["knowledge.csv"] if knowledge_items is not None else []
    )
    written += (["rates.html"] + (["rates.png"] if png else [])) if charts else []
    out = claim_output_files(out_dir, written)  # before any model loads
    summaries, knowledge_frames, depths, headlines = [], [], {}, {}
    for name, path in tqdm(list(zip(names, checkpoints, strict=True)), desc="compare", disable=not progress):
        model = loader(path)
        utterances = data(model) if callable(data) else data
        lens = make_lens(model) if make_lens is not None else None
        if lens is not None:
            protocol = replace(protocol, lens=type(lens).__name__)  # the read-out the report states
        kwargs = {"lens": lens, "views": (protocol.view,), "progress": progress}
        table = protocol.transcription_table(model, utterances, **kwargs)
        if table.empty:
            raise CompareError(f"{name}: no word of the requested modalities in the data")
        swapped, note = swapped_control(model, utterances, protocol, table, **kwargs)
        summary = protocol.summarize(table, swapped=swapped)
        if protocol.positions in POOLED_READOUTS:  # no single-guess prior beside a pooled read-out
            summary = summary.drop(columns=["prior_rate"], errors="ignore")
        headlines[name] = report_headline(summary, protocol, note)
        n_layers = int(model.cfg.n_layers)
        depths[name] = n_layers
        summary.insert(0, "model", name)
        summary["n_layers"] = n_layers
        summary["depth"] = (summary["layer"] + 1) / n_layers
        summaries.append(summary)
        if knowledge_items is not None:
            from slm_transformerlens.knowledge import knowledge_table

            frame = knowledge_table(
                model,
                knowledge_items,
                mode=knowledge_mode,
                speech_tokenizer=speech_tokenizer,
                progress=progress,
            )
            frame.insert(0, "model", name)
            knowledge_frames.append(frame)
        del model, utterances, table, swapped, lens
        _free_memory()
    summary = pd.concat(summaries, ignore_index=True)
    knowledge = pd.concat(knowledge_frames, ignore_index=True) if knowledge_frames else pd.DataFrame()
    peaks = _peak_table(summary, knowledge, protocol)
    correlation = rate_knowledge_correlation(peaks["peak_rate"], peaks["knowledge_accuracy"])
    files = {"summary": out / "summary.csv", "peaks": out / "peaks.csv"}
    summary.to_csv(files["summary"], index=False)
    peaks.to_csv(files["peaks"], index=False)
    if not knowledge.empty:
        files["knowledge"] = out / "knowledge.csv"
        knowledge.to_csv(files["knowledge"], index=False)
    x = "depth" if len(set(depths.values())) > 1 else "layer"
    if charts:
        from slm_transformerlens.viz.html import save_chart

        chart = comparison_chart(summary, k=protocol.k, view=protocol.view, x=x)
        files["rates_html"] = save_chart(chart, out / "rates.html")
        if png:
            files["rates_png"] = save_chart(chart, out / "rates.png")
    files["report"] = out / "report.md"
    result = Comparison(
        out, summary, peaks, knowledge, correlation, protocol, files, headlines, knowledge_mode=knowledge_mode
    )
    files["report"].write_text(_report_text(result, x=x), encoding="utf-8")
    return result


def _peak_table(summary: pd.DataFrame, knowledge: pd.DataFrame, protocol: LensProtocol) -> pd.DataFrame:
    peaks = peak_layers(summary, by=("model", "site", "view"))
    peaks = peaks[
        (peaks["metric"] == "transcription") & (peaks["k"] == protocol.k) & (peaks["view"] == protocol.view)
    ]
    n_layers = summary.drop_duplicates("model").set_index("model")["n_layers"]
    peaks = peaks.drop(columns=["metric", "k", "view"]).reset_index(drop=True)
    peaks.insert(3, "n_layers", peaks["model"].map(n_layers).to_numpy())
    peaks.insert(4, "peak_depth", (peaks["peak_layer"] + 1) / peaks["n_layers"])
    if knowledge.empty:
        peaks["knowledge_accuracy"] = np.nan
        peaks["knowledge_n"] = 0
    else:
        grouped = knowledge.groupby("model")["score_mean"]
        peaks["knowledge_accuracy"] = peaks["model"].map(grouped.mean())
        peaks["knowledge_n"] = peaks["model"].map(grouped.size()).fillna(0).astype(int)
    return peaks


def comparison_chart(summary: pd.DataFrame, *, k: int = 10, view: str = "text", x: str = "depth") -> Any:
    """Every model's transcription top-k rate per layer (``x="layer"``) or fraction of depth (``"depth"``).

    Solid lines with their interval band (cluster bootstrap when present, else Wilson) are the rates;
    dashed lines of the same colour are each model's shuffled-target control; the grey band reaches the
    frequency prior (the chance level a fixed frequency ranking gets).
    """
    from slm_transformerlens.viz.charts import import_altair

    alt = import_altair()
    df = summary[
        (summary["metric"] == "transcription") & (summary["k"] == k) & (summary["view"] == view)
    ].copy()
    if df.empty:
        raise CompareError(f"no transcription rows at k={k} in view {view!r} to draw")
    low, high = ("cluster_low", "cluster_high") if "cluster_low" in df.columns else ("ci_low", "ci_high")
    df["low"], df["high"] = df[low], df[high]
    keep = ["model", "layer", "depth", "rate", "low", "high", "n"]
    keep += [c for c in ("shuffled_rate", "prior_rate") if c in df.columns and df[c].notna().any()]
    df = df[keep]
    title_x = "layer / number of layers" if x == "depth" else "layer"
    base = alt.Chart(df).encode(x=alt.X(f"{x}:Q", title=title_x), color=alt.Color("model:N", title="model"))
    scale = alt.Scale(domain=[0, 1])
    layers = []
    if "prior_rate" in df.columns:  # one grey band: the highest prior of any model at each x
        prior = df.groupby(x, as_index=False)["prior_rate"].max()
        layers.append(
            alt.Chart(prior)
            .mark_area(opacity=0.15, color="grey")
            .encode(x=f"{x}:Q", y=alt.Y("prior_rate:Q", stack=None, scale=scale))
        )
    y = alt.Y("low:Q", title=f"top-{k} rate", stack=None, scale=scale)
    layers.append(base.mark_area(opacity=0.2).encode(y=y, y2="high:Q"))
    layers.append(
        base.mark_line(point=True).encode(
            y=alt.Y("rate:Q", scale=scale),
            tooltip=["model:N", "layer:Q", alt.Tooltip("rate:Q", format=".3f"), "n:Q"],
        )
    )
    if "shuffled_rate" in df.columns:
        layers.append(base.mark_line(strokeDash=[4, 3]).encode(y=alt.Y("shuffled_rate:Q", scale=scale)))
    return alt.layer(*layers).properties(
        width=460,
        height=280,
        title=f"transcription top-{k} rate ({view} view); dashed: shuffled targets (chance)"
        + (", grey: frequency prior" if "prior_rate" in df.columns else ""),
    )


def _report_text(result: Comparison, *, x: str) -> str:
    from slm_transformerlens.apps.report import markdown_table

    corr = result.correlation
    n = int(corr["n"])
    if np.isnan(corr["pearson"]):
        corr_line = f"not defined (n = {n} model(s) with both numbers; it needs at least 3 and some spread)"
    else:
        corr_line = (
            f"Pearson r = {corr['pearson']:.3f}, Spearman rho = {corr['spearman']:.3f} (n = {n} models)"
        )
    lines = [
        f"# Model comparison: implicit transcription and {result.knowledge_label.replace('-', ' ')}",
        "",
        *(f"- **{name}**: {line}" for name, line in result.headlines.items()),
        "",
        *result.protocol.markdown(),
        f"Curves are drawn against {'the fraction of depth, (layer + 1) / layers, as depths differ' if x == 'depth' else 'the layer index'}.",
        "",
        f"## Peak transcription rate and {result.knowledge_label} accuracy per model",
        "",
        markdown_table(result.peaks),
        "",
        f"Correlation between peak transcription rate and {result.knowledge_label} accuracy across models: {corr_line}.",
        "",
    ]
    if "rates_html" in result.files:
        lines += [
            "![rates](rates.png)" if "rates_png" in result.files else "",
            "[interactive chart](rates.html)",
            "",
        ]
    lines += ["## Files", ""]
    lines += [
        f"- `{p.relative_to(result.out_dir)}` ({name})"
        for name, p in result.files.items()
        if name != "report"
    ]
    lines.append("")
    return "\n".join(lines)
