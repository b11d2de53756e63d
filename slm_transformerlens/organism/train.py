"""``slm-lens organism train``: phase 1 (text LM) and phase 2 (SIMS mixture) for each variant.

Imports only the standard library, numpy, torch, transformers and safetensors (it runs on a training
machine without TransformerLens or espeak). Reads a data directory written by
:func:`slm_transformerlens.organism.build.build_data` and writes one SIMS checkpoint per variant
(slamkit ``UnitLM`` ``config.json`` + ``lm.``-prefixed fp16 safetensors + the base tokenizer in
``base_tokenizer/`` + ``train_log.json``), loadable with
``slt.load(dir, tokenizer=dir / "base_tokenizer")``.

Deterministic given the device: seeded init, seeded sequence order. CUDA uses bf16 autocast, CPU fp32.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slm_transformerlens.errors import SLMError
from slm_transformerlens.organism.recipe import VARIANTS, Recipe, Variant

__all__ = [
    "add_unit_rows",
    "cosine_lr_factor",
    "mixture",
    "model_config",
    "run_training",
    "save_sims_checkpoint",
    "train_all",
    "train_lm",
]


def model_config(recipe: Recipe, vocab_size: int) -> Any:
    """The Llama config of the organism (tied embeddings, like Llama-3.2-1B/3B)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=recipe.d_model,
        intermediate_size=recipe.d_mlp,
        num_hidden_layers=recipe.n_layers,
        num_attention_heads=recipe.n_heads,
        num_key_value_heads=recipe.n_heads,
        max_position_embeddings=max(512, recipe.seq_len),
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 10_000.0},
        initializer_range=0.02,
        bos_token_id=0,
        eos_token_id=1,
    )


def _new_model(recipe: Recipe, vocab_size: int, seed: int) -> Any:
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(model_config(recipe, vocab_size))
    model.config._attn_implementation = "sdpa"
    return model


def add_unit_rows(model: Any, new_size: int, seed: int) -> None:
    """Grow the (tied) input embedding to ``new_size`` rows; the new rows are drawn around the old rows'
    mean and spread (seeded), in the embedding's dtype."""
    old = model.get_input_embeddings().weight.detach()
    generator = torch.Generator().manual_seed(seed)
    rows = old.mean(0) + old.std(0) * torch.randn(new_size - old.shape[0], old.shape[1], generator=generator)
    model.resize_token_embeddings(new_size, mean_resizing=False)
    with torch.no_grad():
        model.get_input_embeddings().weight[old.shape[0] :] = rows.to(old.dtype)


def cosine_lr_factor(step: int, total: int, warmup_steps: int) -> float:
    """The learning-rate multiplier at ``step`` of ``total``: linear warm-up, then cosine down to 10%."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total - warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train_lm(
    model: Any,
    sequences: np.ndarray,
    recipe: Recipe,
    *,
    device: str,
    seed: int,
    label: str,
    log_every: int = 50,
    max_steps: int | None = None,
) -> list[dict[str, float]]:
    """Train every parameter of ``model`` on ``sequences`` (``[n, seq_len]`` ids, used in a seeded order)
    for one epoch with the recipe's AdamW (weight decay on matrices) and schedule (``max_steps``: stop
    early, for smoke tests only)."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=recipe.lr,
        betas=(0.9, 0.95),
    )
    return run_training(
        model,
        sequences,
        optimizer,
        batch_size=recipe.batch_size,
        warmup_steps=recipe.warmup_steps,
        device=device,
        seed=seed,
        label=label,
        log_every=log_every,
        max_steps=max_steps,
    )


