"""The rows of a transcription table: one encoded batch read into per-(word, layer, site, view) rows.

:func:`~slm_transformerlens.lens.metrics.transcription_table` validates its arguments and hands the work
to this module: :class:`BatchRows` reads one batch (targets of the current and next word, one forward pass,
every read-out), :func:`read_dataset` runs it over a dataset (one item at a time, or length-batched under
a token budget) and :func:`finish_table` renames, adds the top-k hit columns and orders the columns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from slm_transformerlens.lens.analysis import encoded_inputs, read_plan
from slm_transformerlens.lens.base import Lens, LensError
from slm_transformerlens.lens.batching import length_batches, pad_batches
from slm_transformerlens.lens.positions import plan_readouts
from slm_transformerlens.lens.readout import TokenNamer, target_tensor
from slm_transformerlens.lens.targets import WordTargetResolver
from slm_transformerlens.protocols import SpeechLM
from slm_transformerlens.spans import EncodedBatch, WordSpans

__all__ = ["BatchRows", "finish_table", "read_dataset", "table_columns"]

_NO_SPANS = "every dataset item needs word spans (a word-span table) for the transcription metrics"


def _text_or_none(value: Any) -> str | None:
    return None if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)


@dataclass
class BatchRows:
    """Reads one :class:`~slm_transformerlens.spans.EncodedBatch` into transcription-table rows.

    Calling it returns the rows (``utterance`` = the batch row) or ``None`` when the batch has no word of
    the chosen modalities. The attributes are :func:`transcription_table`'s settings, already checked.
    """

    model: SpeechLM
    lens: Lens
    resolver: WordTargetResolver
    namer: TokenNamer | None
    positions: str
    modalities: Sequence[str] | None
    layers: Sequence[int]
    sites: Sequence[str]
    views: Mapping[str, torch.Tensor | None]
    top_k: int
    chunk_size: int | None
    readout_precision: str | None

    def __call__(self, batch: EncodedBatch) -> pd.DataFrame | None:
        """The rows of ``batch`` (one forward pass), or ``None`` without words."""
        if batch.spans is None:
            raise LensError(_NO_SPANS)
        device = torch.device(getattr(self.model.cfg, "device", "cpu") or "cpu")
        tokens = batch.tokens.to(device)
        spans = batch.spans.frame.reset_index(drop=True).copy()
        spans["next_word"] = WordSpans(spans).next_words()
        plan = plan_readouts(
            tokens,
            spans,
            mode=self.positions,
            modalities=self.modalities,
            attention_mask=batch.attention_mask,
        )
        if not plan.n_rows:
            return None
        key = spans.set_index(["utterance", "word_index"])["next_word"]
        next_words = [
            _text_or_none(key.get((int(b), int(w))))
            for b, w in zip(plan.rows["batch"], plan.rows["word_index"], strict=True)
        ]
        current = [self.resolver(str(w)) for w in plan.rows["word"]]
        following = [None if w is None else self.resolver(w) for w in next_words]
        targets = {
            "current": target_tensor([list(t.ids) for t in current], plan.n_rows),
            "next": target_tensor([[] if t is None else list(t.ids) for t in following], plan.n_rows),
        }
        namer = self.namer
        rows = plan.rows.copy()
        rows.insert(0, "utterance", rows["batch"])
        rows["target_id"] = pd.array([t.first_id for t in current], dtype="Int64")
        rows["target_token"] = pd.array(
            [None if t.first_id is None or namer is None else namer(t.first_id) for t in current],
            dtype="string",
        )
        rows["next_word"] = pd.array(next_words, dtype="string")
        rows["next_target_id"] = pd.array(
            [None if t is None else t.first_id for t in following], dtype="Int64"
        )
        rows["target_ids"] = [list(t.ids) for t in current]
        rows["next_target_ids"] = [[] if t is None else list(t.ids) for t in following]
        return read_plan(
            self.model,
            self.lens,
            tokens,
            plan,
            rows,
            layers=self.layers,
            sites=self.sites,
            views=self.views,
            targets=targets,
            top_k=self.top_k,
            chunk_size=self.chunk_size,
            namer=namer,
            attention_mask=batch.attention_mask,
            readout_precision=self.readout_precision,
        )


def _read_batched(
    model: SpeechLM,
    dataset: Iterable[Any],
    read_batch: Callable[[EncodedBatch], pd.DataFrame | None],
    batch_tokens: int,
    bar: Any,
) -> list[pd.DataFrame]:
    """Every item encoded, grouped by length, read in padded batches; rows renumbered and put back in
    item order (as one item at a time would give them)."""
    encoded = [encoded_inputs(model, item) for item in dataset]
    offsets = np.cumsum([0, *(int(b.tokens.shape[0]) for b in encoded)])
    pad_id = getattr(getattr(model, "tokenizer", None), "pad_token_id", None) or 0
    frames: list[pd.DataFrame] = []
    for group in length_batches([int(b.tokens.shape[-1]) for b in encoded], batch_tokens):
        items = [encoded[i] for i in group]
        if any(b.spans is None for b in items):
            raise LensError(_NO_SPANS)
        joined, source = pad_batches(items, pad_id)
        frame = read_batch(joined)
        bar.update(len(group))
        if frame is None:
            continue
        first_row = {s: r for r, s in reversed(list(enumerate(source)))}
        rows = frame["batch"].to_numpy()
        item_of_row = np.asarray([group[s] for s in source], dtype=np.int64)
        within = rows - np.asarray([first_row[s] for s in source], dtype=np.int64)[rows]
        frame["batch"] = within
        frame["utterance"] = offsets[item_of_row[rows]] + within
        frame.insert(0, "_item", item_of_row[rows])
        frames.append(frame)
    if not frames:
        return []
    merged = pd.concat(frames, ignore_index=True).sort_values("_item", kind="stable")
    return [merged.drop(columns="_item").reset_index(drop=True)]


def read_dataset(
    model: SpeechLM,
    dataset: Iterable[Any],
    read_batch: Callable[[EncodedBatch], pd.DataFrame | None],
    *,
    batch_tokens: int | None,
    total: int | None,
    progress: bool,
) -> list[pd.DataFrame]:
    """``read_batch`` over every item (``batch_tokens=None``: one item per forward pass), ``utterance``
    numbered across the dataset, in item order."""
    if total is None and hasattr(dataset, "__len__"):
        total = len(dataset)  # type: ignore[arg-type]
    frames: list[pd.DataFrame] = []
    bar = tqdm(total=total, desc="lens: transcription", disable=not progress, unit="utt")
    if batch_tokens is None:
        utterance_offset = 0
        for item in dataset:
            batch = encoded_inputs(model, item)
            frame = read_batch(batch)
            if frame is not None:
                frame["utterance"] += utterance_offset
                frames.append(frame)
            utterance_offset += int(batch.tokens.shape[0])
            bar.update(1)
    else:
        frames = _read_batched(model, dataset, read_batch, batch_tokens, bar)
    bar.close()
    return frames


def table_columns(
    ks: Sequence[int], *, group_names: Sequence[str], token_strings: bool, positions: str
) -> tuple[list[str], list[str]]:
    """The leading columns of a transcription table, and all of its columns in order."""
    first = [
        *("utterance", "batch", "position", "word_index", "word", "modality", "n_members"),
        *("layer", "site", "view", "target_id", "target_token", "rank", "prob"),
        *[f"hit{k}" for k in ks],
        *("next_word", "next_target_id", "next_rank", "next_prob"),
        *[f"next_hit{k}" for k in ks],
    ]
    rest = [
        *("target_ids", "next_target_ids", "entropy", "top_ids", "top_probs"),
        *(("top_tokens", "top_token") if token_strings else ()),
        *(("span_top_ids",) if positions == "any" else ()),
        *(f"mass_{name}" for name in group_names),
        "positions",
    ]
    return first, first + rest


def finish_table(
    frames: Sequence[pd.DataFrame],
    ks: Sequence[int],
    *,
    positions: str,
    group_names: Sequence[str],
    token_strings: bool,
) -> pd.DataFrame:
    """The frames as one table: ranks renamed, ``hit{k}`` / ``next_hit{k}`` added, columns ordered.

    Without frames (no word of the chosen modalities): an empty table with every column.
    """
    first, every = table_columns(
        ks, group_names=group_names, token_strings=token_strings, positions=positions
    )
    if not frames:
        return pd.DataFrame(columns=every)
    df = pd.concat(frames, ignore_index=True)
    df = df.rename(columns={"rank_current": "rank", "prob_current": "prob"})
    for prefix, column in (("hit", "rank"), ("next_hit", "rank_next")):
        for k in ks:
            df[f"{prefix}{k}"] = (df[column] < int(k)).astype("boolean")
    df = df.rename(columns={"rank_next": "next_rank", "prob_next": "next_prob"})
    df["positions"] = positions  # the read-out mode; the shuffled control depends on it
    return df[first + [c for c in df.columns if c not in first]]
