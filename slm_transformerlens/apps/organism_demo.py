"""``slm-lens demo`` on the main organism: the paper's figure kinds in miniature, from packaged files.

Loads the packaged main organism (:data:`~slm_transformerlens.organism.shipped.MAIN`), reads the held-out
voice speaking held-out sentences (all speech, plus slamkit-style interleavings), and writes the lens
report (transcription and next-word rates per layer with intervals, modality mass per layer, the
heatmap of a spoken sentence), then the shipped evaluation of every organism: per-layer curves with
their shuffled-target controls, the ablation comparison and spoken-knowledge accuracy
(``organism_results.md``, ``organism_curves.csv``), drawn as two more charts: every organism's
transcription rate per layer beside its shuffled control (``organism_ablation.html``) and spoken
knowledge against the transcription peak (``organism_knowledge.html``). The shipped numbers are drawn
as they are; nothing of the evaluation is recomputed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

__all__ = ["run_organism_demo", "write_organism_charts"]

#: The charts of the shipped evaluation, as organism_results.md describes them.
_CHARTS = {
    "organism_ablation": "heard above context per layer of every organism: the top-10 rate minus the rate with "
    "the word's audio swapped for another word's (context kept), 95% paired bands, 0 in grey (read-out any, "
    "held-out set)",
    "organism_rates": "transcription_span rate per layer of every organism (95% bands), NOT corrected for "
    "context: its shuffled-target control (the chance level) dashed",
    "organism_knowledge": "spoken-knowledge accuracy against the peak transcription rate, one point per model "
    "(both 95% intervals), written accuracy as hollow squares, chance 0.5 dashed",
}


def write_organism_charts(
    evaluation: str | Path, out_dir: str | Path, *, png: bool = True
) -> dict[str, Path]:
    """Draw the ablation comparison (heard above context), the uncorrected rates and spoken knowledge vs
    transcription from an evaluation folder.

    Args:
        evaluation: a folder of ``slm-lens organism evaluate`` (``curves.csv``, ``knowledge.json``,
            ``heard.csv``), e.g. the shipped ``slm_transformerlens/data/organism/evaluation``.
        out_dir: where ``organism_ablation.html`` (heard; only when ``heard.csv`` exists),
            ``organism_rates.html`` and ``organism_knowledge.html`` (and PNGs) go.
        png: also write PNGs.

    Returns:
        The files written, by name (``organism_ablation_html``, ``organism_knowledge_png``, ...).
    """
    import pandas as pd

    from slm_transformerlens.organism.report import knowledge_vs_transcription
    from slm_transformerlens.viz.html import save_chart
    from slm_transformerlens.viz.organism import ablation_chart, heard_chart, knowledge_chart

    evaluation, out = Path(evaluation), Path(out_dir)
    curves = pd.read_csv(evaluation / "curves.csv")
    knowledge = json.loads((evaluation / "knowledge.json").read_text(encoding="utf-8"))
    charts = {}
    if (evaluation / "heard.csv").exists():
        charts["organism_ablation"] = heard_chart(pd.read_csv(evaluation / "heard.csv"))
    charts |= {
        "organism_rates": ablation_chart(curves),
        "organism_knowledge": knowledge_chart(knowledge_vs_transcription(curves, knowledge)),
    }
    files = {}
    for name, chart in charts.items():
        for suffix in ("html", "png") if png else ("html",):
            files[f"{name}_{suffix}"] = save_chart(chart, out / f"{name}.{suffix}")
    return files


def _heard_notes(evaluation: Path) -> tuple[str, ...]:
    """The shipped evaluation's heard verdicts (``heard.csv``, ``heard_acceptance.json``), as plain notes."""
    import pandas as pd

    from slm_transformerlens.organism.report import heard_verdict_lines

    if not (evaluation / "heard.csv").exists():
        return ()
    heard = pd.read_csv(evaluation / "heard.csv")
    verdicts = json.loads((evaluation / "heard_acceptance.json").read_text(encoding="utf-8"))
    lines = [line.removeprefix("- ") for line in heard_verdict_lines(heard, verdicts)]
    return (
        "Heard above context, read this first (shipped evaluation, every organism, held-out voice and "
        "sentences, content words, top-10 at any unit of the span; heard = rate - rate with the word's "
        "audio swapped for another word's, context kept; 95% paired cluster bootstrap by utterance; the "
        "shuffled-target control is in organism_results.md): " + " ".join(lines),
    )