def run_training(
    model: Any,
    sequences: np.ndarray,
    optimizer: torch.optim.Optimizer,
    *,
    batch_size: int,
    warmup_steps: int,
    device: str,
    seed: int,
    label: str,
    log_every: int = 50,
    max_steps: int | None = None,
) -> list[dict[str, float]]:
    """One epoch of next-token training over ``sequences`` in a seeded order: each param group's learning
    rate scaled by :func:`cosine_lr_factor`, gradients clipped to norm 1 (parameters without a gradient,
    i.e. frozen ones, do not count), bf16 autocast on CUDA. Returns the loss log (every ``log_every``
    steps and the last)."""
    model.to(device).train()
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    order = np.random.RandomState(seed).permutation(len(sequences))
    steps = len(order) // batch_size
    if max_steps is not None:
        steps = min(steps, max_steps)
    use_bf16 = device.startswith("cuda")
    log: list[dict[str, float]] = []
    started = time.time()
    window = []
    for step in range(steps):
        batch = torch.from_numpy(
            sequences[order[step * batch_size : (step + 1) * batch_size]].astype(np.int64)
        )
        batch = batch.to(device)
        factor = cosine_lr_factor(step, steps, warmup_steps)
        for group, lr in zip(optimizer.param_groups, base_lrs, strict=True):
            group["lr"] = lr * factor
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_bf16):
            logits = model(input_ids=batch).logits
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].float().reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1)
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        window.append(float(loss.detach()))
        if (step + 1) % log_every == 0 or step + 1 == steps:
            elapsed = time.time() - started
            tokens = (step + 1) * batch_size * sequences.shape[1]
            entry = {
                "step": step + 1,
                "tokens": tokens,
                "loss": float(np.mean(window)),
                "seconds": round(elapsed, 1),
            }
            log.append(entry)
            print(
                f"[{label}] step {step + 1}/{steps} loss {entry['loss']:.3f} {tokens / max(elapsed, 1e-9):.0f} tok/s",
                flush=True,
            )
            window = []
    model.eval()
    return log


def mixture(variant: Variant, n_total: int, streams: dict[str, np.ndarray], *, fix: str) -> np.ndarray:
    """``variant``'s share of each stream (text, interleaved, speech) of ``n_total`` sequences.

    Raises:
        SLMError: a stream is shorter than the share needs (``fix`` says how to rebuild it).
    """
    parts = []
    for kind in ("text", "interleaved", "speech"):
        count = round(getattr(variant, kind) * n_total)
        if count > len(streams[kind]):
            raise SLMError(
                f"variant {variant.name!r} needs {count} {kind} sequences but the data has {len(streams[kind])}: "
                + fix
            )
        if count:
            parts.append(streams[kind][:count])
    return np.concatenate(parts)


