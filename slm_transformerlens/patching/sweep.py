"""Batched activation-patching sweeps over layers x aligned positions (and heads), both directions.

One forward pass runs many patches: the target run's tokens are repeated along the batch dimension and
each batch row receives a different patch, through ONE hook per standard hook point that writes the
source values into its rows (``act[rows, positions] = values``). The list of patches is cut into chunks
that fit a memory budget. All patches are written at standard hook names (see
:mod:`slm_transformerlens.patching.components`), inside ``model.hooks(...)``, so hooks the user attached
beforehand keep running, in the source run, the baselines and the patched runs alike.

Two exact shortcuts (both follow from causal attention, both can be turned off): the target run is cut
after the last position any metric reads, and a patch whose positions all lie after that position is not
run (its value is the unpatched baseline, marked ``pruned`` in the result). When every metric reads only
the residual stream (lens metrics), the forward stops after the last layer read.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from slm_transformerlens.patching.alignment import Direction, PatchPair, source_run, target_run
from slm_transformerlens.patching.components import patch_hook_name
from slm_transformerlens.patching.metrics import PatchMetric
from slm_transformerlens.patching.spec import (
    Hook,
    PatchJob,
    SweepResult,
    SweepSpec,
    baselines_frame,
    evaluate_metrics,
    mapped_source,
    plan_jobs,
    result_frame,
    run_with_captures,
)
from slm_transformerlens.protocols import SpeechLM

__all__ = [
    "Batching",
    "PatchJob",
    "SweepResult",
    "activation_patch_sweep",
    "mapped_source",
    "plan_jobs",
    "result_frame",
    "run_with_captures",
]

#: Unpatched runs: ``{run: (captured activations, metric values)}``.
Runs = dict[str, tuple[dict[str, Tensor], dict[str, Tensor]]]


@dataclass(frozen=True)
class Batching:
    """How an activation sweep runs its patches (see :func:`activation_patch_sweep`)."""

    memory_mb: float = 1024.0
    max_batch: int | None = None
    causal_pruning: bool = True
    share_prefix: bool = True
    progress: bool = True


@dataclass
class _Entries:
    rows: list[int]
    positions: list[int]
    heads: list[int]
    values: list[Tensor]

    def tensors(self, device: Any) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
        rows = torch.tensor(self.rows, dtype=torch.long, device=device)
        positions = torch.tensor(self.positions, dtype=torch.long, device=device)
        heads = torch.tensor(self.heads, dtype=torch.long, device=device) if self.heads else None
        return rows, positions, heads, torch.stack(self.values)


def _patch_hooks(
    chunk: Sequence[PatchJob],
    slot_targets: dict[int, tuple[int, ...]],
    all_targets: tuple[int, ...],
    mapped: dict[tuple[str, int], Tensor],
    device: Any,
) -> tuple[list[Hook], list[str]]:
    """One hook per (hook point, kind) writing every row's patch; plus the hook names to capture."""
    plain: dict[str, _Entries] = defaultdict(lambda: _Entries([], [], [], []))
    mid: dict[str, _Entries] = defaultdict(lambda: _Entries([], [], [], []))
    for row, job in enumerate(chunk):
        values = mapped[(job.component, job.layer)]
        positions = all_targets if job.slot < 0 else slot_targets[job.slot]
        group = mid if job.component == "resid_mid" else plain
        entries = group[patch_hook_name(job.component, job.layer)]
        for p in positions:
            entries.rows.append(row)
            entries.positions.append(p)
            if job.head >= 0:
                entries.heads.append(job.head)
                entries.values.append(values[p, job.head])
            else:
                entries.values.append(values[p])
    hooks: list[Hook] = []
    captures: list[str] = []
    for name, entries in plain.items():
        rows, positions, heads, values = entries.tensors(device)

        def write(
            act: Tensor, hook: Any, rows=rows, positions=positions, heads=heads, values=values
        ) -> Tensor:
            act = act.clone()
            if heads is None:
                act[rows, positions] = values.to(act.dtype)
            else:
                act[rows, positions, heads] = values.to(act.dtype)
            return act

        hooks.append((name, write))
    pre_store: dict[str, Tensor] = {}
    for name, entries in mid.items():
        rows, positions, _, values = entries.tensors(device)
        pre_name = name.replace("hook_attn_out", "hook_resid_pre")
        captures.append(pre_name)

        def store(act: Tensor, hook: Any, key: str = pre_name) -> None:
            pre_store[key] = act

        def write_mid(
            act: Tensor, hook: Any, rows=rows, positions=positions, values=values, key=pre_name
        ) -> Tensor:
            act = act.clone()
            act[rows, positions] = (values - pre_store[key][rows, positions]).to(act.dtype)
            return act

        hooks.append((pre_name, store))
        hooks.append((name, write_mid))
    return hooks, captures


