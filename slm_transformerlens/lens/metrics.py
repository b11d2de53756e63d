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

from collections.abc import Iterable, Sequence
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from slm_transformerlens.lens.base import Lens, LensError, check_sites, resolve_layers
from slm_transformerlens.lens.controls import WordFilter, chance_controls, cluster_intervals
from slm_transformerlens.lens.heard import heard_rates
from slm_transformerlens.lens.logit_lens import LogitLens
from slm_transformerlens.lens.readout import TokenNamer, check_readout_args, vocab_views
from slm_transformerlens.lens.table_rows import BatchRows, finish_table, read_dataset
from slm_transformerlens.lens.targets import TargetConfig, WordTargetResolver
from slm_transformerlens.protocols import SpeechLM

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
            probabilities within about 1e-6; see :mod:`~slm_transformerlens.lens.precision`) or ``None``
            (the lens' ``readout_precision``; default ``"fp32"``; ``"fast"`` is opt-in).

    Returns:
        One row per (utterance, word, layer, site, view) with ``utterance, batch, position, word_index,
        word, modality, n_members, layer, site, view, target_id, target_token, rank, prob, hit{k}...,
        next_word, next_target_id, next_rank, next_prob, next_hit{k}..., target_ids, next_target_ids,
        entropy, top_ids, top_probs, top_tokens, [span_top_ids], mass_{group}..., positions``
        (``target_ids``: the whole accepted set; ``span_top_ids``, ``positions="any"`` only: each span
        position's top-k ids). Ranks are ``Int64`` (``<NA>`` when the word has no target in the view, or
        there is no next word), hits are nullable booleans. No word of the modalities: an empty table with
        these columns (rows are built by :mod:`~slm_transformerlens.lens.table_rows`).
    """
    lens = lens if lens is not None else LogitLens(model)
    top_k = max([5, *(int(k) for k in ks)]) if top_k is None else top_k
    view_masks = vocab_views(model.speech_vocab, views)
    check_readout_args(view_masks, {}, top_k=top_k, d_vocab=lens.d_vocab)
    if any(int(k) < 1 for k in ks):
        raise LensError(f"ks={list(ks)}: every top-k hit threshold must be >= 1")
    read_batch = BatchRows(
        model,
        lens,
        WordTargetResolver(model.tokenizer, target_config),
        TokenNamer(model.speech_vocab, model.tokenizer) if token_strings else None,
        positions,
        modalities,
        resolve_layers(layers, lens.n_layers),
        check_sites(sites),
        view_masks,
        top_k,
        chunk_size,
        readout_precision,
    )
    frames = read_dataset(
        model, dataset, read_batch, batch_tokens=batch_tokens, total=total, progress=progress
    )
    names = model.speech_vocab.group_names
    return finish_table(frames, ks, positions=positions, group_names=names, token_strings=token_strings)


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
    swapped: pd.DataFrame | None = None,
    n_permutations: int = 10,
) -> pd.DataFrame:
    """Transcription rate and next-word rate per layer with their chance levels and intervals.

    The chance level of every read-out is the shuffled-target control (``shuffled_rate``: the same
    read-out scored against other words' targets). ``prior_rate`` is a single fixed guess list (a
    frequency prior): it is given for single read-outs only and is NaN for the pooled ones (``max``,
    ``any``), which get several tries per word. With ``swapped`` (the swapped-audio table) the rate that
    context alone gives is beside it, and ``heard = rate - swapped_rate`` with its paired intervals.

    Args:
        table: a :func:`transcription_table`.
        ks: the top-k rates.
        confidence: of the intervals.
        by: the grouping columns besides layer.
        controls: add ``shuffled_rate`` / ``shuffled_sd`` / ``n_permutations`` (each word scored against
            another word's targets; mean and spread over ``n_permutations`` seeded permutations, see
            :func:`~slm_transformerlens.lens.controls.shuffled_control`) and ``prior_rate`` (the frequency
            prior; NaN for pooled read-outs).
        seed: seed of the shuffled pairings (``seed``, ``seed + 1``, ...) and the bootstraps.
        cluster_by: ``"utterance"`` (default) or ``"word"``: add ``cluster_low`` / ``cluster_high``, a
            cluster-bootstrap interval resampling whole utterances / word types; ``None`` skips it.
        n_boot: bootstrap draws.
        word_filter: keep only content words (:class:`~slm_transformerlens.lens.controls.WordFilter`).
        swapped: :func:`~slm_transformerlens.lens.swap.swapped_audio_table` of the same data and settings:
            adds ``swapped_rate``, ``heard``, ``heard_low`` / ``heard_high`` (paired utterance bootstrap) and
            ``heard_low_type`` / ``heard_high_type`` (paired word-type bootstrap), see
            :func:`~slm_transformerlens.lens.heard.heard_rates`.
        n_permutations: permutations of the shuffled control (default 10).

    Returns:
        One row per (``by``..., layer, metric, k): ``n`` (words with a target), ``hits``, ``rate``,
        ``ci_low``, ``ci_high`` (Wilson, rows taken as independent), ``confidence``, then the controls and
        intervals requested above; ``metric`` is ``"transcription"`` or ``"next_word"``.

    Raises:
        LensError: a table without rows or without the transcription table's columns.
    """
    missing = [c for c in ("rank", "next_rank", "layer", "word", *by) if c not in table.columns]
    if table.empty or missing:
        raise LensError(
            "nothing to summarise: "
            + (f"the table lacks columns {missing}" if missing else "the table has no rows")
            + " (no word of the requested modalities was read?); pass a non-empty transcription_table"
        )
    if word_filter is not None:
        table = table[word_filter.keep(table).to_numpy()]
        if swapped is not None:
            swapped = swapped[word_filter.keep(swapped).to_numpy()]
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
        chance = chance_controls(table, ks=ks, by=by, seed=seed, n_permutations=n_permutations)
        out = out.merge(chance, on=keys, how="left")
    if swapped is not None:
        heard = heard_rates(table, swapped, ks=ks, by=by, n_boot=n_boot, confidence=confidence, seed=seed)
        out = out.merge(heard.drop(columns=["n", "rate"]), on=keys, how="left")
    if cluster_by is not None:
        intervals = cluster_intervals(
            table, ks=ks, by=by, cluster_by=cluster_by, n_boot=n_boot, confidence=confidence, seed=seed
        )
        out = out.merge(intervals, on=keys, how="left")
    return out


#: Columns of :func:`summarize_transcription` that :func:`peak_layers` carries along when present.
_CONTROL_COLUMNS = (
    "shuffled_rate",
    "shuffled_sd",
    "prior_rate",
    "cluster_low",
    "cluster_high",
    "swapped_rate",
    "heard",
    "heard_low",
    "heard_high",
)


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
