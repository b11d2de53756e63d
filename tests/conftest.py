"""Shared fixtures: tiny random checkpoints in every real on-disk layout (built once per session)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import jaxtyping
import pytest
import torch

# Check every annotation of the package at run time (jaxtyping shapes and dtypes, with beartype) while the
# suite runs: the hook is installed for the whole session, before the package is first imported. PEP 484's
# numeric tower is on (an int is a valid ``float`` argument, as the typing spec says).
_TYPECHECK_HOOK = jaxtyping.install_import_hook(
    "slm_transformerlens", "beartype.beartype(conf=beartype.BeartypeConf(is_pep484_tower=True))"
)

from slm_transformerlens import testing  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


#: name -> (builder, kwargs, load kwargs factory)
def distinct_words(resolver, n: int) -> list[str]:
    """``n`` words of ``testing.SAMPLE_TEXT`` whose first running-text target tokens are distinct (not <unk>);
    ``resolver`` is a :class:`~slm_transformerlens.lens.WordTargetResolver`."""
    chosen, seen = [], set()
    for word in dict.fromkeys(testing.SAMPLE_TEXT.replace(".", "").split()):
        first = resolver(word).first_id
        if first is not None and first not in seen and first != resolver.tokenizer.unk_token_id:
            chosen.append(word)
            seen.add(first)
        if len(chosen) == n:
            return chosen
    raise AssertionError("the sample text has too few distinct words")


LAYOUTS: dict[str, dict] = {
    "sims-qwen2-tied": {"kind": "sims", "base": "qwen2", "tie": True, "shards": 1},
    "sims-qwen2-untied-sharded": {
        "kind": "sims",
        "base": "qwen2",
        "tie": False,
        "shards": 3,
        "padding_rows": 64,
    },
    "sims-llama3-tied": {"kind": "sims", "base": "llama3", "tie": True, "shards": 1},
    "sims-llama3-untied-sharded": {"kind": "sims", "base": "llama3", "tie": False, "shards": 2},
    "spiritlm-base-bin": {"kind": "spiritlm", "expressive": False, "weights": "bin"},
    "spiritlm-expressive-safetensors": {"kind": "spiritlm", "expressive": True, "weights": "safetensors"},
}


def build_layout(name: str, directory: Path) -> tuple[Path, dict]:
    """Write checkpoint ``name`` into ``directory``; return it and the kwargs ``slt.load`` needs."""
    spec = dict(LAYOUTS[name])
    kind = spec.pop("kind")
    if kind == "sims":
        path = testing.make_sims_checkpoint(directory, n_layers=3, **spec)
        return path, {"tokenizer": testing.base_tokenizer_dir(spec["base"])}
    path = testing.make_spiritlm_checkpoint(directory, n_layers=3, **spec)
    return path, {}


@pytest.fixture(scope="session")
def checkpoint_factory(tmp_path_factory: pytest.TempPathFactory):
    """Build (once) and return ``(path, load_kwargs)`` for a named layout."""
    cache: dict[str, tuple[Path, dict]] = {}

    def get(name: str) -> tuple[Path, dict]:
        if name not in cache:
            cache[name] = build_layout(name, tmp_path_factory.mktemp(name))
        return cache[name]

    return get


@pytest.fixture(scope="session")
def spiritlm_checkpoint(checkpoint_factory) -> Path:
    """A tiny SpiritLM Base checkpoint (the fastest model to load: ~1k vocabulary)."""
    return checkpoint_factory("spiritlm-base-bin")[0]


@pytest.fixture(scope="session")
def spiritlm_model(spiritlm_checkpoint):
    """The tiny SpiritLM Base checkpoint loaded as a HookedSLM (shared: do not mutate)."""
    import slm_transformerlens as slt

    return slt.load(spiritlm_checkpoint, progress=False)


@pytest.fixture(scope="session")
def smollm2_sims(tmp_path_factory: pytest.TempPathFactory) -> testing.RealCheckpoint:
    """REAL SmolLM2-135M weights extended with 500 units, saved in the SIMS layout (built once)."""
    return testing.make_smollm2_checkpoint(tmp_path_factory.mktemp("smollm2-sims"), layout="sims")


@pytest.fixture(scope="session")
def smollm2_sims_model(smollm2_sims):
    """The SIMS-layout SmolLM2 loaded as a HookedSLM (shared: do not mutate)."""
    import slm_transformerlens as slt

    return slt.load(smollm2_sims.path, progress=False, **smollm2_sims.load_kwargs)


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded default (real SmolLM2 + units, random 25 Hz HuBERT, k-means), built once."""
    from slm_transformerlens.apps.demo import build_demo_assets

    cache = tmp_path_factory.mktemp("demo-cache")
    build_demo_assets(cache, progress=False)
    return cache
