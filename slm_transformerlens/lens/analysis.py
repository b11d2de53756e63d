"""The modality-aware lens analysis of one batch: a tidy table per (row, layer, site, view).

:func:`lens_table` runs the model ONCE (hooks keep only the read-out rows), then streams every
``(layer, site)`` through the lens in chunks (:func:`~slm_transformerlens.lens.readout.read_vectors`)
and writes one row per (read-out position, layer, site, view) with the top-k tokens, the ranks and
probabilities of the requested targets, the probability mass per vocabulary group and the entropy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Int
from torch import Tensor

from slm_transformerlens._deprecation import deprecated_attributes
from slm_transformerlens.lens.base import Lens, LensError, check_sites, resolve_layers
from slm_transformerlens.lens.logit_lens import LogitLens
from slm_transformerlens.lens.positions import POOLED_MODES, ReadoutPlan, capture_residuals, plan_readouts
from slm_transformerlens.lens.readout import (
    TokenNamer,
    ViewReadout,
    check_readout_args,
    read_many,
    target_tensor,
    vocab_views,
)
from slm_transformerlens.protocols import SpeechLM
from slm_transformerlens.spans import EncodedBatch, WordSpanError, WordSpans, as_encoded_batch

__all__ = ["encoded_inputs", "lens_table", "read_plan", "readout_frame"]


#: Deprecated names: a batch is an :class:`~slm_transformerlens.spans.EncodedBatch`.
__getattr__ = deprecated_attributes(
    __name__,
    {
        "LensInputs": "slm_transformerlens.spans:EncodedBatch",
        "as_lens_inputs": "slm_transformerlens.spans:as_encoded_batch",
    },
)


def encoded_inputs(
    model: SpeechLM, inputs: Any, word_spans: WordSpans | pd.DataFrame | None = None
) -> EncodedBatch:
    """:func:`~slm_transformerlens.spans.as_encoded_batch`, with a :class:`LensError` for unreadable input."""
    if isinstance(word_spans, WordSpans):
        word_spans = word_spans.frame
    try:
        return as_encoded_batch(model, inputs, word_spans)
    except WordSpanError as error:
        raise LensError(str(error)) from error


def readout_frame(
    plan_rows: pd.DataFrame,
    readouts: Mapping[tuple[int, str], Mapping[str, ViewReadout]],
    *,
    group_names: Sequence[str],
    namer: TokenNamer | None,
) -> pd.DataFrame:
    """One tidy frame of read-outs: a row per ((layer, site), view, plan row), in that order.

    ``readouts`` is ``{(layer, site): {view: ViewReadout}}`` as
    :func:`~slm_transformerlens.lens.readout.read_many` returns; the frame is built once for all of them
    (no per-layer DataFrame work).
    """
    blocks = [(key, view, r) for key, views in readouts.items() for view, r in views.items()]
    if not blocks:
        return pd.DataFrame()
    n = len(plan_rows)
    base = plan_rows.reset_index(drop=True)
    frame = base.iloc[np.tile(np.arange(n), len(blocks))].reset_index(drop=True)
    columns: dict[str, Any] = {
        "layer": np.repeat(np.asarray([key[0] for key, _, _ in blocks], dtype=np.int64), n),
        "site": np.repeat(np.asarray([key[1] for key, _, _ in blocks], dtype=object), n),
        "view": np.repeat(np.asarray([view for _, view, _ in blocks], dtype=object), n),
        "entropy": torch.cat([r.entropy for _, _, r in blocks]).numpy().astype(np.float64),
    }
    top_ids = torch.cat([r.top_ids.reshape(n, -1) for _, _, r in blocks]).numpy() if n else np.zeros((0, 0))
    top_probs = torch.cat([r.top_probs.reshape(n, -1) for _, _, r in blocks]).numpy().astype(np.float64)
    columns["top_ids"] = top_ids.tolist()
    columns["top_probs"] = top_probs.tolist()
    if namer is not None:
        names = [namer.many(row) for row in columns["top_ids"]]
        columns["top_tokens"] = names
        columns["top_token"] = pd.array([row[0] if row else None for row in names], dtype="string")
    if blocks[0][2].span_top_ids is not None:  # "any": every position's top-k ids, per row
        columns["span_top_ids"] = [ids.tolist() for _, _, r in blocks for ids in r.span_top_ids or []]
    masses = torch.cat([r.masses.reshape(n, -1) for _, _, r in blocks]).numpy().astype(np.float64)
    for g, name in enumerate(group_names):
        columns[f"mass_{name}"] = masses[:, g] if len(masses) else np.zeros(0)
    for name in blocks[0][2].ranks:
        values = torch.cat([r.ranks[name] for _, _, r in blocks]).numpy()
        columns[f"rank_{name}"] = pd.array(np.where(values < 0, None, values).tolist(), dtype="Int64")
        columns[f"prob_{name}"] = torch.cat([r.probs[name] for _, _, r in blocks]).numpy().astype(np.float64)
    return pd.concat([frame, pd.DataFrame(columns, index=frame.index)], axis=1)


def read_plan(
    model: SpeechLM,
    lens: Lens,
    tokens: Int[Tensor, "batch pos"],
    plan: ReadoutPlan,
    rows: pd.DataFrame,
    *,
    layers: Sequence[int],
    sites: Sequence[str],
    views: Mapping[str, Tensor | None],
    targets: Mapping[str, Tensor],
    top_k: int,
    chunk_size: int | None,
    namer: TokenNamer | None,
    attention_mask: Int[Tensor, "batch pos"] | None = None,
    readout_precision: str | None = None,
) -> pd.DataFrame:
    """One forward pass keeping the plan's rows, every ``(layer, site)`` read through ``lens``, one frame.

    ``rows`` is ``plan.rows`` with any extra columns the caller wants carried into the frame.
    ``readout_precision``: ``"fp32"``, ``"fast"`` or ``None`` (the lens' own), see
    :func:`~slm_transformerlens.lens.readout.read_vectors`.

    Raises:
        LensError: an invalid ``top_k``, site or target (checked before the forward pass).
        NonFiniteError: NaN / infinite lens logits, naming the layer, site, batch row and position.
    """
    vocab = model.speech_vocab
    check_sites(sites)
    check_readout_args(views, targets, top_k=top_k, d_vocab=lens.d_vocab)
    batch_index, position = plan.rows["batch"].tolist(), plan.rows["position"].tolist()

    def describe_row(row: int) -> str:
        return f"batch {batch_index[row]} position {position[row]}"

    vectors = capture_residuals(model, tokens, plan, layers, sites, attention_mask=attention_mask)
    readouts = read_many(
        lens,
        vectors,
        views=views,
        group_labels=vocab.group_labels,
        n_groups=len(vocab.group_names),
        top_k=top_k,
        targets=targets,
        chunk_size=chunk_size,
        describe_row=describe_row,
        groups=plan.member_row if plan.mode in POOLED_MODES else None,
        pool=plan.mode if plan.mode in POOLED_MODES else None,
        readout_precision=readout_precision,
    )
    return readout_frame(rows, readouts, group_names=vocab.group_names, namer=namer)


def lens_table(
    model: SpeechLM,
    inputs: Any,
    *,
    lens: Lens | None = None,
    word_spans: WordSpans | pd.DataFrame | None = None,
    positions: str = "last",
    modalities: Sequence[str] | None = None,
    layers: int | Sequence[int] | None = None,
    sites: Sequence[str] = ("resid_post",),
    views: Sequence[str] | Mapping[str, Tensor | None] = ("full", "text", "speech"),
    top_k: int = 10,
    targets: Mapping[str, Any] | None = None,
    chunk_size: int | None = None,
    token_strings: bool = True,
    plan: ReadoutPlan | None = None,
    readout_precision: str | None = None,
) -> pd.DataFrame:
    """Modality-aware logit (or tuned) lens over one batch, as a tidy DataFrame.

    Args:
        model: a ``HookedSLM`` (``TransformerBridge`` with ``speech_vocab``).
        inputs: tokens ``[batch, pos]`` (with ``word_spans``), an ``EncodedBatch``, or Speech/Text inputs.
        lens: the lens to read with (default ``LogitLens(model)``; a ``TunedLens`` works the same).
        word_spans: the word-span table when ``inputs`` is a token tensor.
        positions: ``"last"`` (default), ``"first"``, ``"every"``, ``"mean"`` (over each word span),
            ``"max"`` (logits max-pooled over the span: ``l_w[v] = max_p l_p[v]``, then ranked), ``"any"``
            (``rank_w = min_p rank_p``: a hit when the target is in the top-k at any position of the span)
            or ``"all"``.
        modalities: keep only word spans of these modalities (``None`` = all).
        layers: block indices (``None`` = all).
        sites: any of ``"resid_pre"``, ``"resid_mid"``, ``"resid_post"``.
        views: ``"full"``, ``"text"``, ``"speech"`` (or another vocabulary group), or ``{name: mask}``.
        top_k: top tokens kept per row and view.
        targets: ``{name: ids}``; an int / list is shared by all rows, a list of lists or ``[rows, m]``
            tensor is per row (-1 pads). Adds ``rank_{name}`` (0 = top; ``<NA>`` when no target id is in
            the view) and ``prob_{name}`` (summed over the set) columns.
        chunk_size: rows per unembedding matmul (``None``: 128 on the CPU, larger on a GPU).
        token_strings: add ``top_tokens`` (readable strings; units as ``<Un17>``) and ``top_token``.
        plan: a ready :class:`ReadoutPlan` (overrides ``positions`` / ``modalities``).
        readout_precision: how the read-outs unembed: ``"fp32"`` (one float32 product), ``"fast"`` (the
            same float32 logits from exact split bf16/fp16 tensor-core products, for a bf16/fp16 model;
            ranks, top-k ids and probabilities are the fp32 read-out's except between logits within
            float32 rounding, see :mod:`~slm_transformerlens.lens.precision`) or ``None`` (the lens'
            ``readout_precision``; default ``"fp32"``; ``"fast"`` is opt-in).

    Returns:
        One row per (read-out row, layer, site, view): ``batch, position, word_index, word, modality,
        n_members, layer, site, view, entropy, top_ids, top_probs, [top_tokens, top_token],
        [span_top_ids], mass_{group}..., [rank_{t}, prob_{t}]...`` (``span_top_ids`` for ``positions="any"``:
        per row, the top-k ids at each position of the span). Masses and probabilities are those of the view's own
        softmax (in the ``text`` view ``mass_text`` is 1).
    """
    lens = lens if lens is not None else LogitLens(model)
    vocab = model.speech_vocab
    batch = encoded_inputs(model, inputs, word_spans)
    device = torch.device(getattr(model.cfg, "device", "cpu") or "cpu")
    tokens = batch.tokens.to(device)
    if plan is None:
        plan = plan_readouts(
            tokens,
            batch.word_spans,
            mode=positions,
            modalities=modalities,
            attention_mask=batch.attention_mask,
        )
    layer_list = resolve_layers(layers, lens.n_layers)
    sites = check_sites(sites)
    view_masks = vocab_views(vocab, views)
    target_ids = {name: target_tensor(spec, plan.n_rows) for name, spec in (targets or {}).items()}
    check_readout_args(view_masks, target_ids, top_k=top_k, d_vocab=lens.d_vocab)
    namer = TokenNamer(vocab, getattr(model, "tokenizer", None)) if token_strings else None
    if plan.n_rows == 0:
        return pd.DataFrame()
    return read_plan(
        model,
        lens,
        tokens,
        plan,
        plan.rows,
        layers=layer_list,
        sites=sites,
        views=view_masks,
        targets=target_ids,
        top_k=top_k,
        chunk_size=chunk_size,
        namer=namer,
        attention_mask=batch.attention_mask,
        readout_precision=readout_precision,
    )