def _mixture(variant: Variant, recipe: Recipe, streams: dict[str, np.ndarray]) -> np.ndarray:
    """The phase-2 sequences of ``variant``: its share of each stream, exactly the recipe's token budget."""
    return mixture(
        variant,
        -(-recipe.phase2_tokens // recipe.seq_len),
        streams,
        fix="the recipe's phase2_tokens is larger than the build's; rebuild the data with this recipe",
    )


def _check_phase1(recipe: Recipe, sequences: np.ndarray) -> None:
    needed = -(-recipe.phase1_tokens // recipe.seq_len)
    if needed > len(sequences):
        raise SLMError(
            f"phase 1 needs {needed} text sequences but the data has {len(sequences)}: rebuild the data with this recipe"
        )


def save_sims_checkpoint(
    model: Any, directory: Path, *, n_units: int, tokenizer_dir: Path, extra: dict[str, Any]
) -> Path:
    """Write ``model`` in slamkit's UnitLM layout (fp16, ``lm.`` prefix, tied head left out)."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    state = {
        f"lm.{k}": v.detach().to("cpu", torch.float16).contiguous().clone()
        for k, v in model.state_dict().items()
        if k != "lm_head.weight"
    }
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    base_config = model.config.to_dict()
    base_config.pop("_attn_implementation_autoset", None)
    config = {
        "model_type": "speech_language_model",
        "architectures": ["UnitLM"],
        "base_model_name": "slm_transformerlens/organism",
        "base_config": base_config,
        "vocab_size": int(model.config.vocab_size),
        "tie_word_embeddings": True,
        "twist_init": False,
        "num_units": int(n_units),
        "organism": extra,
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2, default=str))
    if (directory / "base_tokenizer").exists():
        shutil.rmtree(directory / "base_tokenizer")
    shutil.copytree(tokenizer_dir, directory / "base_tokenizer")
    return directory


def train_all(
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    variants: Sequence[str] | None = None,
    unit_kinds: Sequence[str] | None = None,
    device: str = "cpu",
    threads: int | None = None,
    max_steps: int | None = None,
    seed: int | None = None,
) -> list[Path]:
    """Train the phase-1 text LM (cached in ``out_dir/text_lm_seed{seed}.pt``) and each variant x unit kind.

    ``seed``: the training seed (initialisation, new unit rows, sequence order) instead of the recipe's;
    the data (corpus, speech, units, streams) stay those of the build.

    Returns the checkpoint directories ``out_dir/{variant}_{kind}``.
    """
    if threads:
        torch.set_num_threads(threads)
    data, out = Path(data_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    recipe = Recipe.from_json(data / "recipe.json")
    if seed is not None:
        recipe = replace(recipe, seed=seed)
    sizes = json.loads((data / "vocab.json").read_text())
    base_vocab = int(sizes["base_vocab"])
    text = np.load(data / "streams_text.npz")
    names = list(variants or recipe.variants)
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise SLMError(f"unknown organism variant(s) {unknown}; choose from {list(VARIANTS)}")
    kinds = list(unit_kinds or recipe.unit_kinds)
    text_lm_path = out / f"text_lm_seed{recipe.seed}.pt"
    needs_text_lm = any(VARIANTS[n].text_init for n in names)
    text_log: list[dict[str, float]] = []
    if needs_text_lm:
        if text_lm_path.exists():
            saved = torch.load(text_lm_path, map_location="cpu", weights_only=True)
            text_state, text_log = saved["state"], json.loads(saved["log"])
        else:
            model = _new_model(recipe, base_vocab, recipe.seed)
            _check_phase1(recipe, text["phase1"])
            text_log = train_lm(
                model,
                text["phase1"],
                recipe,
                device=device,
                seed=recipe.seed,
                label="phase 1 text LM",
                max_steps=max_steps,
            )
            text_state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            torch.save({"state": text_state, "log": json.dumps(text_log)}, text_lm_path)
    written = []
    for kind in kinds:
        n_units = int(sizes["n_units"][kind])
        vocab_size = base_vocab + n_units + 2
        streams = {"text": text["text"], **dict(np.load(data / f"streams_{kind}.npz"))}
        for name in names:
            variant = VARIANTS[name]
            label = f"{name}_{kind}"
            started = time.time()
            if variant.text_init:
                model = _new_model(recipe, base_vocab, recipe.seed)
                model.load_state_dict(text_state)
                add_unit_rows(model, vocab_size, recipe.seed + 1)
            else:
                model = _new_model(recipe, vocab_size, recipe.seed)
            log: list[dict[str, float]] = []
            if variant.phase2:
                log = train_lm(
                    model,
                    _mixture(variant, recipe, streams),
                    recipe,
                    device=device,
                    seed=recipe.seed + 3,
                    label=label,
                    max_steps=max_steps,
                )
            extra = {
                "variant": name,
                "description": variant.description,
                "unit_kind": kind,
                "recipe": recipe.name,
                "seed": recipe.seed,
                "device": device,
                "torch": torch.__version__,
                "phase1_log": text_log if variant.text_init else [],
                "phase2_log": log,
                "phase2_seconds": round(time.time() - started, 1),
            }
            written.append(
                save_sims_checkpoint(
                    model.cpu(), out / label, n_units=n_units, tokenizer_dir=data / "tokenizer", extra=extra
                )
            )
            print(f"[{label}] saved to {out / label}", flush=True)
    return written
