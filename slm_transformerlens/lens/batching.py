"""Batching utterances for the lens: group by length under a token budget, right-pad with a mask.

:func:`length_batches` sorts utterances by length and packs them greedily so that ``rows x longest``
stays within ``batch_tokens`` (an utterance longer than the budget gets a batch of its own).
:func:`pad_batches` joins several :class:`~slm_transformerlens.spans.EncodedBatch` into one, right-padded,
with an attention mask and the word spans renumbered to the joined rows. Right padding never changes
the real positions of a causal model (a real position only attends to earlier ones), so read-outs at
real positions equal those of the utterance alone, up to float rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch

from slm_transformerlens.lens.base import LensError
from slm_transformerlens.spans import EncodedBatch

__all__ = ["length_batches", "pad_batches"]


def length_batches(lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Indices of ``lengths`` grouped into batches of at most ``batch_tokens`` padded tokens.

    Utterances are sorted by length (stable), then packed greedily: a batch grows while
    ``(rows + 1) x longest <= batch_tokens``. Every index appears exactly once; batches are returned in
    order of their first (shortest) utterance.

    Raises:
        LensError: ``batch_tokens < 1``.
    """
    if batch_tokens < 1:
        raise LensError(f"batch_tokens={batch_tokens}: the token budget of a batch must be >= 1 (e.g. 4096)")
    order = sorted(range(len(lengths)), key=lambda i: int(lengths[i]))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = max(int(lengths[i]), *(int(lengths[j]) for j in current)) if current else int(lengths[i])
        if current and (len(current) + 1) * longest > batch_tokens:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def pad_batches(batches: Sequence[EncodedBatch], pad_id: int = 0) -> tuple[EncodedBatch, list[int]]:
    """One right-padded :class:`EncodedBatch` of every row of ``batches``, and each row's source batch.

    Rows keep their real tokens at the same positions; padding (``pad_id``) is masked out. Word spans
    are renumbered: ``utterance`` becomes the joined row.

    Returns:
        ``(joined, source)`` where ``source[row]`` is the index in ``batches`` the joined row came from.
    """
    if not batches:
        raise LensError("pad_batches needs at least one batch")
    rows: list[torch.Tensor] = []
    source: list[int] = []
    frames: list[pd.DataFrame] = []
    for index, batch in enumerate(batches):
        offset = len(rows)
        for row, length in enumerate(batch.lengths):
            rows.append(batch.tokens[row, :length].cpu())
            source.append(index)
        if batch.word_spans is not None:
            spans = batch.word_spans.copy()
            spans["utterance"] = spans["utterance"].astype("int64") + offset
            frames.append(spans)
    width = max(len(r) for r in rows)
    tokens = torch.full((len(rows), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = r
        mask[i, : len(r)] = 1
    spans_all = pd.concat(frames, ignore_index=True) if frames else None
    return EncodedBatch(tokens, mask, spans_all), source
