"""Training and evaluating a tuned lens against a frozen model.

:func:`train_tuned_lens` follows tuned-lens' recipe: for every residual stream, minimise
``KL(final || lens)`` at the same position (the model's own output distribution is the target), summed
over streams; SGD with Nesterov momentum 0.9, learning rate ``lr_scale * (1 - momentum)`` (tuned-lens'
"effective lr 1.0"), weight decay 1e-3, linear decay to 0, gradient norm clipped at 1.0. The model is
frozen (its parameters get no gradients). :func:`evaluate_lenses` reports per-layer KL to the final
distribution and next-token cross-entropy for several lenses side by side.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from slm_transformerlens.hooks import hook_name
from slm_transformerlens.lens.analysis import encoded_inputs
from slm_transformerlens.lens.base import Lens, LensError, resolve_layers
from slm_transformerlens.lens.tuned_lens import TunedLens
from slm_transformerlens.protocols import SpeechLM

__all__ = ["evaluate_lenses", "frozen", "train_tuned_lens"]


@contextmanager
def frozen(model: SpeechLM) -> Any:
    """Temporarily set ``requires_grad=False`` on every model parameter (restored afterwards)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _batch(model: SpeechLM, item: Any) -> tuple[Tensor, Tensor | None]:
    inputs = encoded_inputs(model, item)
    mask = inputs.attention_mask
    return inputs.tokens, (None if mask is None or bool((mask != 0).all()) else mask)


def _streams(
    model: SpeechLM, tokens: Tensor, mask: Tensor | None, names: list[str]
) -> tuple[Tensor, dict[str, Tensor]]:
    kwargs: dict[str, Any] = {"names_filter": names}
    if mask is not None:
        kwargs["attention_mask"] = mask
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens, **kwargs)
    return logits, {name: cache[name] for name in names}


def _kl(final_logp: Tensor, lens_logits: Tensor, weights: Tensor) -> Tensor:
    """Weighted mean over rows of KL(final || lens)."""
    kl = (final_logp.exp() * (final_logp - lens_logits.log_softmax(-1))).sum(-1)
    return (kl * weights).sum() / weights.sum().clamp(min=1)


def train_tuned_lens(
    model: SpeechLM,
    data: Iterable[Any],
    *,
    lens: TunedLens | None = None,
    num_steps: int = 250,
    lr_scale: float = 1.0,
    momentum: float = 0.9,
    weight_decay: float = 1e-3,
    max_grad_norm: float = 1.0,
    warmup_steps: int = 0,
    layers: int | Sequence[int] | None = None,
    include_mid: bool = False,
    progress: bool = True,
) -> TunedLens:
    """Train a tuned lens on data the user supplies (the model stays frozen).

    Args:
        model: a ``HookedSLM`` / ``TransformerBridge``.
        data: batches: token tensors ``[batch, pos]``, ``EncodedBatch``-likes or Speech/Text inputs. It is
            cycled when shorter than ``num_steps`` (one batch per step).
        lens: a lens to continue training (default: a fresh identity-initialised ``TunedLens``).
        num_steps: optimiser steps.
        lr_scale: tuned-lens' learning-rate scale; SGD's lr is ``lr_scale * (1 - momentum)``.
        momentum, weight_decay, max_grad_norm, warmup_steps: as in tuned-lens (warm-up then linear decay).
        layers: block indices ``0..n_layers-1`` (negatives count from the end) whose translators are
            trained: block ``l``'s ``resid_pre`` translator (and ``resid_mid`` with ``include_mid``); as in
            every ``layers=`` argument of this package. ``None`` trains all of them. Untrained translators
            stay the identity. (Block ``l``'s ``resid_pre`` is Hugging Face's ``hidden_states[l]``, which is
            why earlier releases described these as hidden-state indices: the numbers are the same.)
        include_mid: also train ``resid_mid`` translators (creates them on a fresh lens).
        progress: tqdm progress bar.

    Returns:
        The trained lens (in eval mode).
    """
    if num_steps < 1:
        raise LensError(f"num_steps must be >= 1, got {num_steps}")
    lens = lens if lens is not None else TunedLens(model, include_mid=include_mid)
    if include_mid and lens.mid_translators is None:
        raise LensError(
            "include_mid=True needs a lens with resid_mid translators (TunedLens(model, include_mid=True))"
        )
    n_layers = lens.n_layers
    streams = resolve_layers(layers, n_layers)
    keys = [(layer, "resid_pre") for layer in streams]
    if include_mid:
        keys += [(layer, "resid_mid") for layer in streams]
    names = sorted({hook_name(site, layer) for layer, site in keys})
    params = [p for key in keys for p in lens.translator(*key).parameters()]  # type: ignore[union-attr]
    opt = torch.optim.SGD(
        params, lr=lr_scale * (1 - momentum), momentum=momentum, nesterov=True, weight_decay=weight_decay
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda step: (
            (step + 1) / max(1, warmup_steps)
            if step < warmup_steps
            else max(0.0, (num_steps - step) / max(1, num_steps - warmup_steps))
        ),
    )
    source = itertools.cycle(data) if isinstance(data, Sequence) else _cycle(data)
    lens.train()
    bar = tqdm(range(num_steps), desc="tuned lens", disable=not progress)
    with frozen(model):
        for _ in bar:
            tokens, mask = _batch(model, next(source))
            final, acts = _streams(model, tokens.to(lens.model.W_U.device), mask, names)
            final_logp = final.detach().float().log_softmax(-1).reshape(-1, final.shape[-1])
            weights = (
                torch.ones(final_logp.shape[0], device=final_logp.device)
                if mask is None
                else mask.reshape(-1).to(final_logp.device).float()
            )
            opt.zero_grad(set_to_none=False)
            total = 0.0
            for layer, site in keys:
                h = acts[hook_name(site, layer)].reshape(-1, lens.d_model)
                loss = _kl(final_logp, lens.logits(h, layer, site), weights)
                loss.backward()
                total += float(loss.detach())
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            opt.step()
            sched.step()
            bar.set_postfix(kl=f"{total / len(keys):.4f}")
    lens.eval()
    return lens


