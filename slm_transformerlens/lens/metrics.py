"""The paper's metrics over a dataset: implicit transcription and next-word prediction per layer.

For every word span (speech words by default), at its read-out position (default: the last unit) and
for every layer, :func:`transcription_table` records the rank and probability of the CURRENT word's
target token and of the NEXT word's, in each vocabulary view (default ``text``: ranks among text
tokens only, and ``full``), top-k hits, group masses and entropy: one row per
(utterance, word, layer, site, view). :func:`summarize_transcription` turns it into rates per layer with
Wilson confidence intervals, cluster-bootstrap intervals and the chance controls of
:mod:`~slm_transformerlens.lens.controls` beside every rate; :func:`peak_layers` finds where each rate peaks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from slm_transformerlens.errors import SpeechInputError
from slm_transformerlens.lens.analysis import encoded_inputs, read_plan
from slm_transformerlens.lens.base import Lens, LensError, check_sites, resolve_layers
from slm_transformerlens.lens.batching import length_batches, pad_batches
from slm_transformerlens.lens.controls import WordFilter, chance_controls, cluster_intervals
from slm_transformerlens.lens.logit_lens import LogitLens
from slm_transformerlens.lens.positions import plan_readouts
from slm_transformerlens.lens.readout import TokenNamer, check_readout_args, target_tensor, vocab_views
from slm_transformerlens.lens.targets import TargetConfig, WordTargetResolver
from slm_transformerlens.protocols import SpeechLM
from slm_transformerlens.spans import EncodedBatch, WordSpans

__all__ = [
    "peak_layers",
    "summarize_transcription",
    "transcription_table",
    "wilson_interval",
]


def wilson_interval(hits: np.ndarray | int, n: np.ndarray | int, confidence: float = 0.95) -> tuple[Any, Any]:
    """Wilson score interval of a binomial proportion (vectorised; NaN where ``n == 0``)."""
    hits_a = np.asarray(hits, dtype=np.float64)
    n_a = np.asarray(n, dtype=np.float64)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = hits_a / n_a
        denom = 1 + z**2 / n_a
        centre = (p + z**2 / (2 * n_a)) / denom
        half = z * np.sqrt(p * (1 - p) / n_a + z**2 / (4 * n_a**2)) / denom
        low, high = np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)
    return low, high


def _text_or_none(value: Any) -> str | None:
    return None if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)


def _encode_item(model: SpeechLM, item: Any, index: int) -> EncodedBatch:
    """One dataset item encoded; an error names the item by its index in the dataset."""
    try:
        return encoded_inputs(model, item)
    except (SpeechInputError, LensError) as error:
        kind = SpeechInputError if isinstance(error, SpeechInputError) else LensError
        raise kind(f"dataset item {index}: {error}") from error


def _read_batched(
    model: SpeechLM,
    dataset: Iterable[Any],
    read_batch: Callable[[EncodedBatch], pd.DataFrame | None],
    batch_tokens: int,
    bar: Any,
) -> list[pd.DataFrame]:
    """Every item encoded, grouped by length, read in padded batches; rows renumbered and put back in
    item order (as one item at a time would give them)."""
    encoded = [_encode_item(model, item, index) for index, item in enumerate(dataset)]
    offsets = np.cumsum([0, *(int(b.tokens.shape[0]) for b in encoded)])
    pad_id = getattr(getattr(model, "tokenizer", None), "pad_token_id", None) or 0
    frames: list[pd.DataFrame] = []
    for group in length_batches([int(b.tokens.shape[-1]) for b in encoded], batch_tokens):
        items = [encoded[i] for i in group]
        if any(b.spans is None for b in items):
            raise LensError(
                "every dataset item needs word spans (a word-span table) for the transcription metrics"
            )
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


def transcription_table(
    model: SpeechLM,
    dataset: Iterable[Any],
    *,
    lens: Lens | None = None,
    positions: str = "last",
    modalities: Sequence[str] | None = ("speech",),
    layers: int | Sequence[int] | None = None,
    sites: Sequence[str] = ("resid_post",),
    views: Sequence[str] = ("text", "full"),
    target_config: TargetConfig | None = None,
    ks: Sequence[int] = (1, 5, 10),
    top_k: int | None = None,
    chunk_size: int | None = None,
    token_strings: bool = True,
    progress: bool = True,
    total: int | None = None,
    batch_tokens: int | None = None,
    readout_precision: str | None = None,
) -> pd.DataFrame:
    """Current-word (transcription) and next-word ranks per word and layer over a dataset.

    Args:
        model: a ``HookedSLM``.
        dataset: any iterable of utterances: ``Speech`` / ``Text`` inputs, ``EncodedBatch``-likes,
            ``(tokens, word_spans)`` pairs or mappings with ``tokens`` and ``word_spans``. An item may hold a
            batch; rows are numbered ``utterance`` across the whole dataset.
        lens: ``LogitLens`` (default) or a ``TunedLens``.
        positions: read-out position per word (``"last"`` unit by default, ``"first"``, ``"every"``, ``"mean"``,
            or the span poolings ``"max"`` (per-token max of the logits over the span, then ranked) and
            ``"any"`` (rank = min over the span's positions; see :func:`~slm_transformerlens.lens.lens_table`)).
        modalities: which word spans to analyse (default spoken words only; ``None`` = all).
        layers, sites, views: what to read (views default: ``text`` ranks among text tokens, and ``full``).
        target_config: how words become target ids (:class:`TargetConfig`).
        ks: the top-k hit columns to add (``hit{k}`` / ``next_hit{k}``).
        top_k: top tokens stored per row (strings in ``top_tokens``); default ``max(5, max(ks))``, which
            the shuffled-target control of :func:`summarize_transcription` needs.
        chunk_size: rows per unembedding matmul (``None``: 128 on the CPU, larger on a GPU).
        token_strings: add readable ``top_tokens``.
        progress: show a tqdm progress bar.
        total: the dataset length for the progress bar when it has no ``len``.
        batch_tokens: run several items per forward pass: items are grouped by length into batches of
            at most ``batch_tokens`` padded tokens (:func:`~slm_transformerlens.lens.batching.length_batches`),
            right-padded with an attention mask. The table is the same as one item at a time (same rows,
            same order; ranks equal, probabilities within float rounding). ``None`` (default): one item
            per forward pass.
        readout_precision: ``"fp32"`` (one float32 product per chunk), ``"fast"`` (the same float32
            logits from exact split bf16/fp16 tensor-core products, for a bf16/fp16 model: ranks, hits and
            top-k ids are the fp32 read-out's except between logits within float32 rounding,
            probabilities within about 1e-6; see :mod:`~slm_transformerlens.lens.precision`),
            ``"certified"`` (exact ranks and top-k from bf16 products and rechecks, probabilities within a
            bound; :mod:`~slm_transformerlens.lens.certified`) or ``None``
            (the lens' ``readout_precision``; default ``"fp32"``; ``"fast"`` and ``"certified"`` are opt-in).

    Returns:
        One row per (utterance, word, layer, site, view) with ``utterance, batch, position, word_index,
        word, modality, n_members, layer, site, view, target_id, target_token, rank, prob, hit{k}...,
        next_word, next_target_id, next_rank, next_prob, next_hit{k}..., target_ids, next_target_ids,
        entropy, mass_{group}..., top_ids, top_probs, top_tokens`` (``target_ids``: the whole accepted set). Ranks are ``Int64`` (``<NA>`` when the word has no target in the
        view, or there is no next word), hits are nullable booleans.
    """
    lens = lens if lens is not None else LogitLens(model)
    top_k = max([5, *(int(k) for k in ks)]) if top_k is None else top_k
    vocab = model.speech_vocab
    resolver = WordTargetResolver(model.tokenizer, target_config)
    namer = TokenNamer(vocab, model.tokenizer) if token_strings else None
    layer_list = resolve_layers(layers, lens.n_layers)
    sites = check_sites(sites)
    view_masks = vocab_views(vocab, views)
    check_readout_args(view_masks, {}, top_k=top_k, d_vocab=lens.d_vocab)
    if any(int(k) < 1 for k in ks):
        raise LensError(f"ks={list(ks)}: every top-k hit threshold must be >= 1")
    device = torch.device(getattr(model.cfg, "device", "cpu") or "cpu")
    if total is None and hasattr(dataset, "__len__"):
        total = len(dataset)  # type: ignore[arg-type]

    def read_batch(batch: EncodedBatch) -> pd.DataFrame | None:
        """The rows of one encoded batch (``utterance`` = its batch row), or ``None`` without words."""
        if batch.spans is None:
            raise LensError(
                "every dataset item needs word spans (a word-span table) for the transcription metrics"
            )
        tokens = batch.tokens.to(device)
        spans = batch.spans.frame.reset_index(drop=True).copy()
        spans["next_word"] = WordSpans(spans).next_words()
        plan = plan_readouts(
            tokens, spans, mode=positions, modalities=modalities, attention_mask=batch.attention_mask
        )
        if not plan.n_rows:
            return None
        key = spans.set_index(["utterance", "word_index"])["next_word"]
        next_words = [
            _text_or_none(key.get((int(b), int(w))))
            for b, w in zip(plan.rows["batch"], plan.rows["word_index"], strict=True)
        ]
        current = [resolver(str(w)) for w in plan.rows["word"]]
        following = [None if w is None else resolver(w) for w in next_words]
        targets = {
            "current": target_tensor([list(t.ids) for t in current], plan.n_rows),
            "next": target_tensor([[] if t is None else list(t.ids) for t in following], plan.n_rows),
        }
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
            model,
            lens,
            tokens,
            plan,
            rows,
            layers=layer_list,
            sites=sites,
            views=view_masks,
            targets=targets,
            top_k=top_k,
            chunk_size=chunk_size,
            namer=namer,
            attention_mask=batch.attention_mask,
            readout_precision=readout_precision,
        )

    frames: list[pd.DataFrame] = []
    bar = tqdm(total=total, desc="lens: transcription", disable=not progress, unit="utt")
    if batch_tokens is None:
        utterance_offset = 0
        for index, item in enumerate(dataset):
            batch = _encode_item(model, item, index)
            frame = read_batch(batch)
            if frame is not None:
                frame["utterance"] += utterance_offset
                frames.append(frame)
            utterance_offset += int(batch.tokens.shape[0])
            bar.update(1)
    else:
        frames = _read_batched(model, dataset, read_batch, batch_tokens, bar)
    bar.close()
    if not frames:
        return pd.DataFrame()
    df = pd.concat(frames, ignore_index=True)
    df = df.rename(columns={"rank_current": "rank", "prob_current": "prob"})
    for prefix, column in (("hit", "rank"), ("next_hit", "rank_next")):
        for k in ks:
            df[f"{prefix}{k}"] = (df[column] < int(k)).astype("boolean")
    df = df.rename(columns={"rank_next": "next_rank", "prob_next": "next_prob"})
    first = [
        "utterance",
        "batch",
        "position",
        "word_index",
        "word",
        "modality",
        "n_members",
        "layer",
        "site",
        "view",
        "target_id",
        "target_token",
        "rank",
        "prob",
        *[f"hit{k}" for k in ks],
        "next_word",
        "next_target_id",
        "next_rank",
        "next_prob",
        *[f"next_hit{k}" for k in ks],
    ]
    df["positions"] = positions  # the read-out mode; the shuffled control depends on it
    return df[first + [c for c in df.columns if c not in first]]


def summarize_transcription(
    table: pd.DataFrame,
    *,
    ks: Sequence[int] = (1, 5, 10),
    confidence: float = 0.95,
    by: Sequence[str] = ("site", "view"),
    controls: bool = True,
    seed: int = 0,
    cluster_by: str | None = "utterance",
    n_boot: int = 1000,
    word_filter: WordFilter | None = None,
) -> pd.DataFrame:
    """Transcription rate and next-word rate per layer with their chance levels and intervals.

    Args:
        table: a :func:`transcription_table`.
        ks: the top-k rates.
        confidence: of the intervals.
        by: the grouping columns besides layer.
        controls: add ``shuffled_rate`` (each word scored against another word's targets, seed ``seed``)
            and ``prior_rate`` (a fixed ranking of the dataset's target frequencies); see
            :mod:`~slm_transformerlens.lens.controls`.
        seed: seed of the shuffled pairing and the bootstrap.
        cluster_by: ``"utterance"`` (default) or ``"word"``: add ``cluster_low`` / ``cluster_high``, a
            cluster-bootstrap interval resampling whole utterances / word types; ``None`` skips it.
        n_boot: bootstrap draws.
        word_filter: keep only content words (:class:`~slm_transformerlens.lens.controls.WordFilter`).

    Returns:
        One row per (``by``..., layer, metric, k): ``n`` (words with a target), ``hits``, ``rate``,
        ``ci_low``, ``ci_high`` (Wilson, rows taken as independent), ``confidence``, then
        ``shuffled_rate``, ``prior_rate`` and ``cluster_low``, ``cluster_high`` as requested;
        ``metric`` is ``"transcription"`` or ``"next_word"``.
    """
    if word_filter is not None:
        table = table[word_filter.keep(table).to_numpy()]
    records = []
    keys = [*by, "layer"]
    for metric, column in (("transcription", "rank"), ("next_word", "next_rank")):
        valid = table[table[column].notna()]
        for k in ks:
            hit = (valid[column] < int(k)).astype(np.int64)
            grouped = hit.groupby([valid[c] for c in keys]).agg(["sum", "count"]).reset_index()
            grouped = grouped.rename(columns={"sum": "hits", "count": "n"})
            grouped["metric"] = metric
            grouped["k"] = np.int64(k)
            records.append(grouped)
    if not records:
        return pd.DataFrame()
    out = pd.concat(records, ignore_index=True)
    out["rate"] = out["hits"] / out["n"].where(out["n"] > 0)
    out["ci_low"], out["ci_high"] = wilson_interval(out["hits"].to_numpy(), out["n"].to_numpy(), confidence)
    out["confidence"] = float(confidence)
    out = out[[*by, "layer", "metric", "k", "n", "hits", "rate", "ci_low", "ci_high", "confidence"]]
    keys = [*by, "layer", "metric", "k"]
    if controls:
        out = out.merge(chance_controls(table, ks=ks, by=by, seed=seed), on=keys, how="left")
    if cluster_by is not None:
        intervals = cluster_intervals(
            table, ks=ks, by=by, cluster_by=cluster_by, n_boot=n_boot, confidence=confidence, seed=seed
        )
        out = out.merge(intervals, on=keys, how="left")
    return out


#: Columns of :func:`summarize_transcription` that :func:`peak_layers` carries along when present.
_CONTROL_COLUMNS = ("shuffled_rate", "prior_rate", "cluster_low", "cluster_high")


def peak_layers(summary: pd.DataFrame, *, by: Sequence[str] = ("site", "view")) -> pd.DataFrame:
    """The layer where each rate peaks (first layer on ties), per (``by``..., metric, k)."""
    if summary.empty:
        return pd.DataFrame()
    groups = [*by, "metric", "k"]
    idx = summary.sort_values("layer").groupby(groups)["rate"].idxmax()
    extra = [c for c in _CONTROL_COLUMNS if c in summary.columns]
    peaks = summary.loc[
        idx.dropna().astype(int), [*groups, "layer", "rate", "ci_low", "ci_high", "n", *extra]
    ]
    return peaks.rename(columns={"layer": "peak_layer", "rate": "peak_rate"}).reset_index(drop=True)
