"""Run the paper's lens analysis over a dataset and write tables, charts and a Markdown report.

:func:`write_lens_report` is what ``slm-lens demo`` and ``slm-lens analyze`` run: the transcription
table (current-word and next-word ranks per word and layer, via :func:`~slm_transformerlens.lens.
transcription_table`), its per-layer summary with Wilson intervals, the peak layers, a layer x position
heatmap of one utterance, and ``report.md`` linking them. Every file it writes is listed in the
returned :class:`ReportFiles`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from slm_transformerlens.lens import (
    LogitLens,
    lens_table,
    peak_layers,
)
from slm_transformerlens.lens.base import Lens, LensError
from slm_transformerlens.lens.controls import POOLED_READOUTS
from slm_transformerlens.lens.protocol import LensProtocol
from slm_transformerlens.lens.readout import TokenNamer
from slm_transformerlens.outputs import claim_output_files, output_path, prepare_output_folder
from slm_transformerlens.protocols import SpeechLM
from slm_transformerlens.spans import as_encoded_batch

__all__ = [
    "REPORT_FILES",
    "ReportFiles",
    "markdown_table",
    "prepare_output_folder",
    "report_headline",
    "swapped_control",
    "write_lens_report",
]

#: Columns of the summary rows shown in the report's per-layer table.
_RATE_COLUMNS = (
    "layer",
    "rate",
    "shuffled_rate",
    "shuffled_sd",
    "prior_rate",
    "swapped_rate",
    "heard",
    "heard_low",
    "heard_high",
    "ci_low",
    "ci_high",
    "cluster_low",
    "cluster_high",
    "n",
)


#: The files :func:`write_lens_report` writes (names and patterns, see
#: :func:`~slm_transformerlens.outputs.claim_output_files`): a file of these names that the package
#: did not write is never overwritten.
REPORT_FILES = (
    "report.md",
    "summary.csv",
    "peaks.csv",
    "heatmap.csv.gz",
    "transcription.*",
    "swapped_transcription.*",
    "heatmap.*",
    "modality_mass.*",
    "rates_*.html",
    "rates_*.png",
)


@dataclass
class ReportFiles:
    """What :func:`write_lens_report` wrote and computed."""

    out_dir: Path
    table: pd.DataFrame
    summary: pd.DataFrame
    peaks: pd.DataFrame
    files: dict[str, Path] = field(default_factory=dict)
    swapped: pd.DataFrame | None = None
    headline: str = ""

    @property
    def report(self) -> Path:
        """The Markdown report."""
        return self.files["report"]


def markdown_table(frame: pd.DataFrame, *, floatfmt: str = ".3f") -> str:
    """A GitHub-flavoured Markdown table (no ``tabulate`` dependency)."""
    if frame.empty:
        return "_(no rows)_"

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return format(value, floatfmt)
        return str(value).replace("|", "\\|")

    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def _save_table(frame: pd.DataFrame, path_stem: Path) -> Path:
    """Parquet when pyarrow is installed (list columns kept), gzipped CSV otherwise."""
    if importlib.util.find_spec("pyarrow") is not None:
        path = output_path(path_stem.parent, path_stem.name + ".parquet")
        frame.to_parquet(path, index=False)
    else:
        path = output_path(path_stem.parent, path_stem.name + ".csv.gz")
        frame.to_csv(path, index=False)
    return path


def _charts(
    out_dir: Path,
    heat: pd.DataFrame,
    table: pd.DataFrame,
    summary: pd.DataFrame,
    *,
    k: int,
    png: bool,
    heat_title: str,
) -> dict[str, Path]:
    from slm_transformerlens.viz.charts import lens_heatmap, modality_mass_chart, transcription_rate_chart
    from slm_transformerlens.viz.html import save_chart

    charts: dict[str, Any] = {}
    if not heat.empty:
        charts["heatmap"] = lens_heatmap(heat, view="full", title=heat_title)
    for modality in sorted(summary["modality"].dropna().unique()):
        rows = summary[summary["modality"] == modality]
        charts[f"rates_{modality}"] = transcription_rate_chart(
            rows,
            k=k,
            view="text",
            title=f"{modality} words: current-word and next-word top-{k} rate (text view); "
            "dashed: shuffled targets (chance)"
            + (", dotted: swapped audio (context)" if "swapped_rate" in rows else "")
            + (", grey: frequency prior" if "prior_rate" in rows else ""),
        )
    charts["modality_mass"] = modality_mass_chart(table, title="probability mass per vocabulary group")
    files = {}
    for name, chart in charts.items():
        files[f"{name}_html"] = save_chart(chart, output_path(out_dir, f"{name}.html"))
        if png:
            files[f"{name}_png"] = save_chart(chart, output_path(out_dir, f"{name}.png"))
    return files


def swapped_control(
    model: SpeechLM,
    utterances: Sequence[Any],
    protocol: LensProtocol,
    table: pd.DataFrame,
    **table_kwargs: Any,
) -> tuple[pd.DataFrame | None, str | None]:
    """The swapped-audio table of ``utterances`` (the data of ``table``), or ``None`` and why it was not run.

    It runs when the protocol asks for it and the data has at most ``protocol.max_swap_words`` spoken words
    (:meth:`~slm_transformerlens.lens.LensProtocol.swap_limit_reason`); a dataset with a spoken word that
    has no donor gets ``None`` and that reason, said in the report. ``table_kwargs``: as for the table
    (``lens``, ``layers``, ``views``, ``batch_tokens``, ``progress``...).
    """
    reason = protocol.swap_limit_reason(table)
    if reason is not None:
        return None, reason
    try:
        return protocol.swapped_table(model, utterances, **table_kwargs), None
    except LensError as error:
        if "no donor" not in str(error):
            raise
        return None, " ".join(str(error).split())


def report_headline(summary: pd.DataFrame, protocol: LensProtocol, note: str | None) -> str:
    """A report's first line: where heard above context peaks (:func:`~slm_transformerlens.lens.heard_headline`),
    or why it was not measured (``note``: why there is no swapped-audio control)."""
    from slm_transformerlens.lens.heard import heard_headline

    if "heard" not in summary.columns:
        return (
            f"heard above context: not measured (swapped-audio control {note or 'not run'}); the shuffled "
            "control is a chance level, not a context control, so these rates mix hearing with guessing"
        )
    return heard_headline(summary, k=protocol.k, view=protocol.view)


def write_lens_report(
    model: SpeechLM,
    utterances: Sequence[Any],
    out_dir: str | Path,
    *,
    lens: Lens | None = None,
    layers: int | Sequence[int] | None = None,
    modalities: Sequence[str] | None = None,
    k: int = 10,
    heatmap_utterance: int = 0,
    charts: bool = True,
    png: bool = True,
    title: str = "Logit lens on a speech LM",
    notes: Sequence[str] = (),
    progress: bool = True,
    protocol: LensProtocol | None = None,
    table: pd.DataFrame | None = None,
    n_utterances: int | None = None,
    swapped: pd.DataFrame | None = None,
    swapped_note: str | None = None,
) -> ReportFiles:
    """Transcription and next-word analysis of ``utterances``, written to ``out_dir``.

    Args:
        model: a ``HookedSLM``.
        utterances: utterances (``Speech`` / ``Text`` lists, ``EncodedBatch``-likes, ``(tokens, word_spans)``).
        out_dir: the output folder (created).
        lens: the lens to read with (default: the logit lens).
        layers: block indices (default all).
        modalities: word modalities to analyse (default all: spoken and written words).
        k: the top-k rate shown in the report and charts (1, 5 and 10 are always computed).
        heatmap_utterance: which utterance the layer x position heatmap shows.
        charts: write altair charts (needs the ``plot`` extra).
        png: also write PNGs of the charts.
        title: the report's title.
        notes: paragraphs added under the title (e.g. what the model is).
        progress: show progress bars.
        protocol: the analysis settings (pooling, targets, word filter, controls, intervals); when given,
            its ``k`` and ``modalities`` replace the arguments of the same names. Stated in the report.
        table: a transcription table computed already (e.g. merged from the parts of
            :func:`~slm_transformerlens.apps.run.run_analysis`); then ``utterances`` only needs to hold the
            heatmap's utterance.
        n_utterances: the number of utterances the report states (default ``len(utterances)``).
        swapped: the swapped-audio table of the same data (:func:`swapped_control`); computed here when
            ``table`` is not given and the protocol asks for it (``protocol.swapped_audio``).
        swapped_note: why there is no swapped table (stated in the headline).

    Returns:
        The tables and the paths written: ``transcription`` (parquet or csv.gz), ``swapped_transcription``
        (with the swapped-audio control), ``summary.csv``, ``peaks.csv``, ``heatmap.csv.gz`` and charts,
        ``report.md``; ``headline``: the report's first line (where heard above context peaks).
    """
    if not 0 <= heatmap_utterance < len(utterances):
        raise LensError(f"heatmap_utterance={heatmap_utterance} but there are {len(utterances)} utterances")
    out = claim_output_files(out_dir, REPORT_FILES)
    lens = lens if lens is not None else LogitLens(model)
    if protocol is None:
        protocol = LensProtocol(k=k, modalities=modalities)
    k, modalities = protocol.k, protocol.modalities
    ks = sorted({*protocol.ks, int(k)})
    protocol = replace(protocol, ks=tuple(ks), lens=type(lens).__name__)
    if table is None:
        table = protocol.transcription_table(model, utterances, lens=lens, layers=layers, progress=progress)
        if swapped is None and not table.empty:
            kwargs = {"lens": lens, "layers": layers, "progress": progress}
            swapped, swapped_note = swapped_control(model, utterances, protocol, table, **kwargs)
    if table.empty:
        raise LensError("no word of the requested modalities was found in the utterances: nothing to analyse")
    summary = protocol.summarize(table, by=("site", "view", "modality"), swapped=swapped)
    if protocol.positions in POOLED_READOUTS:  # a single-guess prior is no chance level for a pooled read-out
        summary = summary.drop(columns=["prior_rate"], errors="ignore")
    headline = report_headline(summary, protocol, swapped_note)
    peaks = peak_layers(summary, by=("site", "view", "modality"))
    heat = lens_table(
        model, utterances[heatmap_utterance], lens=lens, layers=layers, positions="all", top_k=3
    )
    heat["input_token"] = _input_tokens(model, utterances[heatmap_utterance], heat)
    files: dict[str, Path] = {"transcription": _save_table(table, out / "transcription")}
    if swapped is not None:
        files["swapped_transcription"] = _save_table(swapped, out / "swapped_transcription")
    summary.to_csv(out / "summary.csv", index=False)
    peaks.to_csv(out / "peaks.csv", index=False)
    files["summary"], files["peaks"] = out / "summary.csv", out / "peaks.csv"
    files["heatmap_table"] = out / "heatmap.csv.gz"
    heat.drop(columns=["top_probs", "top_ids"]).to_csv(files["heatmap_table"], index=False)
    if charts:
        lens_name = "tuned lens" if type(lens).__name__ == "TunedLens" else "logit lens"
        heat_title = f"{lens_name}: top token per layer and position (utterance {heatmap_utterance})"
        files.update(_charts(out, heat, table, summary, k=k, png=png, heat_title=heat_title))
    files["report"] = out / "report.md"
    files["report"].write_text(
        _report_text(
            model,
            utterances,
            table,
            summary,
            peaks,
            files,
            lens=lens,
            title=title,
            notes=notes,
            k=k,
            protocol=protocol,
            n_utterances=len(utterances) if n_utterances is None else n_utterances,
            headline=headline,
        ),
        encoding="utf-8",
    )
    return ReportFiles(out, table, summary, peaks, files, swapped=swapped, headline=headline)


def _input_tokens(model: SpeechLM, utterance: Any, heat: pd.DataFrame) -> list[str]:
    """The readable input token at each (batch, position) row of a heatmap table."""
    tokens = as_encoded_batch(model, utterance).tokens.cpu()
    namer = TokenNamer(model.speech_vocab, getattr(model, "tokenizer", None))
    return [namer(int(tokens[b, p])) for b, p in zip(heat["batch"], heat["position"], strict=True)]


def _report_text(
    model: SpeechLM,
    utterances: Sequence[Any],
    table: pd.DataFrame,
    summary: pd.DataFrame,
    peaks: pd.DataFrame,
    files: dict[str, Path],
    *,
    lens: Lens,
    title: str,
    notes: Sequence[str],
    k: int,
    protocol: LensProtocol,
    n_utterances: int,
    headline: str,
) -> str:
    cfg = model.cfg
    vocab = model.speech_vocab
    words = table.drop_duplicates(["utterance", "word_index"])
    lines = [f"# {title}", "", f"**{headline}**", ""]
    lines += [*(f"{note}\n" for note in notes)]
    lines += [
        "## Model",
        "",
        f"- family `{vocab.family}`, {cfg.n_layers} layers, d_model {cfg.d_model}, "
        f"vocabulary {vocab.vocab_size} ({vocab.n_units} speech units, markers {dict(vocab.markers)})",
        f"- checkpoint `{getattr(model, 'checkpoint_path', '?')}`",
        "",
        "## Data",
        "",
        f"- {n_utterances} utterances, {len(words)} analysed words "
        f"({', '.join(f'{n} {m}' for m, n in words['modality'].value_counts().items())})",
        "",
        *protocol.markdown(),
        "## Where each rate peaks",
        "",
        "Transcription = the current word's target is in the top-k; next word = the following word's target "
        "is. `shuffled_rate` (spread `shuffled_sd` over the permutations) is the chance level of this read-out; "
        "`swapped_rate` is what context alone gives (the word's audio swapped for another word's) and `heard` = "
        "rate - swapped_rate with its paired utterance-bootstrap interval `heard_low`..`heard_high`"
        + (
            "; `prior_rate` is a single-guess frequency prior, a reference only"
            if "prior_rate" in summary
            else ""
        )
        + " (see Protocol). `ci_*` are Wilson intervals (rows as independent), `cluster_*` the cluster-bootstrap "
        "intervals.",
        "",
        markdown_table(peaks[(peaks["k"] == k) & (peaks["view"] == "text")].drop(columns=["site"])),
        "",
    ]
    for modality in sorted(summary["modality"].dropna().unique()):
        for metric in ("transcription", "next_word"):
            rows = summary[
                (summary["modality"] == modality)
                & (summary["metric"] == metric)
                & (summary["k"] == k)
                & (summary["view"] == "text")
            ]
            lines += [f"### {modality} words: {metric} top-{k} rate per layer (text view)", ""]
            lines += [markdown_table(rows[[c for c in _RATE_COLUMNS if c in rows.columns]]), ""]
    lines += ["## Files", ""]
    out_dir = files["report"].parent
    lines += [f"- `{path.relative_to(out_dir)}` ({name})" for name, path in files.items() if name != "report"]
    lines.append("")
    return "\n".join(lines)