def _rows_per_chunk(
    model: SpeechLM, length: int, needs_logits: bool, memory_mb: float, max_batch: int | None
) -> int:
    cfg = model.cfg
    d_model = int(cfg.d_model)
    d_mlp = int(getattr(cfg, "d_mlp", None) or 4 * d_model)
    n_heads = int(cfg.n_heads)
    d_vocab = int(cfg.d_vocab) if needs_logits else 0
    per_row = 4 * length * (d_vocab + 16 * d_model + 4 * d_mlp + 3 * n_heads * length)
    rows = max(1, int(memory_mb * 2**20 // per_row))
    return min(rows, max_batch) if max_batch else rows


def activation_patch_sweep(
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
    memory_mb: float = 1024.0,
    max_batch: int | None = None,
    causal_pruning: bool = True,
    share_prefix: bool = True,
    progress: bool = True,
) -> SweepResult:
    """Patch every (component, layer[, head], aligned slot) and measure the metrics, in batched forwards.

    Args:
        model: a ``HookedSLM`` / ``TransformerBridge`` in eval mode.
        pair: the clean / corrupted pair and its alignment (:class:`PatchPair`).
        metrics: one or more :class:`PatchMetric` (evaluated together on every patched forward).
        components: any of ``resid_pre, resid_mid, resid_post, attn_out, mlp_out`` (by layer and slot),
            ``head_out`` (head output ``attn.hook_z`` by layer, slot and head) and ``head_out_all_pos``
            (by layer and head, every aligned position at once).
        direction: ``"denoise"`` (clean activations into the corrupted run), ``"noise"`` (corrupted into
            clean) or ``"both"``.
        layers: the layers to sweep (default all).
        heads: the heads to sweep for head components (default all).
        slots: the aligned slots to sweep (default all; see ``pair.slots_frame(direction)``).
        all_positions: patch every aligned position at once (one patch per layer [and head]).
        memory_mb: memory budget of one batched forward; the patch list is chunked to fit it.
        max_batch: an upper bound on patches per forward.
        causal_pruning: cut the target run after the last read position and skip patches after it
            (exact by causality); turn off for metrics that do not declare their positions.
        share_prefix: patches are grouped by layer, and the blocks below a chunk's first patched (or read)
            layer run ONCE for the whole chunk (batch 1, expanded at that layer's ``hook_resid_pre``); exact,
            since nothing differs between the rows before it.
        progress: show a progress bar.

    Returns:
        :class:`SweepResult` (tidy ``frame`` and unpatched ``baselines``).

    Raises:
        PatchingError: model in training mode, unknown component, bad layers, duplicate metric names.
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
    batching = Batching(memory_mb, max_batch, causal_pruning, share_prefix, progress)
    device = model.cfg.device
    stop_layer = None
    if not any(m.needs_logits for m in spec.metrics):
        stop_layer = max(int(m.max_layer() or 0) for m in spec.metrics) + 1
        stop_layer = None if stop_layer >= int(model.cfg.n_layers) else stop_layer
    with torch.no_grad():
        runs: Runs = {}
        for run in ("clean", "corrupted"):
            logits, captured = run_with_captures(
                model, pair.tokens(run)[None].to(device), [*spec.source_hooks, *spec.read_hooks]
            )
            runs[run] = (captured, evaluate_metrics(spec.metrics, logits, captured, run))
        baselines = baselines_frame(spec.metrics, {run: values for run, (_, values) in runs.items()})
        frames = [_sweep_direction(model, pair, spec, d, runs, stop_layer, batching) for d in spec.directions]
    return SweepResult(frame=pd.concat(frames, ignore_index=True), baselines=baselines)


def _sweep_direction(
    model: SpeechLM,
    pair: PatchPair,
    spec: SweepSpec,
    direction: Direction,
    runs: Runs,
    stop_layer: int | None,
    batching: Batching,
) -> pd.DataFrame:
    metrics = spec.metrics
    target, source = target_run(direction), source_run(direction)
    device = model.cfg.device
    tokens = pair.tokens(target)
    length = len(tokens)
    read = [m.positions(target) for m in metrics]
    if batching.causal_pruning and all(r is not None for r in read):
        length = max(max(r) for r in read if r) + 1  # type: ignore[arg-type]
    slot_list = pair.slots(direction)
    slot_targets = {s.index: s.targets for s in slot_list}
    matrix = pair.position_map(direction)[:length]
    all_targets = tuple(int(t) for t in torch.nonzero(matrix.sum(dim=1) > 0).flatten())
    jobs = spec.jobs(pair, direction)
    max_read_layer = None if stop_layer is None else stop_layer - 1

    def runnable(job: PatchJob) -> bool:
        if max_read_layer is not None and job.layer > max_read_layer:
            return False
        return job.slot < 0 or min(slot_targets[job.slot]) < length

    todo = sorted((j for j in jobs if runnable(j)), key=lambda j: j.layer)  # chunks share their lower layers
    read_hooks = spec.read_hooks
    read_layers = [int(m.group(1)) for h in read_hooks if (m := re.match(r"blocks\.(\d+)\.", h))]
    first_read = min(read_layers) if read_layers else None
    source_captured = runs[source][0]
    mapped = {
        (c, layer): mapped_source(matrix, source_captured, c, layer)
        for c, layer in {(j.component, j.layer) for j in todo}
    }
    per_chunk = _rows_per_chunk(
        model,
        length,
        stop_layer is None and any(m.needs_logits for m in metrics),
        batching.memory_mb,
        batching.max_batch,
    )
    results: dict[PatchJob, dict[str, float]] = {}
    batch_tokens = tokens[:length].to(device)
    chunks = [todo[i : i + per_chunk] for i in range(0, len(todo), per_chunk)]
    bar = tqdm(chunks, desc=f"patching ({direction})", disable=not batching.progress or len(chunks) < 2)
    for chunk in bar:
        hooks, captures = _patch_hooks(chunk, slot_targets, all_targets, mapped, device)
        start = min(j.layer for j in chunk)
        if first_read is not None:
            start = min(start, first_read)
        inputs = batch_tokens[None].expand(len(chunk), -1)
        if batching.share_prefix and start > 0 and len(chunk) > 1:
            inputs = batch_tokens[None]
            hooks = [(f"blocks.{start}.hook_resid_pre", _expander(len(chunk))), *hooks]
        logits, captured = run_with_captures(
            model,
            inputs,
            [*captures, *read_hooks],
            fwd_hooks=hooks,
            stop_at_layer=stop_layer,
        )
        values = evaluate_metrics(metrics, logits, captured, target)
        for row, job in enumerate(chunk):
            results[job] = {name: float(v[row]) for name, v in values.items()}
    target_baseline = {name: float(v[0]) for name, v in runs[target][1].items()}
    clean = {name: float(v[0]) for name, v in runs["clean"][1].items()}
    corrupted = {name: float(v[0]) for name, v in runs["corrupted"][1].items()}
    return result_frame(
        pair, direction, jobs, results, target_baseline, clean, corrupted, method="activation"
    )


def _expander(n_rows: int) -> Callable[..., Tensor]:
    """A hook that turns the batch-1 residual stream into ``n_rows`` identical rows (a view, no copy)."""

    def expand(act: Tensor, hook: Any) -> Tensor:
        return act.expand(n_rows, *act.shape[1:])

    return expand
