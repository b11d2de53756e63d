"""Which residual vectors to read: word-span positions, and capturing them in one forward pass.

A :class:`ReadoutPlan` lists read-out rows (one per position, word or word mean) and, for each row,
its member token positions; :func:`capture_residuals` runs the model ONCE with hooks that keep only
those rows (reduced at once to ``[rows, d_model]`` float32 per hooked site), then stops the forward
pass after the last needed hook, so neither a full cache nor the final unembedding is built.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from slm_transformerlens._deprecation import deprecated_attributes
from slm_transformerlens.hooks import hook_name
from slm_transformerlens.lens.base import LensError, check_site
from slm_transformerlens.protocols import SpeechLM
from slm_transformerlens.spans import WordSpans

__all__ = [
    "MODALITIES",
    "POOLED_MODES",
    "POSITION_MODES",
    "PositionMode",
    "ReadoutPlan",
    "capture_residuals",
    "plan_readouts",
]

PositionMode = Literal["all", "last", "first", "every", "mean", "max", "any"]
#: ``all`` every (non-padding) position; ``last`` / ``first`` unit of each word span; ``every`` unit of
#: each span (one row per unit); ``mean`` the mean residual over each span (one row per word); ``max`` and
#: ``any`` pool the read-outs of every position of the span into one row per word (see
#: :data:`POOLED_MODES` and :func:`~slm_transformerlens.lens.readout.read_vectors`).
POSITION_MODES: tuple[str, ...] = ("all", "last", "first", "every", "mean", "max", "any")
#: Modes whose rows pool per-position READ-OUTS (logits or ranks), not residual vectors:
#: ``max``: ``logits_w[v] = max_{p in span(w)} logits_p[v]``, then ranks / top-k / softmax of that vector;
#: ``any``: ``rank_w = min_{p in span(w)} rank_p`` (a hit when the target is in the top-k at ANY position),
#: ``prob_w = max_p prob_p``; its other columns are those of the span's last position.
POOLED_MODES: tuple[str, ...] = ("max", "any")
#: ``SPAN_COLUMNS`` moved to :data:`slm_transformerlens.spans.REQUIRED_SPAN_COLUMNS` (deprecated here).
__getattr__ = deprecated_attributes(
    __name__, {"SPAN_COLUMNS": "slm_transformerlens.spans:REQUIRED_SPAN_COLUMNS"}
)


@dataclass
class ReadoutPlan:
    """Read-out rows and their member positions.

    Attributes:
        rows: one row per read-out vector: ``batch`` (row of the token tensor), ``position`` (the
            token position; for ``mean`` the span's last position), ``word_index`` / ``word`` /
            ``modality`` (``<NA>`` outside word spans), ``n_members`` (positions averaged).
        member_batch, member_pos, member_row: for every member position, its batch row, position
            and the read-out row it belongs to (non-decreasing: a row's members are contiguous).
        mode: the position mode the plan was built with.
    """

    rows: pd.DataFrame
    member_batch: Int[Tensor, " members"]
    member_pos: Int[Tensor, " members"]
    member_row: Int[Tensor, " members"]
    mode: str

    @property
    def n_rows(self) -> int:
        """Number of read-out vectors."""
        return len(self.rows)

    @property
    def max_position(self) -> int:
        """The largest member position (-1 if empty)."""
        return int(self.member_pos.max()) if self.member_pos.numel() else -1


#: The modalities of the word spans ``model.encode`` writes.
MODALITIES: tuple[str, ...] = ("speech", "text")


def _check_modalities(modalities: Sequence[str] | str, spans: pd.DataFrame) -> list[str]:
    """The requested modalities as a list; an empty or unknown one raises with the valid choices."""
    chosen = [modalities] if isinstance(modalities, str) else list(modalities)
    known = sorted(set(MODALITIES) | set(spans["modality"].dropna().astype(str)))
    unknown = [m for m in chosen if m not in known]
    if not chosen or unknown:
        raise LensError(
            f"modalities={list(chosen)!r}: {'unknown ' + repr(unknown) if unknown else 'empty'}; "
            f"choose from {known}, or None for every word"
        )
    return chosen


def plan_readouts(
    n_positions: int | Int[Tensor, "batch pos"],
    word_spans: WordSpans | pd.DataFrame | None = None,
    *,
    mode: str = "last",
    modalities: Sequence[str] | None = None,
    attention_mask: Int[Tensor, "batch pos"] | None = None,
) -> ReadoutPlan:
    """Build the read-out rows for a batch.

    Args:
        n_positions: the token tensor ``[batch, pos]`` (or just its length for one utterance).
        word_spans: the word spans (:class:`~slm_transformerlens.spans.WordSpans` or its table;
            ``utterance`` is the batch row). Required for every mode but ``all``.
        mode: one of :data:`POSITION_MODES`.
        modalities: keep only spans of these modalities (e.g. ``("speech",)``); ``None`` keeps all.
        attention_mask: ``[batch, pos]``; positions with 0 are skipped in ``all`` mode.

    Raises:
        LensError: an unknown mode or modality, a missing span table, or spans outside the sequence.
    """
    if mode not in POSITION_MODES:
        raise LensError(f"unknown position mode {mode!r}; choose one of {list(POSITION_MODES)}")
    if isinstance(n_positions, Tensor):
        tokens = n_positions if n_positions.ndim == 2 else n_positions.reshape(1, -1)
        batch, length = int(tokens.shape[0]), int(tokens.shape[1])
    else:
        batch, length = 1, int(n_positions)
    spans = None
    if word_spans is not None:
        selected = WordSpans.coerce(word_spans, error=LensError)
        if modalities is not None:
            selected = selected.of_modality(*_check_modalities(modalities, selected.frame))
        selected = selected.with_tokens().in_token_order()
        selected.check_within(batch, length, error=LensError)
        spans = selected.frame
    elif mode != "all":
        raise LensError(
            f"position mode {mode!r} needs a word-span table (word_spans=...); only 'all' works without one"
        )

    mb: list[np.ndarray] = []
    mp: list[np.ndarray] = []
    mr: list[np.ndarray] = []
    if mode == "all":
        if attention_mask is not None:
            mask = attention_mask.reshape(batch, length).bool().cpu().numpy()
        else:
            mask = np.ones((batch, length), dtype=bool)
        b_idx, p_idx = np.nonzero(mask)
        rows = pd.DataFrame({"batch": b_idx.astype(np.int64), "position": p_idx.astype(np.int64)})
        rows["word_index"] = pd.array([pd.NA] * len(rows), dtype="Int64")
        rows["word"] = pd.array([pd.NA] * len(rows), dtype="string")
        rows["modality"] = pd.array([pd.NA] * len(rows), dtype="string")
        if spans is not None and len(spans):
            lookup = {}
            for span in spans.itertuples(index=False):
                for p in range(int(span.start), int(span.stop)):
                    lookup[(int(span.utterance), p)] = span
            hit = [lookup.get((int(b), int(p))) for b, p in zip(b_idx, p_idx, strict=True)]
            rows["word_index"] = pd.array(
                [None if s is None else int(s.word_index) for s in hit], dtype="Int64"
            )
            rows["word"] = pd.array([None if s is None else str(s.word) for s in hit], dtype="string")
            rows["modality"] = pd.array([None if s is None else str(s.modality) for s in hit], dtype="string")
        rows["n_members"] = 1
        mb, mp, mr = [b_idx], [p_idx], [np.arange(len(rows))]
    else:
        assert spans is not None
        records = []
        row = 0
        for span in spans.itertuples(index=False):
            start, stop, b = int(span.start), int(span.stop), int(span.utterance)
            if mode == "every":
                members_list = [[p] for p in range(start, stop)]
            elif mode == "last":
                members_list = [[stop - 1]]
            elif mode == "first":
                members_list = [[start]]
            else:  # mean, max, any: every position of the span
                members_list = [list(range(start, stop))]
            for members in members_list:
                records.append(
                    (b, members[-1], int(span.word_index), str(span.word), str(span.modality), len(members))
                )
                mb.append(np.full(len(members), b))
                mp.append(np.asarray(members))
                mr.append(np.full(len(members), row))
                row += 1
        rows = pd.DataFrame.from_records(
            records, columns=["batch", "position", "word_index", "word", "modality", "n_members"]
        )
        rows = rows.astype({"batch": "int64", "position": "int64", "n_members": "int64"})
        rows["word_index"] = rows["word_index"].astype("Int64")
        rows["word"] = rows["word"].astype("string")
        rows["modality"] = rows["modality"].astype("string")

    def cat(parts: list[np.ndarray]) -> Tensor:
        return torch.as_tensor(np.concatenate(parts) if parts else np.zeros(0), dtype=torch.long)

    return ReadoutPlan(rows=rows, member_batch=cat(mb), member_pos=cat(mp), member_row=cat(mr), mode=mode)


class _StopForward(Exception):
    """Raised by the last capture hook: nothing after it is needed."""


def capture_residuals(
    model: SpeechLM,
    tokens: Int[Tensor, "batch pos"],
    plan: ReadoutPlan,
    layers: Sequence[int],
    sites: Sequence[str],
    *,
    attention_mask: Int[Tensor, "batch pos"] | None = None,
    stop_early: bool = True,
) -> dict[tuple[int, str], Float[Tensor, "rows d_model"]]:
    """Run the model once and keep, per ``(layer, site)``, only the plan's rows (float32).

    Hooks gather the member positions of the plan and average them per row right away, so memory
    grows with ``layers x rows x d_model``. For the pooled modes (:data:`POOLED_MODES`) the member vectors
    are kept unreduced (``[members, d_model]``; ``plan.member_row`` maps them to rows): the pooling is done
    on the read-outs. With ``stop_early`` the forward pass is cut after the last
    needed hook (the final norm and the full-sequence unembedding are never computed).

    Returns:
        ``{(layer, site): [rows, d_model] float32}`` (``[members, d_model]`` for a pooled plan).
    """
    sites = [check_site(s) for s in sites]
    n_rows = plan.n_rows
    device = tokens.device
    mb = plan.member_batch.to(device)
    mp = plan.member_pos.to(device)
    mr = plan.member_row.to(device)
    counts = (
        torch.bincount(plan.member_row, minlength=n_rows).clamp(min=1).to(device=device, dtype=torch.float32)
    )
    single = bool((counts == 1).all())
    pooled = plan.mode in POOLED_MODES
    wanted = [(int(layer), site) for layer in layers for site in sites]
    order = {"resid_pre": 0, "resid_mid": 1, "resid_post": 2}
    last_key = max(wanted, key=lambda key: (key[0], order[key[1]])) if wanted else None
    out: dict[tuple[int, str], Tensor] = {}

    index_on: dict[torch.device, tuple[Tensor, Tensor]] = {device: (mb, mp)}

    def make_hook(key: tuple[int, str]) -> Any:
        def hook(activation: Tensor, hook: Any) -> None:
            # on a model split over devices (device_map) the layer's activation is gathered where the
            # tokens are
            where = activation.device
            if where not in index_on:
                index_on[where] = (mb.to(where), mp.to(where))
            rows, cols = index_on[where]
            picked = activation.detach()[rows, cols].float().to(device)
            if pooled:
                vectors = picked
            elif single:
                vectors = torch.zeros(n_rows, picked.shape[-1], device=device, dtype=torch.float32)
                vectors[mr] = picked
            else:
                vectors = torch.zeros(n_rows, picked.shape[-1], device=device, dtype=torch.float32)
                vectors.index_add_(0, mr, picked)
                vectors = vectors / counts.unsqueeze(-1)
            out[key] = vectors
            if stop_early and key == last_key:
                raise _StopForward

        return hook

    hooks = [(hook_name(site, layer), make_hook((layer, site))) for layer, site in wanted]
    kwargs: dict[str, Any] = {"return_type": None}
    if attention_mask is not None and bool((attention_mask == 0).any()):
        kwargs["attention_mask"] = attention_mask.to(device)
    with torch.no_grad(), model.hooks(fwd_hooks=hooks), contextlib.suppress(_StopForward):
        model(tokens, **kwargs)
    missing = [key for key in wanted if key not in out]
    if missing:
        raise LensError(
            f"the forward pass never reached hooks {[hook_name(site, layer) for layer, site in missing[:3]]}"
        )
    return out
