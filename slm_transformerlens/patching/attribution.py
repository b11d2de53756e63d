"""Attribution patching: a first-order screen over the same sweep as :func:`activation_patch_sweep`.

The effect of writing the (aligned) source activation ``a_src`` into the target run at an activation ``a``
is estimated as ``grad_a(metric) . (map @ a_src - a)``, summed over the slot's positions (and over
``d_head`` for heads), with the gradient taken on the unpatched target run (Nanda 2023, "Attribution
Patching"). One forward (no grad) on the source run and one forward + backward on the target run give
the whole layers x slots (x heads) grid for every component. For ``resid_mid`` the gradient is the one
of ``attn_out`` (the mid residual is ``resid_pre + attn_out`` and ``attn_out`` enters the model only
through it). The estimate is reported as ``value = unpatched + estimated effect`` in the same tidy
table, with ``method == "attribution"``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import pandas as pd
import torch
from torch import Tensor

from slm_transformerlens.patching.alignment import Direction, PatchingError, PatchPair, source_run, target_run
from slm_transformerlens.patching.components import source_hooks
from slm_transformerlens.patching.metrics import PatchMetric
from slm_transformerlens.patching.spec import (
    PatchJob,
    SweepResult,
    SweepSpec,
    baselines_frame,
    evaluate_metrics,
    mapped_source,
    result_frame,
    run_with_captures,
)
from slm_transformerlens.protocols import SpeechLM

__all__ = ["attribution_patch_sweep"]


def _leaf_if_detached() -> Any:
    """A forward hook that makes the first activation without a graph a leaf (models with frozen weights)."""
    state = {"done": False}

    def hook(act: Tensor, hook: Any) -> Tensor | None:
        if state["done"] or act.requires_grad or not act.is_floating_point():
            return None
        state["done"] = True
        return act.detach().requires_grad_(True)

    return hook


def attribution_patch_sweep(
    model: SpeechLM,
    pair: PatchPair,
    metrics: PatchMetric | Iterable[PatchMetric],
    *,
    components: str | Sequence[str] = ("resid_pre",),
    direction: Direction | Literal["both"] = "denoise",
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    slots: Sequence[int] | None = None,
    all_positions: bool = False,
) -> SweepResult:
    """Estimate every patch of a sweep with gradients (same arguments and table as the activation sweep).

    Args:
        model: a ``HookedSLM`` / ``TransformerBridge`` in eval mode.
        pair: the clean / corrupted pair (:class:`PatchPair`).
        metrics: differentiable :class:`PatchMetric` objects (``LensMetric(kind="rank")`` is not).
        components, direction, layers, heads, slots, all_positions: as in :func:`activation_patch_sweep`.

    Returns:
        :class:`SweepResult` with ``method == "attribution"``; ``value`` is the unpatched target-run
        value plus the estimated effect.
    """
    spec = SweepSpec.build(
        model,
        metrics,
        components=components,
        direction=direction,
        layers=layers,
        heads=heads,
        slots=slots,
        all_positions=all_positions,
    )
    metric_list = list(spec.metrics)
    bad = [m.name for m in metric_list if not m.differentiable]
    if bad:
        raise PatchingError(
            f"metrics {bad} are not differentiable (ranks): use kind='logprob' or 'prob' for attribution"
        )
    device = model.cfg.device
    hook_names = spec.source_hooks
    read_hooks = spec.read_hooks
    with torch.no_grad():
        plain = {
            run: run_with_captures(model, pair.tokens(run)[None].to(device), [*hook_names, *read_hooks])
            for run in ("clean", "corrupted")
        }
    values = {
        run: evaluate_metrics(metric_list, logits, captured, run) for run, (logits, captured) in plain.items()
    }
    clean = {k: float(v[0]) for k, v in values["clean"].items()}
    corrupted = {k: float(v[0]) for k, v in values["corrupted"].items()}
    baselines = baselines_frame(metric_list, values)
    frames = []
    for d in spec.directions:
        target = target_run(d)
        with torch.enable_grad():
            logits, captured = run_with_captures(
                model,
                pair.tokens(target)[None].to(device),
                [*hook_names, *read_hooks],
                fwd_hooks=[("hook_embed", _leaf_if_detached())],
                keep_grad=True,
            )
            tensors = [captured[n] for n in hook_names]
            grads: dict[str, dict[str, Tensor]] = {}
            for m in metric_list:
                out = m(logits, captured, target).sum()  # type: ignore[arg-type]
                got = torch.autograd.grad(out, tensors, retain_graph=True, allow_unused=True)
                grads[m.name] = {
                    n: (g if g is not None else torch.zeros_like(t)).detach()[0]
                    for n, g, t in zip(hook_names, got, tensors, strict=True)
                }
        target_acts = {n: t.detach() for n, t in captured.items()}
        del logits, captured, tensors
        matrix = pair.position_map(d)
        mapped_mask = (matrix.sum(dim=1) > 0).to(device)
        jobs = spec.jobs(pair, d)
        slot_targets = {s.index: list(s.targets) for s in pair.slots(d)}
        all_targets = [int(t) for t in torch.nonzero(matrix.sum(dim=1) > 0).flatten()]
        source_acts = plain[source_run(d)][1]
        per_position: dict[tuple[str, str, int], Tensor] = {}
        for component, layer in {(j.component, j.layer) for j in jobs}:
            delta = mapped_source(matrix, source_acts, component, layer) - mapped_source(
                torch.eye(matrix.shape[0]), target_acts, component, layer
            )
            delta = delta * mapped_mask.view(-1, *([1] * (delta.ndim - 1))).to(delta.dtype)
            grad_name = source_hooks(component, layer)[-1]  # resid_mid: the attn_out gradient
            for m in metric_list:
                per_position[(m.name, component, layer)] = (
                    (grads[m.name][grad_name] * delta).sum(dim=-1).cpu()
                )
        target_base = clean if target == "clean" else corrupted
        results: dict[PatchJob, dict[str, float]] = {}
        for job in jobs:
            results[job] = {}
            for m in metric_list:
                last = m.max_layer()
                if (
                    last is not None and job.layer > last
                ):  # fires after the read-out (resid_pre l+1 IS resid_post l)
                    results[job][m.name] = target_base[m.name]
                    continue
                effect = per_position[(m.name, job.component, job.layer)]
                positions = slot_targets[job.slot] if job.slot >= 0 else all_targets
                picked = effect[positions]
                if job.head >= 0:
                    picked = picked[:, job.head]
                results[job][m.name] = target_base[m.name] + float(picked.sum())
        frames.append(
            result_frame(pair, d, jobs, results, target_base, clean, corrupted, method="attribution")
        )
    return SweepResult(frame=pd.concat(frames, ignore_index=True), baselines=baselines)
