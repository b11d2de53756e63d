"""``slm-lens demo`` on the main organism: the paper's figure kinds in miniature, from packaged files.

Loads the packaged main organism (:data:`~slm_transformerlens.organism.shipped.MAIN`), reads the held-out
voice speaking held-out sentences (all speech, plus slamkit-style interleavings), and writes the lens
report (transcription and next-word rates per layer with intervals, modality mass per layer, the
heatmap of a spoken sentence), then the shipped evaluation of every organism: per-layer curves with
their shuffled-target controls, the ablation comparison and spoken-knowledge accuracy
(``organism_results.md``, ``organism_curves.csv``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

__all__ = ["run_organism_demo"]


def run_organism_demo(
    out_dir: str | Path = "out/demo",
    *,
    charts: bool = True,
    png: bool = True,
    progress: bool = True,
    n_sentences: int = 48,
) -> Any:
    """Write the lens report of the main organism and the shipped ablation results to ``out_dir``."""
    from slm_transformerlens.apps.report import write_lens_report
    from slm_transformerlens.lens import LensProtocol, WordFilter
    from slm_transformerlens.organism.shipped import MAIN, heldout_utterances, load_organism, shipped_root
    from slm_transformerlens.speech.plans import interleave

    model = load_organism(MAIN, progress=progress)
    spoken = heldout_utterances("kmeans", limit=n_sentences)
    mixed = [
        interleave(s, "poisson", seed=i, speech_fraction=0.5, mean_span=3) for i, s in enumerate(spoken[:16])
    ]
    utterances: list[Any] = [[s] for s in spoken] + mixed
    notes = (
        "The main model organism: a 2.3M-parameter Llama (8 layers, tied embeddings) trained here with the "
        "SIMS recipe (text-LM pretraining, then interleaved speech-text training with slamkit Poisson spans) "
        "on espeak-ng speech quantised into 200 k-means units at 25 Hz. Spoken words are a held-out voice "
        "speaking held-out sentences. See organism_results.md for all organisms (ablations), chance "
        "controls and spoken-knowledge accuracy, and slm_transformerlens/data/organism/MODEL_CARD.md.",
        "Read-out: the logits max-pooled over each word's unit span (positions='max', the paper's reported "
        "read-out), content words only (the default stop list). Read at the last unit alone, the organism's "
        "transcription rate stays near its shuffled control; organism_results.md reads 'any' position.",
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
    evaluation = shipped_root() / "evaluation"
    for source, target in (("results.md", "organism_results.md"), ("curves.csv", "organism_curves.csv")):
        if (evaluation / source).is_file():
            shutil.copy(evaluation / source, Path(out_dir) / target)
    return result
