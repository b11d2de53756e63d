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

import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from slm_transformerlens.patching.alignment import Direction, PatchingError, PatchPair, source_run, target_run
from slm_transformerlens.patching.components import (
    HEAD_COMPONENTS,
    check_components,
    patch_hook_name,
    source_hooks,
)
from slm_transformerlens.patching.metrics import PatchMetric

__all__ = [
    "PatchJob",
    "SweepResult",
    "activation_patch_sweep",
    "mapped_source",
    "plan_jobs",
    "result_frame",
    "run_with_captures",
]

Hook = tuple[str, Callable[..., Any]]


@dataclass(frozen=True)
class PatchJob:
    """One patch: a component at a layer (and head) at one slot (``slot == -1``: every aligned position)."""

    component: str
    layer: int
    head: int
    slot: int


@dataclass
class SweepResult:
    """The tidy result of a sweep.

    Attributes:
        frame: one row per (direction, component, layer, head, slot, metric): columns ``direction,
            component, layer, head, slot, position, source_position, clean_position, corrupted_position,
            n_positions, token, source_token, word, word_index, modality, role, relative, metric, value,
            normalized, pruned, method``. ``head`` is -1 for non-head components; ``slot`` and the
            positions are -1 for all-position head patches. ``normalized`` is
            ``(value - corrupted) / (clean - corrupted)``: 0 = the corrupted run, 1 = the clean run.
        baselines: the unpatched metric values, one row per (metric, run).
    """

    frame: pd.DataFrame
    baselines: pd.DataFrame

    def grid(
        self,
        metric: str,
        component: str,
        *,
        direction: Direction = "denoise",
        value: Literal["value", "normalized"] = "value",
    ) -> Float[Tensor, "layer ..."]:
        """The results of one metric and component as a tensor.

        Shapes: ``[layer, slot]`` (residual, attention and MLP components), ``[layer, slot, head]``
        (``head_out``), ``[layer, head]`` (``head_out_all_pos``), with the layers and slots the sweep ran
        (missing cells are NaN). With an equal-length pair and identical alignment, slots are positions,
        so this matches TransformerLens' ``get_act_patch_*`` outputs.
        """
        rows = self.frame[
            (self.frame["metric"] == metric)
            & (self.frame["component"] == component)
            & (self.frame["direction"] == direction)
        ]
        if rows.empty:
            raise PatchingError(
                f"no results for metric={metric!r}, component={component!r}, direction={direction!r}"
            )
        layers = sorted(rows["layer"].unique())
        axes = [layers]
        keys = ["layer"]
        if component != "head_out_all_pos":
            axes.append(sorted(rows["slot"].unique()))
            keys.append("slot")
        if component in HEAD_COMPONENTS:
            axes.append(sorted(rows["head"].unique()))
            keys.append("head")
        out = torch.full(tuple(len(a) for a in axes), math.nan)
        lookups = [{v: i for i, v in enumerate(a)} for a in axes]
        for record in rows[[*keys, value]].itertuples(index=False):
            index = tuple(lookup[getattr(record, key)] for lookup, key in zip(lookups, keys, strict=True))
            out[index] = float(getattr(record, value))
        return out


# ------------------------------------------------------------------------------------------ planning
def plan_jobs(
    pair: PatchPair,
    direction: Direction,
    components: Sequence[str],
    layers: Sequence[int],
    n_heads: int,
    heads: Sequence[int] | None = None,
    slots: Sequence[int] | None = None,
    all_positions: bool = False,
) -> list[PatchJob]:
    """Every patch of a sweep, in (component, layer, slot, head) order.

    With ``all_positions`` every job patches all aligned positions at once (``slot == -1``).
    """
    all_slots = [s.index for s in pair.slots(direction)]
    chosen = all_slots if slots is None else [s for s in slots if s in set(all_slots)]
    head_list = list(range(n_heads)) if heads is None else list(heads)
    jobs: list[PatchJob] = []
    for component in components:
        for layer in layers:
            if all_positions and component not in ("head_out", "head_out_all_pos"):
                jobs.append(PatchJob(component, layer, -1, -1))
            elif component == "head_out_all_pos" or (all_positions and component == "head_out"):
                jobs.extend(PatchJob(component, layer, h, -1) for h in head_list)
            elif component == "head_out":
                jobs.extend(PatchJob(component, layer, h, s) for s in chosen for h in head_list)
            else:
                jobs.extend(PatchJob(component, layer, -1, s) for s in chosen)
    return jobs


def _check_model(model: Any) -> None:
    if getattr(model, "training", False):
        raise PatchingError(
            "activation patching needs the model in eval mode (dropout off): call model.eval()"
        )


def _check_metrics(metrics: PatchMetric | Iterable[PatchMetric]) -> list[PatchMetric]:
    items = [metrics] if isinstance(metrics, PatchMetric) else list(metrics)
    if not items:
        raise PatchingError("pass at least one metric (TokenLogProb, LogitDiff, LensMetric...)")
    for m in items:
        if not isinstance(m, PatchMetric):
            raise PatchingError(f"metrics must be PatchMetric objects, got {type(m).__name__}")
    names = [m.name for m in items]
    if len(set(names)) != len(names):
        raise PatchingError(f"metric names must be unique, got {names}; pass name=... to tell them apart")
    return items