def run_organism_demo(
    out_dir: str | Path = "out/demo",
    *,
    charts: bool = True,
    png: bool = True,
    progress: bool = True,
    n_sentences: int = 48,
) -> Any:
    """Write the lens report of the main organism and the shipped ablation results to ``out_dir``."""
    from slm_transformerlens.apps.report import REPORT_FILES, write_lens_report
    from slm_transformerlens.lens import LensProtocol, WordFilter
    from slm_transformerlens.organism.shipped import MAIN, heldout_utterances, load_organism, shipped_root
    from slm_transformerlens.outputs import claim_output_files
    from slm_transformerlens.speech.plans import interleave

    charts_ = [f"organism_{c}.{x}" for c in ("ablation", "rates", "knowledge") for x in ("html", "png")]
    claim_output_files(out_dir, [*REPORT_FILES, "organism_curves.csv", "organism_results.md", *charts_])
    model = load_organism(MAIN, progress=progress)
    spoken = heldout_utterances("kmeans", limit=n_sentences)
    mixed = [
        interleave(s, "poisson", seed=i, speech_fraction=0.5, mean_span=3) for i, s in enumerate(spoken[:16])
    ]
    utterances: list[Any] = [[s] for s in spoken] + mixed
    notes = (
        *_heard_notes(shipped_root() / "evaluation"),
        "The main model organism: a 2.3M-parameter Llama (8 layers, tied embeddings) trained here with the "
        "SIMS recipe (text-LM pretraining, then interleaved speech-text training with slamkit Poisson spans) "
        "on espeak-ng speech quantised into 200 k-means units at 25 Hz. Spoken words are a held-out voice "
        "speaking held-out sentences. See organism_results.md for all organisms (ablations), chance "
        "controls and spoken-knowledge accuracy"
        + (" (drawn in organism_ablation.html and organism_knowledge.html)" if charts else "")
        + ", and slm_transformerlens/data/organism/MODEL_CARD.md.",
        "Read-out below: the logits max-pooled over each word's unit span (positions='max', the paper's "
        "reported read-out), content words only (the default stop list). These rates are NOT corrected for "
        "context: a pooled read-out has no single-guess chance level, and the heard lines above (the "
        "swapped-audio control) say how much of it is hearing.",
    )
    result = write_lens_report(
        model,
        utterances,
        out_dir,
        charts=charts,
        png=png,
        title="slm-lens demo: logit lens on the model organism (a small interleaved speech LM)",
        notes=notes,
        heatmap_utterance=0,
        progress=progress,
        protocol=LensProtocol(positions="max", modalities=None, word_filter=WordFilter()),
    )
    evaluation, out = shipped_root() / "evaluation", Path(out_dir)
    files = {"organism_curves": Path(shutil.copy(evaluation / "curves.csv", out / "organism_curves.csv"))}
    if charts:
        files |= write_organism_charts(evaluation, out, png=png)
    results = (evaluation / "results.md").read_text(encoding="utf-8").rstrip("\n")
    listed = [
        f"- `{path.name}`: {what}"
        for name, path in files.items()
        for chart, what in _CHARTS.items()
        if name.startswith(chart)
    ]
    if listed:
        results += "\n\n## Charts\n\n" + "\n".join(listed)
    files["organism_results"] = out / "organism_results.md"
    files["organism_results"].write_text(results + "\n", encoding="utf-8")
    with result.report.open("a", encoding="utf-8") as report:  # its last section lists the files
        report.writelines(f"- `{path.name}` ({name})\n" for name, path in files.items())
    result.files.update(files)
    return result