def _cycle(data: Iterable[Any]) -> Any:
    cache: list[Any] = []
    for item in data:
        cache.append(item)
        yield item
    if not cache:
        raise LensError("the training data is empty")
    while True:
        yield from cache


def evaluate_lenses(
    model: SpeechLM,
    data: Iterable[Any],
    lenses: Mapping[str, Lens],
    *,
    layers: int | Sequence[int] | None = None,
    site: str = "resid_post",
    chunk_size: int = 512,
    progress: bool = True,
) -> pd.DataFrame:
    """Per-layer KL(final || lens) and next-token cross-entropy, for several lenses on the same data.

    Returns:
        One row per (lens, layer): ``lens, layer, site, kl, ce, n_tokens`` (nats, token means; CE uses the
        next token, so the last position of each sequence only counts towards KL).
    """
    if not lenses:
        raise LensError("pass at least one lens, e.g. {'logit': LogitLens(model), 'tuned': tuned}")
    first = next(iter(lenses.values()))
    layer_list = resolve_layers(layers, first.n_layers)
    names = [hook_name(site, layer) for layer in layer_list]
    sums: dict[tuple[str, int], list[float]] = {
        (n, layer): [0.0, 0.0, 0.0, 0.0] for n in lenses for layer in layer_list
    }
    items = list(data) if not isinstance(data, Sequence) else data
    for item in tqdm(items, desc="lens evaluation", disable=not progress):
        tokens, mask = _batch(model, item)
        final, acts = _streams(model, tokens.to(first.model.W_U.device), mask, names)
        b, p, v = final.shape
        final_logp = final.float().log_softmax(-1).reshape(-1, v)
        valid = torch.ones(b, p, dtype=torch.bool) if mask is None else mask.bool().cpu()
        labels = torch.full((b, p), -100, dtype=torch.long)
        labels[:, :-1] = tokens[:, 1:].cpu()
        labels[:, :-1][~valid[:, 1:]] = -100
        labels[~valid] = -100
        valid_flat, labels_flat = valid.reshape(-1), labels.reshape(-1)
        for layer in layer_list:
            h = acts[hook_name(site, layer)].reshape(-1, first.d_model)
            for name, lens in lenses.items():
                acc = sums[(name, layer)]
                with torch.no_grad():
                    for start in range(0, h.shape[0], chunk_size):
                        sl = slice(start, start + chunk_size)
                        logits = lens.logits(h[sl], layer, site)
                        logp = logits.log_softmax(-1)
                        fl = final_logp[sl]
                        kl = (fl.exp() * (fl - logp)).sum(-1).cpu()
                        vm = valid_flat[sl]
                        acc[0] += float(kl[vm].sum())
                        acc[1] += float(vm.sum())
                        lab = labels_flat[sl].to(logp.device)
                        ce = F.cross_entropy(logp, lab, ignore_index=-100, reduction="sum")
                        acc[2] += float(ce)
                        acc[3] += float((lab != -100).sum())
    rows = [
        {
            "lens": name,
            "layer": layer,
            "site": site,
            "kl": acc[0] / max(acc[1], 1),
            "ce": acc[2] / max(acc[3], 1),
            "n_tokens": int(acc[1]),
        }
        for (name, layer), acc in sums.items()
    ]
    return pd.DataFrame(rows)
