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
    "export_eval_data",
    "heldout_utterances",
    "load_organism",
    "shipped_checkpoint",
    "shipped_models",
    "shipped_root",
]

#: The main organism (text-LM init + interleaved SIMS mixture, k-means units).
MAIN = "main_kmeans"


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
    from slm_transformerlens.organism.build import _save_renderings, load_renderings
    from slm_transformerlens.organism.corpus import is_content_word

    data, out = Path(data_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    corpus = json.loads((data / "corpus.json").read_text())
    counts = Counter(w for s in corpus["train"] for w in s.split() if is_content_word(w))
    slim = {"heldout": corpus["heldout"], "facts": corpus["facts"], "content_counts": dict(counts)}
    (out / "corpus.json").write_text(json.dumps(slim))
    for kind in kinds:
        renderings = [r for r in load_renderings(data, kind) if r["split"] != "train"]
        _save_renderings(out / f"units_{kind}", renderings)
    for name in ("recipe.json", "vocab.json", "phonemes.json", "kmeans.npy"):
        if (data / name).exists():
            shutil.copy(data / name, out / name)
    return out