def _check_layers(model: Any, layers: Sequence[int] | None) -> list[int]:
    n_layers = int(model.cfg.n_layers)
    chosen = list(range(n_layers)) if layers is None else [int(layer) for layer in layers]
    bad = [layer for layer in chosen if not 0 <= layer < n_layers]
    if bad:
        raise PatchingError(f"layers {bad} out of range: the model has {n_layers} layers (0..{n_layers - 1})")
    return chosen


# ------------------------------------------------------------------------------------------ running
def run_with_captures(
    model: Any,
    tokens: Int[Tensor, "batch pos"],
    names: Iterable[str],
    *,
    fwd_hooks: Sequence[Hook] = (),
    stop_at_layer: int | None = None,
    keep_grad: bool = False,
) -> tuple[Tensor | None, dict[str, Tensor]]:
    """One forward with ``fwd_hooks`` (run first) and capture hooks on ``names`` (run after them).

    Returns the logits (``None`` when stopped early) and the captured activations. With ``keep_grad``
    the captured tensors stay in the autograd graph (for attribution patching).
    """
    captured: dict[str, Tensor] = {}

    def capture(act: Tensor, hook: Any, *, key: str) -> Tensor | None:
        if not keep_grad:
            captured[key] = act.detach()
            return None
        # Returned, so that the captured tensor itself flows on: some hook points (hook_z) show a
        # reshaped VIEW of the tensor the model uses, and a view that is not returned gets no gradient.
        captured[key] = act
        return act

    hooks = list(fwd_hooks) + [(n, _partial(capture, key=n)) for n in dict.fromkeys(names)]
    with model.hooks(fwd_hooks=hooks):
        if stop_at_layer is not None:
            model(tokens, stop_at_layer=stop_at_layer)
            return None, captured
        logits = model(tokens, return_type="logits")
    return logits, captured


def _partial(fn: Callable[..., Any], **kwargs: Any) -> Callable[..., Any]:
    def hook(act: Tensor, hook: Any) -> Any:
        return fn(act, hook, **kwargs)

    return hook


def _evaluate(
    metrics: Sequence[PatchMetric], logits: Tensor | None, captured: dict[str, Tensor], run: str
) -> dict[str, Tensor]:
    return {m.name: m(logits, captured, run).detach().float().cpu() for m in metrics}  # type: ignore[arg-type]


def mapped_source(
    matrix: Float[Tensor, "pos_target pos_source"], captured: dict[str, Tensor], component: str, layer: int
) -> Tensor:
    """Source activations (batch row 0 of ``captured``) mapped onto target positions: ``[pos_target, ...]``."""
    names = source_hooks(component, layer)
    source = captured[names[0]][0] + (captured[names[1]][0] if len(names) == 2 else 0)
    return torch.einsum("ts,s...->t...", matrix.to(device=source.device, dtype=source.dtype), source)


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
    model: Any, length: int, needs_logits: bool, memory_mb: float, max_batch: int | None
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
    model: Any,
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
    _check_model(model)
    metric_list = _check_metrics(metrics)
    names = check_components(components)
    layer_list = _check_layers(model, layers)
    directions: list[Direction] = ["denoise", "noise"] if direction == "both" else [direction]  # type: ignore[list-item]
    device = model.cfg.device
    n_heads = int(model.cfg.n_heads)
    read_hooks = [h for m in metric_list for h in m.hooks()]
    stop_layer = None
    if not any(m.needs_logits for m in metric_list):
        stop_layer = max(int(m.max_layer() or 0) for m in metric_list) + 1
        stop_layer = None if stop_layer >= int(model.cfg.n_layers) else stop_layer
    with torch.no_grad():
        source_names = sorted({h for c in names for layer in layer_list for h in source_hooks(c, layer)})
        runs: dict[str, tuple[dict[str, Tensor], dict[str, Tensor]]] = {}
        for run in ("clean", "corrupted"):
            logits, captured = run_with_captures(
                model, pair.tokens(run)[None].to(device), [*source_names, *read_hooks]
            )
            runs[run] = (captured, _evaluate(metric_list, logits, captured, run))
        baselines = pd.DataFrame(
            [
                {"metric": m.name, "run": run, "value": float(runs[run][1][m.name][0])}
                for m in metric_list
                for run in runs
            ]
        )
        frames = []
        for d in directions:
            frames.append(
                _sweep_direction(
                    model,
                    pair,
                    d,
                    metric_list,
                    names,
                    layer_list,
                    heads,
                    slots,
                    all_positions,
                    runs,
                    n_heads,
                    read_hooks,
                    stop_layer,
                    memory_mb,
                    max_batch,
                    causal_pruning,
                    share_prefix,
                    progress,
                )
            )
    return SweepResult(frame=pd.concat(frames, ignore_index=True), baselines=baselines)


