"""The specification of a patching sweep and the pieces that activation and attribution patching share.

:class:`SweepSpec` holds what a sweep covers (metrics, components, directions, layers, heads, slots),
validated once against the model; both :func:`~slm_transformerlens.patching.activation_patch_sweep` and
:func:`~slm_transformerlens.patching.attribution_patch_sweep` build one and plan their jobs from it, run the
unpatched clean / corrupted forwards with :func:`run_with_captures`, and write the same tidy table with
:func:`result_frame`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from slm_transformerlens.patching.alignment import Direction, PatchingError, PatchPair
from slm_transformerlens.patching.components import HEAD_COMPONENTS, check_components, source_hooks
from slm_transformerlens.patching.metrics import PatchMetric
from slm_transformerlens.protocols import SpeechLM

__all__ = [
    "Hook",
    "PatchJob",
    "SweepResult",
    "SweepSpec",
    "baselines_frame",
    "evaluate_metrics",
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


@dataclass(frozen=True)
class SweepSpec:
    """What a patching sweep covers, validated once (see :meth:`build`).

    Attributes:
        metrics: the metrics evaluated on every run (unique names).
        components: the patched components (:data:`~slm_transformerlens.patching.COMPONENTS`).
        directions: ``("denoise",)``, ``("noise",)`` or both.
        layers: block indices swept.
        n_heads: the model's head count (for head components).
        heads: the heads swept (``None``: all).
        slots: the aligned slots swept (``None``: all).
        all_positions: one patch per layer (and head) over every aligned position.
    """

    metrics: tuple[PatchMetric, ...]
    components: tuple[str, ...]
    directions: tuple[Direction, ...]
    layers: tuple[int, ...]
    n_heads: int
    heads: tuple[int, ...] | None = None
    slots: tuple[int, ...] | None = None
    all_positions: bool = False

    @classmethod
    def build(
        cls,
        model: SpeechLM,
        metrics: PatchMetric | Iterable[PatchMetric],
        *,
        components: str | Sequence[str] = ("resid_pre",),
        direction: Direction | Literal["both"] = "denoise",
        layers: Sequence[int] | None = None,
        heads: Sequence[int] | None = None,
        slots: Sequence[int] | None = None,
        all_positions: bool = False,
    ) -> SweepSpec:
        """Validate a sweep's arguments against ``model`` (the arguments of both sweep functions).

        Raises:
            PatchingError: model in training mode, no or duplicate metrics, unknown component, a layer out
                of range, an unknown direction.
        """
        _check_model(model)
        if direction not in ("denoise", "noise", "both"):
            raise PatchingError(
                f"direction must be 'denoise' (clean into corrupted), 'noise' or 'both', got {direction!r}"
            )
        directions: tuple[Direction, ...] = ("denoise", "noise") if direction == "both" else (direction,)
        return cls(
            metrics=tuple(_check_metrics(metrics)),
            components=check_components(components),
            directions=directions,
            layers=tuple(_check_layers(model, layers)),
            n_heads=int(model.cfg.n_heads),
            heads=None if heads is None else tuple(int(h) for h in heads),
            slots=None if slots is None else tuple(int(s) for s in slots),
            all_positions=all_positions,
        )

    @property
    def read_hooks(self) -> list[str]:
        """The hook points the metrics read."""
        return [h for m in self.metrics for h in m.hooks()]

    @property
    def source_hooks(self) -> list[str]:
        """The hook points whose source-run activations the patches need (sorted, unique)."""
        return sorted({h for c in self.components for layer in self.layers for h in source_hooks(c, layer)})

    def jobs(self, pair: PatchPair, direction: Direction) -> list[PatchJob]:
        """Every patch of one direction, in (component, layer, slot, head) order."""
        return plan_jobs(
            pair,
            direction,
            self.components,
            self.layers,
            self.n_heads,
            self.heads,
            self.slots,
            self.all_positions,
        )


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


def _check_model(model: SpeechLM) -> None:
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


def _check_layers(model: SpeechLM, layers: Sequence[int] | None) -> list[int]:
    n_layers = int(model.cfg.n_layers)
    chosen = list(range(n_layers)) if layers is None else [int(layer) for layer in layers]
    bad = [layer for layer in chosen if not 0 <= layer < n_layers]
    if bad:
        raise PatchingError(f"layers {bad} out of range: the model has {n_layers} layers (0..{n_layers - 1})")
    return chosen


# ------------------------------------------------------------------------------------------ running
def run_with_captures(
    model: SpeechLM,
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


def evaluate_metrics(
    metrics: Sequence[PatchMetric], logits: Tensor | None, captured: dict[str, Tensor], run: str
) -> dict[str, Tensor]:
    """Every metric on one run (``"clean"`` / ``"corrupted"``): ``{name: [batch] float32 on CPU}``."""
    return {m.name: m(logits, captured, run).detach().float().cpu() for m in metrics}  # type: ignore[arg-type]


def baselines_frame(metrics: Sequence[PatchMetric], values: dict[str, dict[str, Tensor]]) -> pd.DataFrame:
    """The unpatched values as a table: one row per (metric, run), from ``{run: evaluate_metrics(...)}``."""
    return pd.DataFrame(
        [
            {"metric": m.name, "run": run, "value": float(values[run][m.name][0])}
            for m in metrics
            for run in values
        ]
    )


def mapped_source(
    matrix: Float[Tensor, "pos_target pos_source"], captured: dict[str, Tensor], component: str, layer: int
) -> Tensor:
    """Source activations (batch row 0 of ``captured``) mapped onto target positions: ``[pos_target, ...]``."""
    names = source_hooks(component, layer)
    source = captured[names[0]][0] + (captured[names[1]][0] if len(names) == 2 else 0)
    return torch.einsum("ts,s...->t...", matrix.to(device=source.device, dtype=source.dtype), source)


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
