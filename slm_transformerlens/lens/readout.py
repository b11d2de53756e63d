"""Streamed read-out reductions: from residual vectors to ranks, probabilities, top-k and masses.

:func:`read_vectors` takes ``[rows, d_model]`` residual vectors of one ``(layer, site)``, and for each
chunk of rows computes the float32 logits over the full vocabulary (one float32 product, or with
``readout_precision="fast"`` the same logits from exact split half-precision products, see
:mod:`~slm_transformerlens.lens.precision`), reduces them at once (per view: entropy, top-k, group
masses, target ranks and probabilities) and drops them. Nothing of size ``rows x d_vocab`` outlives a
chunk, so memory grows with ``layers x rows x k``; results stay on the device until the end, and the
non-finite check is read once per call, so a read-out synchronises with the host once.

Views restrict the softmax to a sub-vocabulary: ``full`` (everything), ``text``, ``speech`` (masks
from :class:`~slm_transformerlens.vocab.SpeechVocab`) or any boolean mask. Ranks are 0-based and count
the tokens of the view with a strictly larger logit (0 = arg-max). A target *set* (several ids, e.g.
case variants or prefix tokens) gets the best rank of its members and the SUM of their probabilities.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from numbers import Integral
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from slm_transformerlens.checks import check_finite_logits
from slm_transformerlens.errors import NonFiniteError
from slm_transformerlens.lens.base import Lens, LensError
from slm_transformerlens.lens.precision import reduced_float32_matmul
from slm_transformerlens.vocab import SpeechVocab

__all__ = [
    "CPU_CHUNK_ROWS",
    "MAX_CHUNK_ROWS",
    "MAX_SEGMENTS",
    "VIEWS",
    "TokenNamer",
    "ViewReadout",
    "check_readout_args",
    "default_chunk_size",
    "read_many",
    "read_vectors",
    "target_tensor",
    "vocab_views",
]

#: Built-in vocabulary views.
VIEWS: tuple[str, ...] = ("full", "text", "speech")


def vocab_views(
    vocab: SpeechVocab, views: Sequence[str] | Mapping[str, Bool[Tensor, " vocab"] | None]
) -> dict[str, Bool[Tensor, " vocab"] | None]:
    """Resolve view names to masks (``None`` = full vocabulary).

    ``views`` is a list of names (``"full"``, ``"text"``, ``"speech"`` or any group of ``vocab``) or a
    mapping ``name -> boolean mask`` for custom views.
    """
    if isinstance(views, Mapping):
        out = {}
        for name, mask in views.items():
            if mask is not None and (mask.dtype != torch.bool or mask.shape != (vocab.vocab_size,)):
                raise LensError(f"view {name!r}: a mask must be a bool tensor of shape [{vocab.vocab_size}]")
            out[str(name)] = mask
        return out
    out = {}
    for name in views:
        if name == "full":
            out[name] = None
        elif name in vocab.group_names:
            mask = vocab.group_mask(name)
            if not bool(mask.any()):
                raise LensError(f"view {name!r} is empty for this vocabulary")
            out[name] = mask
        else:
            raise LensError(
                f"unknown view {name!r}; use 'full' or a vocabulary group {list(vocab.group_names)}"
            )
    if not out:
        raise LensError("pass at least one view, e.g. views=('full', 'text')")
    return out


def target_tensor(
    target: int | Sequence[int] | Sequence[Sequence[int]] | Tensor, n_rows: int
) -> Int[Tensor, "rows m"]:
    """A target spec as a ``[rows, m]`` id tensor padded with -1.

    An int or a flat list is a target set shared by all rows; a list of lists (one per row) or a
    2-D tensor gives each row its own set (-1 = padding / no target).

    Raises:
        LensError: a shared target that is negative or empty, or per-row targets with the wrong row count.
    """
    if isinstance(target, Tensor):
        t = target.to(torch.long)
        if t.ndim <= 1:
            return _shared_target(t.reshape(1, -1), n_rows)
        if t.shape[0] != n_rows:
            raise LensError(f"a per-row target tensor needs {n_rows} rows, got shape {tuple(t.shape)}")
        return t
    if isinstance(target, int):
        return _shared_target(torch.full((1, 1), int(target), dtype=torch.long), n_rows)
    items = list(target)
    if items and not isinstance(items[0], int) and hasattr(items[0], "__len__"):
        if len(items) != n_rows:
            raise LensError(f"per-row targets need {n_rows} rows, got {len(items)}")
        width = max(1, max(len(row) for row in items))
        out = torch.full((n_rows, width), -1, dtype=torch.long)
        for i, row in enumerate(items):
            if len(row):
                out[i, : len(row)] = torch.as_tensor(list(row), dtype=torch.long)
        return out
    return _shared_target(torch.as_tensor(items, dtype=torch.long).reshape(1, -1), n_rows)


def _shared_target(ids: Int[Tensor, "1 m"], n_rows: int) -> Int[Tensor, "rows m"]:
    if ids.numel() == 0 or int(ids.min()) < 0:
        raise LensError(
            f"target ids {ids.flatten().tolist()} are not token ids: a target shared by all rows needs ids "
            ">= 0 (-1 pads only per-row target lists)"
        )
    return ids.expand(n_rows, -1)


def check_readout_args(
    views: Mapping[str, Bool[Tensor, " vocab"] | None],
    targets: Mapping[str, Int[Tensor, "rows m"]],
    *,
    top_k: int,
    d_vocab: int,
) -> None:
    """Validate ``top_k`` against every view's size and target ids against the vocabulary.

    Raises:
        LensError: ``top_k < 1`` or larger than the smallest view, or a target id outside ``[-1, d_vocab)``.
    """
    sizes = {name: d_vocab if mask is None else int(mask.sum()) for name, mask in views.items()}
    if not sizes:
        raise LensError("pass at least one view, e.g. views=('full', 'text')")
    smallest = min(sizes, key=sizes.__getitem__)
    if isinstance(top_k, bool) or not isinstance(top_k, Integral) or not 1 <= top_k <= sizes[smallest]:
        raise LensError(
            f"top_k={top_k!r} is not valid for these views: it must be an int from 1 to {sizes[smallest]} "
            f"(view {smallest!r} has {sizes[smallest]} tokens; view sizes {sizes}). Lower top_k or drop the view."
        )
    for name, ids in targets.items():
        if ids.numel() and (int(ids.min()) < -1 or int(ids.max()) >= d_vocab):
            bad = ids[(ids < -1) | (ids >= d_vocab)].flatten()[:3].tolist()
            raise LensError(
                f"target {name!r} holds ids {bad} outside the vocabulary: valid ids are 0..{d_vocab - 1} "
                "(-1 pads per-row target lists)"
            )


@dataclass
class ViewReadout:
    """Reductions of one view for a set of rows.

    Attributes:
        entropy: [rows] entropy (nats) of the view's softmax.
        top_ids / top_probs: [rows, k] the view's top-k ids and their probabilities.
        masses: [rows, groups] probability mass per vocabulary group (order of ``group_names``).
        ranks: per target name, [rows] best rank of the set in the view (-1 = no target in the view).
        probs: per target name, [rows] summed probability of the set (NaN = no target in the view).
        span_top_ids: ``pool="any"`` only (else ``None``): per row, the ``[members, k]`` top-k ids of
            each position of its span, in position order (what a shuffled-target control re-reads).
    """

    entropy: Float[Tensor, " rows"]
    top_ids: Int[Tensor, "rows k"]
    top_probs: Float[Tensor, "rows k"]
    masses: Float[Tensor, "rows groups"]
    ranks: dict[str, Int[Tensor, " rows"]]
    probs: dict[str, Float[Tensor, " rows"]]
    span_top_ids: list[Tensor] | None = None


def read_many(
    lens: Lens,
    vectors: Mapping[tuple[int, str], Float[Tensor, "members d_model"]],
    *,
    views: Mapping[str, Bool[Tensor, " vocab"] | None],
    group_labels: Int[Tensor, " vocab"],
    n_groups: int,
    top_k: int = 10,
    targets: Mapping[str, Int[Tensor, "rows m"]] | None = None,
    chunk_size: int | None = None,
    describe_row: Callable[[int], str] | None = None,
    groups: Int[Tensor, " members"] | None = None,
    pool: str | None = None,
    readout_precision: str | None = None,
) -> dict[tuple[int, str], dict[str, ViewReadout]]:
    """:func:`read_vectors` for many ``(layer, site)`` at once, sharing the unembedding matmuls.

    Each key's vectors are transformed and normalised (cheap, per layer), then the rows of ALL keys are
    unembedded together in chunks of ``chunk_size`` (larger matmuls run faster) and reduced at once.
    Every key must have the same rows (``targets`` apply to each of them). ``describe_row(i)`` names row
    ``i`` (e.g. its batch and position) in the error raised for non-finite logits. With ``groups`` /
    ``pool`` every key holds the same member vectors, pooled into rows as :func:`read_vectors` describes.
    ``readout_precision``: ``"fp32"``, ``"fast"`` or ``None`` (the lens' own), see :func:`read_vectors`.
    Non-finite logits are checked with one host synchronisation for all keys.
    """
    keys = list(vectors)
    if not keys:
        return {}
    n_members = int(vectors[keys[0]].shape[0])
    if any(int(v.shape[0]) != n_members for v in vectors.values()):
        raise LensError("read_many needs the same number of rows for every (layer, site)")
    n_rows = n_members if groups is None else (int(groups[-1]) + 1 if groups.numel() else 0)
    with torch.no_grad():
        normed = torch.cat([lens.normalized(vectors[key], *key) for key in keys])
    repeated = {name: torch.cat([t] * len(keys)) for name, t in (targets or {}).items()}

    def describe(row: int) -> str:
        layer, site = keys[row // n_rows]
        within = row % n_rows
        return f"layer {layer} {site}, {describe_row(within) if describe_row else f'row {within}'}"

    all_groups = None if groups is None else torch.cat([groups + i * n_rows for i in range(len(keys))])
    merged = read_vectors(
        lens,
        normed,
        None,
        views=views,
        group_labels=group_labels,
        n_groups=n_groups,
        top_k=top_k,
        targets=repeated,
        chunk_size=chunk_size,
        describe_row=describe,
        groups=all_groups,
        pool=pool,
        readout_precision=readout_precision,
    )
    out: dict[tuple[int, str], dict[str, ViewReadout]] = {}
    for i, key in enumerate(keys):
        rows = slice(i * n_rows, (i + 1) * n_rows)
        out[key] = {
            view: ViewReadout(
                entropy=r.entropy[rows],
                top_ids=r.top_ids[rows],
                top_probs=r.top_probs[rows],
                masses=r.masses[rows],
                ranks={t: v[rows] for t, v in r.ranks.items()},
                probs={t: v[rows] for t, v in r.probs.items()},
                span_top_ids=None if r.span_top_ids is None else r.span_top_ids[rows],
            )
            for view, r in merged.items()
        }
    return out


#: Above this many contiguous vocabulary segments (views x groups), reductions fall back to masking.
MAX_SEGMENTS = 64


@dataclass(frozen=True)
class _Segments:
    """The vocabulary cut into contiguous runs of ids with the same group and the same view membership."""

    bounds: list[tuple[int, int]]
    group: Int[Tensor, " segments"]
    in_view: dict[str, list[int]]  # view -> segment indices


def _segments(
    masks: Mapping[str, Bool[Tensor, " vocab"] | None], group_labels: Int[Tensor, " vocab"]
) -> _Segments | None:
    key = group_labels.to(torch.long).cpu() * (1 << len(masks))
    for bit, mask in enumerate(masks.values()):
        if mask is not None:
            key = key + (mask.cpu().to(torch.long) << bit)
    cuts = (torch.nonzero(key[1:] != key[:-1]).flatten() + 1).tolist()
    edges = [0, *cuts, int(key.shape[0])]
    if len(edges) - 1 > MAX_SEGMENTS:
        return None
    bounds = list(pairwise(edges))
    in_view = {
        name: [i for i, (a, _) in enumerate(bounds) if mask is None or bool(mask[a])]
        for name, mask in masks.items()
    }
    return _Segments(bounds, group_labels.cpu()[[a for a, _ in bounds]].to(torch.long), in_view)


def _valid(ids: Int[Tensor, "c m"], mask: Bool[Tensor, " vocab"] | None) -> Bool[Tensor, "c m"]:
    """Which target ids of each row are in the view (-1 pads)."""
    valid = ids >= 0
    return valid if mask is None else valid & mask[ids.clamp(min=0)]


def _rank_classes(
    targets: Mapping[str, Int[Tensor, "rows m"]], views: Mapping[str, Bool[Tensor, " vocab"] | None]
) -> dict[str, list[tuple[str, ...]]]:
    """Per target, the views grouped by which of its ids they hold (for every row alike).

    A set's rank in a view counts the view's tokens strictly above its best member in the view, so views
    that hold the same members share that member and its count per vocabulary segment.
    """
    out: dict[str, list[tuple[str, ...]]] = {}
    for name, ids in targets.items():
        ids = ids.cpu()
        groups: list[tuple[Tensor, list[str]]] = []
        for view, mask in views.items():
            valid = _valid(ids, None if mask is None else mask.cpu())
            for seen, members in groups:
                if torch.equal(seen, valid):
                    members.append(view)
                    break
            else:
                groups.append((valid, [view]))
        out[name] = [tuple(members) for _, members in groups]
    return out


def _reduce_segments(
    logits: Float[Tensor, "c vocab"],
    segments: _Segments,
    *,
    k: int,
    n_groups: int,
    targets: Mapping[str, Int[Tensor, "c m"]],
    membership: Mapping[str, Bool[Tensor, " vocab"] | None],
    classes: Mapping[str, Sequence[tuple[str, ...]]],
) -> dict[str, dict[str, Tensor]]:
    """All views' reductions from per-segment statistics: about 5 + (targets) passes over the logits.

    Per segment ``s``: max ``m_s``, ``S_s = sum exp(l - m_s)``, ``D_s = sum exp(l - m_s) * l``, top-k and,
    per target and view class (:func:`_rank_classes`), the count of logits above the set's best member in
    the view. A view (a union of segments) combines them exactly: ``log Z = m + log sum_s S_s e^{m_s - m}``,
    entropy ``= log Z - sum_s D_s e^{m_s - m} / Z``; a set's rank ``min_j #{l > l_j} = #{l > max_j l_j}``.
    """
    c, device = logits.shape[0], logits.device
    t_logits = {name: torch.gather(logits, 1, t.clamp(min=0)) for name, t in targets.items()}  # [c, m]
    thresholds: list[Tensor] = []
    needed: list[set[int]] = []
    class_of: dict[tuple[str, str], tuple[int, Tensor]] = {}
    for name, t in targets.items():
        for views in classes[name]:
            valid = _valid(t, membership[views[0]])
            best = torch.where(valid, t_logits[name], float("-inf")).amax(-1)
            for view in views:
                class_of[(name, view)] = (len(thresholds), valid)
            thresholds.append(best.unsqueeze(-1))
            needed.append({i for view in views for i in segments.in_view[view]})
    widest = max(b - a for a, b in segments.bounds)
    scratch = torch.empty(c, widest, device=device, dtype=logits.dtype)
    n = len(segments.bounds)
    seg_max = torch.empty(n, c, device=device)
    seg_sum = torch.empty(n, c, device=device)
    seg_dot = torch.empty(n, c, device=device)
    seg_top_vals, seg_top_ids = [], []
    seg_counts: list[dict[int, Tensor]] = [{} for _ in thresholds]
    for i, (a, b) in enumerate(segments.bounds):
        x = logits[:, a:b]
        m = x.amax(-1)
        e = torch.sub(x, m.unsqueeze(-1), out=scratch[:, : b - a]).exp_()
        seg_max[i], seg_sum[i] = m, e.sum(-1)
        seg_dot[i] = torch.linalg.vecdot(e, x)
        top = torch.topk(x, min(k, b - a), dim=-1)
        seg_top_vals.append(top.values)
        seg_top_ids.append(top.indices + a)
        for j, threshold in enumerate(thresholds):
            if i in needed[j]:
                # 0/1 floats summed (exact below 2**24 ids): several times faster than summing a bool tensor
                seg_counts[j][i] = torch.gt(x, threshold, out=scratch[:, : b - a]).sum(-1)
    out: dict[str, dict[str, Tensor]] = {}
    for view, idx in segments.in_view.items():
        sel = torch.as_tensor(idx, device=device)
        m_v = seg_max[sel].amax(0)  # [c]
        scale = torch.exp(seg_max[sel] - m_v)  # [s, c]
        weights = seg_sum[sel] * scale  # per segment, un-normalised mass
        z = weights.sum(0)
        log_z = m_v + z.log()
        entropy = log_z - (seg_dot[sel] * scale).sum(0) / z
        masses = torch.zeros(c, n_groups, device=device)
        masses.index_add_(1, segments.group[idx].to(device), (weights / z).T.contiguous())
        vals = torch.cat([seg_top_vals[i] for i in idx], 1)
        ids = torch.cat([seg_top_ids[i] for i in idx], 1)
        kk = min(k, vals.shape[1])
        top = torch.topk(vals, kk, dim=-1)
        result = {
            "entropy": entropy,
            "top_ids": torch.gather(ids, 1, top.indices),
            "top_probs": (top.values - log_z.unsqueeze(-1)).exp(),
            "masses": masses,
        }
        for name in targets:
            j, valid = class_of[(name, view)]
            count = torch.stack([seg_counts[j][i] for i in idx]).sum(0).to(torch.long)
            any_valid = valid.any(-1)
            result[f"r:{name}"] = torch.where(any_valid, count, torch.full_like(count, -1))
            prob = torch.where(
                valid, (t_logits[name] - log_z.unsqueeze(-1)).exp(), torch.zeros((), device=device)
            )
            prob = prob.sum(-1)
            result[f"p:{name}"] = torch.where(any_valid, prob, torch.full_like(prob, float("nan")))
        out[view] = result
    return out


def _reduce_masked(
    logits: Float[Tensor, "c vocab"],
    *,
    k: int,
    onehot: Float[Tensor, "vocab groups"],
    targets: Mapping[str, Int[Tensor, "c m"]],
    masks: Mapping[str, Bool[Tensor, " vocab"] | None],
) -> dict[str, dict[str, Tensor]]:
    """The same reductions by masking each view (for views scattered over many vocabulary segments)."""
    c, device = logits.shape[0], logits.device
    out: dict[str, dict[str, Tensor]] = {}
    for view, mask in masks.items():
        view_logits = logits if mask is None else logits.masked_fill(~mask, float("-inf"))
        log_z = torch.logsumexp(view_logits, dim=-1, keepdim=True)
        log_p = view_logits - log_z
        p = log_p.exp()
        kk = k if mask is None else max(1, min(k, int(mask.sum())))
        top = torch.topk(view_logits, kk, dim=-1)
        result = {
            "entropy": -torch.where(p > 0, p * log_p, torch.zeros((), device=device)).sum(-1),
            "top_ids": top.indices,
            "top_probs": (top.values - log_z).exp(),
            "masses": p @ onehot,
        }
        for name, ids in targets.items():
            gathered = torch.gather(view_logits, 1, ids.clamp(min=0))  # [c, m]
            valid = _valid(ids, mask)
            best = torch.where(valid, gathered, float("-inf")).amax(-1, keepdim=True)
            counts = (view_logits > best).sum(-1)  # the set's rank: tokens above its best member
            any_valid = valid.any(-1)
            result[f"r:{name}"] = torch.where(any_valid, counts, torch.full((c,), -1, device=device))
            prob = torch.where(valid, (gathered - log_z).exp(), torch.zeros((), device=device)).sum(-1)
            result[f"p:{name}"] = torch.where(any_valid, prob, torch.full_like(prob, float("nan")))
        out[view] = result
    return out


#: Rows per unembedding chunk on the CPU (measured fastest there) and the most on an accelerator.
CPU_CHUNK_ROWS, MAX_CHUNK_ROWS = 128, 8192


def default_chunk_size(device: torch.device | str, d_vocab: int) -> int:
    """Rows per unembedding chunk: 128 on the CPU; on CUDA as many as a quarter of the free memory holds.

    Each row costs about ``12 x d_vocab`` bytes in flight (float32 logits and their reductions). Large
    chunks matter on a GPU: for a 7B-shaped model with a 128k vocabulary on an H200, 128-row chunks made
    the analysis 5.1x a plain forward and 4,096-row chunks 3.5x (benchmarks/bench_scale_gpu.py).
    """
    device = torch.device(device)
    if device.type != "cuda":
        return CPU_CHUNK_ROWS
    free, _ = torch.cuda.mem_get_info(device)
    return int(max(CPU_CHUNK_ROWS, min(MAX_CHUNK_ROWS, free // 4 // (12 * max(d_vocab, 1)))))


def read_vectors(
    lens: Lens,
    vectors: Float[Tensor, "members d_model"],
    layer: int | None,
    site: str = "resid_post",
    *,
    views: Mapping[str, Bool[Tensor, " vocab"] | None],
    group_labels: Int[Tensor, " vocab"],
    n_groups: int,
    top_k: int = 10,
    targets: Mapping[str, Int[Tensor, "rows m"]] | None = None,
    chunk_size: int | None = None,
    describe_row: Callable[[int], str] | None = None,
    groups: Int[Tensor, " members"] | None = None,
    pool: str | None = None,
    readout_precision: str | None = None,
) -> dict[str, ViewReadout]:
    """Stream residual vectors through a lens and reduce each chunk at once.

    The logits of a chunk are computed once and shared by all views: the vocabulary is cut into
    contiguous segments (one per run of ids with the same group and view membership), each segment is
    reduced once (max, sum of exponentials, top-k, counts above each target) and every view combines
    its segments exactly. Views scattered over more than :data:`MAX_SEGMENTS` segments are reduced by
    masking instead (same results, slower).

    Args:
        lens: a :class:`Lens` (logit or tuned).
        vectors: ``[rows, d_model]`` residual vectors read at ``(layer, site)``; with ``layer=None`` they
            are taken as already normalised (``lens.normalized``) and only unembedded.
        views: ``name -> mask`` (``None`` = full vocabulary), see :func:`vocab_views`.
        group_labels: ``[d_vocab]`` group code per id (``SpeechVocab.group_labels``).
        n_groups: number of groups.
        top_k: how many top tokens to keep per view.
        targets: ``name -> [rows, m]`` target id sets padded with -1 (see :func:`target_tensor`).
        chunk_size: rows per unembedding matmul (``None``: :func:`default_chunk_size`); peak extra memory
            is about ``chunk_size x d_vocab x 12``
            bytes.
        describe_row: names row ``i`` (layer, position...) in the error for non-finite logits.
        groups: span pooling: ``vectors`` are the MEMBER vectors of the rows, ``groups[i]`` the row of
            member ``i`` (non-decreasing, every row ``0..n_rows-1`` present); ``targets`` are per row.
        pool: how members become a row (with ``groups``), for member logits ``l_p`` of row ``w``:

            - ``"max"``: ``l_w[v] = max_{p in w} l_p[v]`` (per-token max over the span); every column
              (ranks, probabilities, top-k, masses, entropy) is then computed from ``l_w`` in the view.
            - ``"any"``: each position is read on its own; ``rank_w = min_{p in w} rank_p`` (the target is
              in the top-k at ANY position iff ``rank_w < k``), ``prob_w = max_{p in w} prob_p``; entropy,
              top-k and masses are those of the span's LAST position.

            A target set (variants) first takes its best member (min rank) at each position.
        readout_precision: ``"fp32"``, ``"fast"`` or ``None`` (the lens' :attr:`~Lens.readout_precision`);
            see :mod:`~slm_transformerlens.lens.precision`. Both give the float32 logits' ranks, top-k,
            probabilities, masses and entropy; "fast" computes the logits in another order (exact split
            half-precision products), so results differ only between logits within float32 rounding.

    Non-finite logits are flagged on the device chunk by chunk and read once at the end (one host
    synchronisation per call), then the first bad chunk is recomputed to name the row.

    Returns:
        ``{view: ViewReadout}`` on the CPU.

    Raises:
        LensError: ``top_k`` outside ``1..`` the smallest view's size, or target ids outside the vocabulary.
        NonFiniteError: NaN or infinite logits (nothing is ranked from them).
    """
    precision = lens.resolved_readout_precision(readout_precision)  # builds the "fast" weight (if any) first
    device = lens.device
    if chunk_size is None:
        chunk_size = default_chunk_size(device, lens.d_vocab)
    if chunk_size < 1:
        raise LensError(f"chunk_size must be >= 1, got {chunk_size}")
    if (groups is None) != (pool is None) or pool not in (None, "max", "any"):
        raise LensError(f"span pooling needs groups=... and pool='max' or 'any' together (got pool={pool!r})")
    targets = dict(targets or {})
    n_rows = int(vectors.shape[0]) if groups is None else (int(groups[-1]) + 1 if groups.numel() else 0)
    d_vocab = lens.d_vocab
    if group_labels.shape != (d_vocab,):
        raise LensError(
            f"the vocabulary has {group_labels.shape[0]} ids but the unembedding has {d_vocab} rows; "
            "this SpeechVocab belongs to another model"
        )
    check_readout_args(views, targets, top_k=top_k, d_vocab=d_vocab)
    _warn_reduced_float32(precision)
    where = f"layer {layer} {site}, " if layer is not None else ""
    name_row = describe_row or (lambda row: f"{where}row {row}")
    masks = {name: (None if m is None else m.to(device)) for name, m in views.items()}
    segments = _segments(masks, group_labels)
    classes = _rank_classes(targets, views)
    onehot = None
    if segments is None:
        onehot = torch.zeros(d_vocab, n_groups, device=device, dtype=torch.float32)
        onehot[torch.arange(d_vocab, device=device), group_labels.to(device)] = 1.0
    device_targets = {name: t.to(device) for name, t in targets.items()}
    device_groups = None if groups is None else groups.to(device)
    k = int(top_k)
    chunks = _chunks(n_rows, chunk_size, groups)

    def chunk_logits(m_start: int, m_stop: int) -> Tensor:
        h = vectors[m_start:m_stop].to(device)
        x = h if layer is None else lens.normalized(h, layer, site)
        return lens.unembed(x, precision=precision)  # [c, V] float32

    parts: dict[str, dict[str, list[Tensor]]] = {name: {} for name in views}
    not_finite: list[Tensor] = []  # one flag per chunk, read once at the end (no host sync per chunk)
    for start, stop, m_start, m_stop in chunks:
        with torch.no_grad():
            logits = chunk_logits(m_start, m_stop)
            low, high = torch.aminmax(logits)
            not_finite.append(~(torch.isfinite(low) & torch.isfinite(high)))
            chunk_targets = {name: t[start:stop] for name, t in device_targets.items()}
            local = None if device_groups is None else device_groups[m_start:m_stop] - start
            if pool == "max":
                assert local is not None
                logits = _max_pool(logits, local, stop - start)
            elif pool == "any":
                assert local is not None
                chunk_targets = {name: t[local] for name, t in chunk_targets.items()}
            if segments is not None:
                reduced = _reduce_segments(
                    logits,
                    segments,
                    k=k,
                    n_groups=n_groups,
                    targets=chunk_targets,
                    membership=masks,
                    classes=classes,
                )
            else:
                assert onehot is not None
                reduced = _reduce_masked(logits, k=k, onehot=onehot, targets=chunk_targets, masks=masks)
            if pool == "any":
                assert local is not None
                reduced = {view: _pool_any(result, local, stop - start) for view, result in reduced.items()}
        for view, result in reduced.items():
            for key, value in result.items():
                parts[view].setdefault(key, []).append(value)
    if not_finite and bool(torch.stack(not_finite).any()):  # the one host sync of the read-out
        bad = int(torch.nonzero(torch.stack(not_finite).cpu()).flatten()[0])
        start, _, m_start, m_stop = chunks[bad]
        with torch.no_grad():
            logits = chunk_logits(m_start, m_stop)
        check_finite_logits(
            logits,
            describe_row=lambda i: name_row(start + i if groups is None else int(groups[m_start + i])),
        )
        raise NonFiniteError(
            f"lens logits at {name_row(start)} are not finite"
        )  # not reproduced: still an error
    members = None if pool != "any" else torch.bincount(groups.cpu(), minlength=n_rows).tolist()  # type: ignore[union-attr]
    return {view: _collect(store, n_rows, n_groups, list(targets), members) for view, store in parts.items()}


def _collect(
    store: Mapping[str, list[Tensor]],
    n_rows: int,
    n_groups: int,
    targets: Sequence[str],
    members: list[int] | None,
) -> ViewReadout:
    """One view's chunk results concatenated on the CPU (``members``: per row, its span's size for "any")."""

    def cat(key: str) -> Tensor:
        return torch.cat(store[key]).cpu() if store.get(key) else torch.zeros(0)

    return ViewReadout(
        entropy=cat("entropy"),
        top_ids=cat("top_ids").long().reshape(n_rows, -1),
        top_probs=cat("top_probs").reshape(n_rows, -1),
        masses=cat("masses").reshape(n_rows, n_groups),
        ranks={t: cat(f"r:{t}").long() for t in targets},
        probs={t: cat(f"p:{t}") for t in targets},
        span_top_ids=None
        if members is None
        else list(torch.split(cat("span_top_ids").long(), members or [0]))[: len(members)],
    )


_WARNED: set[str] = set()


def _warn_reduced_float32(precision: str) -> None:
    """Warn once when float32 products round their inputs (TF32 / bf16) and the read-out uses them."""
    reason = reduced_float32_matmul() if precision == "fp32" else None
    if reason and reason not in _WARNED:
        _WARNED.add(reason)
        warnings.warn(
            f"{reason}: float32 matrix products round their inputs to TF32/bf16, so the fp32 lens read-out "
            "is not float32 (ranks of near-tied tokens change). Set torch.set_float32_matmul_precision('highest') "
            "or use readout_precision='fast' (exact split products, unaffected by this setting).",
            stacklevel=3,
        )


def _chunks(
    n_rows: int, chunk_size: int, groups: Int[Tensor, " members"] | None
) -> list[tuple[int, int, int, int]]:
    """``(row_start, row_stop, member_start, member_stop)`` per chunk: at most ``chunk_size`` members
    (and at least one whole row) each."""
    if groups is None:
        return [
            (s, min(s + chunk_size, n_rows), s, min(s + chunk_size, n_rows))
            for s in range(0, n_rows, chunk_size)
        ]
    counts = torch.bincount(groups.cpu(), minlength=n_rows).tolist()
    out, row, member = [], 0, 0
    while row < n_rows:
        stop, members = row, 0
        while stop < n_rows and (stop == row or members + counts[stop] <= chunk_size):
            members += counts[stop]
            stop += 1
        out.append((row, stop, member, member + members))
        row, member = stop, member + members
    return out


def _max_pool(logits: Float[Tensor, "m vocab"], local: Int[Tensor, " m"], n: int) -> Float[Tensor, "n vocab"]:
    """``out[w, v] = max over members p of row w of logits[p, v]``."""
    out = torch.empty(n, logits.shape[1], device=logits.device, dtype=logits.dtype)
    index = local.unsqueeze(-1).expand_as(logits)
    return out.scatter_reduce_(0, index, logits, reduce="amax", include_self=False)


def _pool_any(result: Mapping[str, Tensor], local: Int[Tensor, " m"], n: int) -> dict[str, Tensor]:
    """Per-position reductions -> per-row: min rank, max probability, the last position's other columns."""
    last = torch.zeros(n, dtype=torch.long, device=local.device)
    last.scatter_reduce_(
        0, local, torch.arange(len(local), device=local.device), reduce="amax", include_self=False
    )
    out = {"span_top_ids": result["top_ids"]}  # every position's top-k, for the shuffled control
    for key, value in result.items():
        if key.startswith("r:"):
            big = torch.iinfo(torch.long).max
            ranks = torch.where(value < 0, torch.full_like(value, big), value)
            best = torch.full((n,), big, dtype=torch.long, device=value.device)
            best.scatter_reduce_(0, local, ranks, reduce="amin")
            out[key] = torch.where(best == big, torch.full_like(best, -1), best)
        elif key.startswith("p:"):
            probs = torch.nan_to_num(value, nan=-1.0)
            best_p = torch.full((n,), -1.0, dtype=value.dtype, device=value.device)
            best_p.scatter_reduce_(0, local, probs, reduce="amax")
            out[key] = torch.where(best_p < 0, torch.full_like(best_p, float("nan")), best_p)
        else:
            out[key] = value[last]
    return out


class TokenNamer:
    """Readable strings for token ids: units as their token (``<Un17>``), text decoded, others raw."""

    def __init__(self, vocab: SpeechVocab, tokenizer: Any) -> None:
        self.vocab = vocab
        self.tokenizer = tokenizer
        self._cache: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        token_id = int(token_id)
        name = self._cache.get(token_id)
        if name is None:
            name = self._name(token_id)
            self._cache[token_id] = name
        return name

    def many(self, ids: Sequence[int]) -> list[str]:
        """Names of several ids."""
        return [self(i) for i in ids]

    def _name(self, token_id: int) -> str:
        group = self.vocab.group_of(token_id)
        if group == "speech":
            return self.vocab.unit_token(self.vocab.unit_of(token_id) or 0)
        if group == "padding":
            return f"<pad_row_{token_id}>"
        if group != "text" or self.tokenizer is None:
            if self.tokenizer is not None:
                token = self.tokenizer.convert_ids_to_tokens(token_id)
                if token is not None:
                    return str(token)
            return f"<id_{token_id}>"
        text = str(self.tokenizer.decode([token_id]))
        if "\ufffd" in text or not text:  # a lone byte token: show the piece, e.g. <0xE2>
            token = self.tokenizer.convert_ids_to_tokens(token_id)
            return str(token) if token is not None else text
        return text