def _sweep_direction(
    model: Any,
    pair: PatchPair,
    direction: Direction,
    metrics: list[PatchMetric],
    components: tuple[str, ...],
    layers: list[int],
    heads: Sequence[int] | None,
    slots: Sequence[int] | None,
    all_positions: bool,
    runs: dict[str, tuple[dict[str, Tensor], dict[str, Tensor]]],
    n_heads: int,
    read_hooks: list[str],
    stop_layer: int | None,
    memory_mb: float,
    max_batch: int | None,
    causal_pruning: bool,
    share_prefix: bool,
    progress: bool,
) -> pd.DataFrame:
    target, source = target_run(direction), source_run(direction)
    device = model.cfg.device
    tokens = pair.tokens(target)
    length = len(tokens)
    read = [m.positions(target) for m in metrics]
    if causal_pruning and all(r is not None for r in read):
        length = max(max(r) for r in read if r) + 1  # type: ignore[arg-type]
    slot_list = pair.slots(direction)
    slot_targets = {s.index: s.targets for s in slot_list}
    matrix = pair.position_map(direction)[:length]
    all_targets = tuple(int(t) for t in torch.nonzero(matrix.sum(dim=1) > 0).flatten())
    jobs = plan_jobs(pair, direction, components, layers, n_heads, heads, slots, all_positions)
    max_read_layer = None if stop_layer is None else stop_layer - 1

    def runnable(job: PatchJob) -> bool:
        if max_read_layer is not None and job.layer > max_read_layer:
            return False
        return job.slot < 0 or min(slot_targets[job.slot]) < length

    todo = sorted((j for j in jobs if runnable(j)), key=lambda j: j.layer)  # chunks share their lower layers
    read_layers = [int(m.group(1)) for h in read_hooks if (m := re.match(r"blocks\.(\d+)\.", h))]
    first_read = min(read_layers) if read_layers else None
    source_captured = runs[source][0]
    mapped = {
        (c, layer): mapped_source(matrix, source_captured, c, layer)
        for c, layer in {(j.component, j.layer) for j in todo}
    }
    per_chunk = _rows_per_chunk(
        model, length, stop_layer is None and any(m.needs_logits for m in metrics), memory_mb, max_batch
    )
    results: dict[PatchJob, dict[str, float]] = {}
    batch_tokens = tokens[:length].to(device)
    chunks = [todo[i : i + per_chunk] for i in range(0, len(todo), per_chunk)]
    for chunk in tqdm(chunks, desc=f"patching ({direction})", disable=not progress or len(chunks) < 2):
        hooks, captures = _patch_hooks(chunk, slot_targets, all_targets, mapped, device)
        start = min(j.layer for j in chunk)
        if first_read is not None:
            start = min(start, first_read)
        inputs = batch_tokens[None].expand(len(chunk), -1)
        if share_prefix and start > 0 and len(chunk) > 1:
            inputs = batch_tokens[None]
            hooks = [(f"blocks.{start}.hook_resid_pre", _expander(len(chunk))), *hooks]
        logits, captured = run_with_captures(
            model,
            inputs,
            [*captures, *read_hooks],
            fwd_hooks=hooks,
            stop_at_layer=stop_layer,
        )
        values = _evaluate(metrics, logits, captured, target)
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


def result_frame(
    pair: PatchPair,
    direction: Direction,
    jobs: Sequence[PatchJob],
    results: dict[PatchJob, dict[str, float]],
    unpatched: dict[str, float],
    clean: dict[str, float],
    corrupted: dict[str, float],
    *,
    method: str,
) -> pd.DataFrame:
    """The tidy table of a sweep (jobs missing from ``results`` take the ``unpatched`` value, ``pruned``)."""
    slots = pair.slots_frame(direction).set_index("slot")
    rows = []
    for job in jobs:
        if job.slot >= 0:
            info = slots.loc[job.slot]
            where = {
                "slot": job.slot,
                **{
                    k: int(info[k])
                    for k in (
                        "position",
                        "source_position",
                        "clean_position",
                        "corrupted_position",
                        "n_positions",
                    )
                },
                **{
                    k: str(info[k]) for k in ("token", "source_token", "word", "modality", "role", "relative")
                },
                "word_index": int(info["word_index"]),
            }
        else:
            where = {
                "slot": -1,
                "position": -1,
                "source_position": -1,
                "clean_position": -1,
                "corrupted_position": -1,
                "n_positions": -1,
                "token": "",
                "source_token": "",
                "word": "",
                "modality": "",
                "role": "all",
                "relative": "all",
                "word_index": -1,
            }
        values = results.get(job)
        for name, base in unpatched.items():
            value = base if values is None else values[name]
            scale = clean[name] - corrupted[name]
            rows.append(
                {
                    "direction": direction,
                    "component": job.component,
                    "layer": job.layer,
                    "head": job.head,
                    **where,
                    "metric": name,
                    "value": value,
                    "normalized": (value - corrupted[name]) / scale if scale != 0 else math.nan,
                    "pruned": values is None,
                    "method": method,
                }
            )
    return pd.DataFrame(rows)
