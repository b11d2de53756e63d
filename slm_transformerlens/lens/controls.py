"""Chance controls and honest intervals for the transcription rates of a :func:`transcription_table`.

A transcription rate cannot be read without its chance level. This module computes, from the table
alone (no second forward pass):

- the **shuffled-target control** (:func:`shuffled_control`), the chance level of every read-out: every
  word is paired (seeded permutation) with ANOTHER word of the same dataset, of a different word type
  where one exists, and scored against that partner's target set with the same read-out (same positions,
  k, view and pooling): ``hit_k = (partner targets) ∩ top_ids[:k] ≠ ∅``; for ``positions="any"`` a hit
  when the partner's set meets the top-k at ANY position of the span (the table's ``span_top_ids``).
  The mean over ``n_permutations`` seeded permutations (seeds ``seed, seed + 1, ...``) and its spread.
  It needs the stored top-k to hold at least ``k`` ids (``transcription_table(top_k >= k)``, the default);
- the **frequency prior**: the rate that ONE FIXED guess list, the dataset's own target tokens ranked by
  how many words have them, would get: ``hit_k = (word targets) ∩ (k most frequent target ids) ≠ ∅``
  (in-sample, so an upper bound for any frequency-only strategy). It is a single guess per word, so it is
  reported only for single-read-out rows (``last``, ``first``, ``mean``, ``every``); a pooled read-out
  (``max``, ``any``) gets several tries per word and is compared with the shuffled control only;
- a **content-word filter** (:class:`WordFilter`: a stop list and / or the most frequent word types);
- **cluster bootstrap** intervals that resample whole utterances (or word types) instead of treating
  every row as independent.

For the next-word metric the same is done with ``next_target_ids``. The context-only control that
needs a second forward pass (swapped audio) is in :mod:`~slm_transformerlens.lens.swap`, and heard =
rate - swapped-audio rate in :mod:`~slm_transformerlens.lens.heard`.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from slm_transformerlens.lens.base import LensError

__all__ = [
    "CLUSTER_UNITS",
    "DEFAULT_STOP_WORDS",
    "POOLED_READOUTS",
    "WordFilter",
    "chance_controls",
    "cluster_bootstrap",
    "cluster_intervals",
    "frequency_prior_hits",
    "percentile_interval",
    "shuffled_control",
    "shuffled_partners",
    "shuffled_target_hits",
    "word_type",
]

#: Read-outs that pool several positions per word (several tries): no single-guess prior for them.
POOLED_READOUTS: tuple[str, ...] = ("max", "any")

#: What a cluster bootstrap can resample: whole utterances, or word types (all rows of one word).
CLUSTER_UNITS: tuple[str, ...] = ("utterance", "word")

#: A small English stop list (function words, auxiliaries, pronouns).
DEFAULT_STOP_WORDS: frozenset[str] = frozenset(
    """a an the and or but if of to in on at by for with from as into onto over under about than then so
    that this these those there here it its it's is are was were be been being am do does did done have
    has had having i me my we us our you your he him his she her they them their who whom which what
    when where why how not no nor all any each some such can could would should will shall may might
    must very too also just only up down out off again once""".split()  # noqa: SIM905
)


def word_type(word: object) -> str:
    """The word type a surface word belongs to: lower-cased, surrounding punctuation stripped."""
    return str(word).strip(' \t\n.,;:!?"()[]').lower()


@dataclass(frozen=True)
class WordFilter:
    """Which words count as content words.

    Attributes:
        stop_words: word types to exclude (lower-case; default :data:`DEFAULT_STOP_WORDS`).
        most_frequent: also exclude the ``n`` most frequent word types of the table (ties: alphabetical).
    """

    stop_words: Collection[str] = field(default=DEFAULT_STOP_WORDS)
    most_frequent: int = 0

    def keep(self, table: pd.DataFrame) -> pd.Series:
        """Boolean mask of the table's rows whose word is a content word."""
        types = table["word"].map(word_type)
        excluded = {word_type(w) for w in self.stop_words}
        if self.most_frequent > 0:
            words = table.drop_duplicates(_word_key(table))["word"].map(word_type)
            counts = sorted(Counter(words).items(), key=lambda kv: (-kv[1], kv[0]))
            excluded |= {w for w, _ in counts[: self.most_frequent]}
        return ~types.isin(excluded)

    def describe(self) -> str:
        """One line for report headers."""
        parts = []
        if self.stop_words:
            parts.append(f"{len(set(self.stop_words))} stop words excluded")
        if self.most_frequent:
            parts.append(f"the {self.most_frequent} most frequent word types excluded")
        return ", ".join(parts) or "no words excluded"


def _word_key(table: pd.DataFrame) -> list[str]:
    return ["utterance", "word_index"] if "utterance" in table.columns else ["batch", "word_index"]


def _id_list(value: object) -> list[int]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    return [int(v) for v in value]  # type: ignore[union-attr]


def shuffled_partners(words: Sequence[str], *, seed: int = 0) -> np.ndarray:
    """For each word, the index of another word to score it against (fixed seed).

    A random permutation; a word paired with itself or with a word of the same type (:func:`word_type`)
    is re-paired with a random word of a different type when the dataset has one.
    """
    n = len(words)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    partners = rng.permutation(n)
    types = np.asarray([word_type(w) for w in words], dtype=object)
    for i in np.nonzero(types[partners] == types)[0]:
        others = np.nonzero(types != types[i])[0]
        if len(others):
            partners[i] = int(rng.choice(others))
    return partners.astype(np.int64)


def _padded(lists: Sequence[list[int]], width: int | None = None) -> np.ndarray:
    """Id lists as a ``[n, width]`` int64 array padded with -1."""
    width = max([1, *(len(x) for x in lists)]) if width is None else width
    out = np.full((len(lists), width), -1, dtype=np.int64)
    for i, ids in enumerate(lists):
        if len(ids):
            out[i, : len(ids)] = ids[:width]
    return out


def _top_array(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every stored top-k list as ``[lists, K]`` (-1 pads), the row each list belongs to, and per row the
    number of ids it stores (0: no usable top-k).

    A row read with ``positions="any"`` contributes one list per span position (``span_top_ids``; a table
    made before that column existed has none); other rows contribute their ``top_ids``. Lists are kept
    flat (no padding to the longest span), so memory grows with the positions read, not rows x longest.
    """
    any_rows = (
        (table["positions"] == "any").to_numpy()
        if "positions" in table.columns
        else np.zeros(len(table), bool)
    )
    spans = table["span_top_ids"] if "span_top_ids" in table.columns else pd.Series([None] * len(table))
    lists: list[list[int]] = []
    owner: list[int] = []
    stored = np.zeros(len(table), dtype=np.int64)
    for i, (top, span) in enumerate(zip(table["top_ids"], spans, strict=True)):
        if any_rows[i]:
            positions = [] if span is None or (isinstance(span, float) and np.isnan(span)) else list(span)
        else:
            positions = [top]
        mine = [_id_list(p) for p in positions]
        lists += mine
        owner += [i] * len(mine)
        stored[i] = min((len(p) for p in mine), default=0)
    return _padded(lists), np.asarray(owner, dtype=np.int64), stored


def _first_hit(
    tops: np.ndarray, owner: np.ndarray, targets: np.ndarray, n_rows: int, chunk: int = 8192
) -> np.ndarray:
    """Per row, the best 0-based place of one of its ``targets`` in any of its top-k lists (``K``: none)."""
    width = tops.shape[1]
    out = np.full(n_rows, width, dtype=np.int64)
    for start in range(0, len(tops), chunk):
        top, rows = tops[start : start + chunk], owner[start : start + chunk]
        tgt = targets[rows]
        found = ((top[:, :, None] == tgt[:, None, :]) & (tgt >= 0)[:, None, :]).any(-1)  # [lists, K]
        np.minimum.at(out, rows, np.where(found.any(-1), found.argmax(-1), width))
    return out


def _shuffled_hits(
    table: pd.DataFrame, ks: Sequence[int], *, metric: str, seeds: Sequence[int]
) -> dict[int, np.ndarray]:
    """Per ``k``: ``[len(seeds), rows]`` shuffled-target hits (1.0 / 0.0 / NaN), one row per permutation."""
    ids_column, rank_column = _columns(table, metric)
    key = _word_key(table)
    words = table.drop_duplicates(key)[[*key, "word", ids_column]].reset_index(drop=True)
    word_of_row = pd.MultiIndex.from_frame(words[key]).get_indexer(pd.MultiIndex.from_frame(table[key]))
    word_targets = _padded([_id_list(ids) for ids in words[ids_column]])
    tops, owner, stored = _top_array(table)
    valid = table[rank_column].notna().to_numpy() & (stored > 0)
    out = {int(k): np.full((len(seeds), len(table)), np.nan) for k in ks}
    for j, seed in enumerate(seeds):
        partners = shuffled_partners(list(words["word"]), seed=int(seed))
        targets = word_targets[partners[word_of_row]] if len(table) else word_targets[:0]
        place = _first_hit(tops, owner, targets, len(table))
        scored = valid & (targets >= 0).any(-1)
        for k in ks:
            ok = scored & (stored >= int(k))
            out[int(k)][j] = np.where(ok, (place < int(k)).astype(np.float64), np.nan)
    return out


def shuffled_target_hits(
    table: pd.DataFrame, ks: Sequence[int], *, metric: str = "transcription", seed: int = 0
) -> dict[int, np.ndarray]:
    """Shuffled-target hits per row of ``table`` and per ``k`` for ONE permutation (seed ``seed``).

    Every word (``utterance, word_index``) gets one partner word (:func:`shuffled_partners`); each of the
    word's rows (every layer, site, view) is scored against the partner's ``target_ids``
    (``next_target_ids`` for ``metric="next_word"``): a hit when one of them is in the row's top-k (for
    ``positions="any"``: in the top-k at any position of the span, from ``span_top_ids``). NaN where the
    row has no target in its view, the partner has none, fewer than ``k`` ids are stored, or an "any"
    row has no ``span_top_ids`` (a table from an older version). :func:`shuffled_control` averages many.
    """
    return {k: hits[0] for k, hits in _shuffled_hits(table, ks, metric=metric, seeds=[seed]).items()}


def _group_codes(table: pd.DataFrame, keys: Sequence[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """Group number of every row and one row of key values per group (sorted)."""
    grouped = table.groupby(list(keys), dropna=False, sort=True)
    codes = grouped.ngroup().to_numpy()
    return codes, grouped.size().reset_index()[list(keys)]


def _group_means(values: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Per group, the mean of the non-NaN values (NaN when none): ``values`` ``[..., rows]``."""
    ok = ~np.isnan(values)
    flat = values.reshape(-1, values.shape[-1])
    mask = ok.reshape(-1, values.shape[-1])
    sums = np.stack(
        [np.bincount(codes[m], weights=v[m], minlength=n_groups) for v, m in zip(flat, mask, strict=True)]
    )
    counts = np.stack([np.bincount(codes[m], minlength=n_groups) for m in mask])
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / np.where(counts > 0, counts, np.nan)
    return means.reshape(*values.shape[:-1], n_groups)


def shuffled_control(
    table: pd.DataFrame,
    *,
    ks: Sequence[int] = (1, 5, 10),
    n_permutations: int = 10,
    seed: int = 0,
    by: Sequence[str] = ("site", "view"),
) -> pd.DataFrame:
    """The shuffled-target chance level of every read-out, over several seeded permutations.

    Each permutation ``j`` (seed ``seed + j``, :func:`shuffled_partners`) pairs every word with a word of
    another type and scores the word's rows against the partner's targets with the same read-out (same
    positions, k, view and pooling; :func:`shuffled_target_hits`). Works for every read-out (``last``,
    ``first``, ``mean``, ``every``, ``max``, ``any``: an "any" row is a hit when the partner's set is in
    the top-k at ANY position of the span). No second forward pass: the table's stored top-k is re-read.

    Returns:
        One row per (``by``..., layer, metric, k): ``shuffled_rate`` (the mean over the permutations of
        the per-permutation rate), ``shuffled_sd`` (their standard deviation, ``ddof=1``; NaN for one
        permutation) and ``n_permutations``. ``metric`` is ``"transcription"`` or ``"next_word"``.

    Raises:
        LensError: ``n_permutations < 1``, or a table without the columns the control needs.
    """
    if isinstance(n_permutations, bool) or int(n_permutations) < 1:
        raise LensError(
            f"n_permutations={n_permutations!r}: the shuffled control needs at least 1 permutation (default 10)"
        )
    keys = [*by, "layer"]
    columns = [*keys, "metric", "k", "shuffled_rate", "shuffled_sd", "n_permutations"]
    if table.empty:
        return pd.DataFrame(columns=columns)
    codes, groups = _group_codes(table, keys)
    seeds = [int(seed) + j for j in range(int(n_permutations))]
    frames = []
    for metric in ("transcription", "next_word"):
        hits = _shuffled_hits(table, ks, metric=metric, seeds=seeds)
        for k in ks:
            rates = _group_means(hits[int(k)], codes, len(groups))  # [permutations, groups]
            frame = groups.copy()
            frame["metric"] = metric
            frame["k"] = np.int64(k)
            with np.errstate(invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                frame["shuffled_rate"] = np.nanmean(rates, axis=0) if len(seeds) else np.nan
                frame["shuffled_sd"] = np.nanstd(rates, axis=0, ddof=1) if len(seeds) > 1 else np.nan
            frame["n_permutations"] = np.int64(len(seeds))
            frames.append(frame)
    return pd.concat(frames, ignore_index=True)[columns]


def frequency_prior_hits(
    table: pd.DataFrame,
    ks: Sequence[int],
    *,
    metric: str = "transcription",
    ranking: Sequence[int] | None = None,
) -> dict[int, np.ndarray]:
    """Frequency-prior hits per row and per ``k``: the target set meets the ``k`` most frequent target ids.

    Target ids are counted once per word of the table (a word's whole target set); the ranking is fixed
    for the dataset (ties: smaller id first), so it is the same for every layer.

    Args:
        ranking: token ids, most frequent first, to use instead of the table's own ranking (e.g. the
            frequencies of a training text: an out-of-sample prior rather than the in-sample upper bound).
    """
    ids_column, rank_column = _columns(table, metric, need_top=False)
    if ranking is None:
        words = table.drop_duplicates(_word_key(table))
        counts: Counter[int] = Counter()
        for ids in words[ids_column]:
            counts.update(set(_id_list(ids)))
        ranking = [i for i, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    valid = table[rank_column].notna().to_numpy()
    out = {}
    for k in ks:
        top = {int(i) for i in ranking[: int(k)]}
        hits = np.asarray([float(bool(top & set(_id_list(ids)))) for ids in table[ids_column]])
        out[int(k)] = np.where(valid, hits, np.nan)
    return out


def _columns(table: pd.DataFrame, metric: str, *, need_top: bool = True) -> tuple[str, str]:
    ids_column, rank_column = {
        "transcription": ("target_ids", "rank"),
        "next_word": ("next_target_ids", "next_rank"),
    }.get(metric, (None, None))
    if ids_column is None:
        raise LensError(f"unknown metric {metric!r}; use 'transcription' or 'next_word'")
    needed = (ids_column, rank_column, "word", *(("top_ids",) if need_top else ()))
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise LensError(
            f"the table lacks columns {missing} needed for the chance controls; "
            "make it with transcription_table (this version)"
        )
    return ids_column, str(rank_column)


def chance_controls(
    table: pd.DataFrame,
    *,
    ks: Sequence[int] = (1, 5, 10),
    by: Sequence[str] = ("site", "view"),
    seed: int = 0,
    n_permutations: int = 10,
) -> pd.DataFrame:
    """The shuffled-target control (:func:`shuffled_control`) and the frequency prior per (``by``..., layer,
    metric, k).

    The chance level of every read-out is ``shuffled_rate``. ``prior_rate`` is a single-guess frequency
    prior: it is NaN for pooled read-outs (:data:`POOLED_READOUTS`, several tries per word), where a
    single guess is not like-for-like.

    Returns:
        Columns ``by..., layer, metric, k, shuffled_rate, shuffled_sd, n_permutations, prior_rate``.
    """
    keys = [*by, "layer"]
    shuffled = shuffled_control(table, ks=ks, n_permutations=n_permutations, seed=seed, by=by)
    single = ~table["positions"].isin(POOLED_READOUTS).to_numpy() if "positions" in table.columns else None
    frames = []
    for metric in ("transcription", "next_word"):
        prior = frequency_prior_hits(table, ks, metric=metric)
        for k in ks:
            frame = table[keys].copy()
            frame["prior_rate"] = prior[int(k)] if single is None else np.where(single, prior[int(k)], np.nan)
            grouped = frame.groupby(keys, dropna=False)[["prior_rate"]].mean().reset_index()
            grouped["metric"] = metric
            grouped["k"] = np.int64(k)
            frames.append(grouped)
    prior_frame = pd.concat(frames, ignore_index=True)
    return shuffled.merge(prior_frame, on=[*keys, "metric", "k"], how="outer")


def cluster_bootstrap(
    hits: np.ndarray | Sequence[float],
    clusters: np.ndarray | Sequence[object],
    *,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    draw: Literal["weights", "indices"] = "weights",
) -> tuple[float, float]:
    """Percentile interval of a rate when whole clusters (utterances, word types) are resampled.

    Each bootstrap draw takes ``C`` clusters with replacement (``C`` = number of clusters) and computes
    ``sum(hits) / sum(rows)`` over them. NaN hits are ignored; NaN interval when nothing is left.
    ``hits`` may be any per-row values (e.g. probability masses): the interval is then that of their mean.

    Args:
        draw: how the random resamples are drawn; both are the same bootstrap (a uniform multinomial over
            the clusters), from different random streams. ``"weights"``: one multinomial count vector per
            resample (as :func:`cluster_intervals`); ``"indices"``: ``C`` cluster indices per resample
            (``rng.integers``), the stream of the organism evaluation
            (:mod:`slm_transformerlens.organism.evaluate`), whose shipped numbers it reproduces.
    """
    h = np.asarray(hits, dtype=np.float64)
    valid = ~np.isnan(h)
    if not valid.any():
        return float("nan"), float("nan")
    codes, _ = pd.factorize(pd.Series(np.asarray(clusters, dtype=object)[valid]), sort=True)
    kept = codes >= 0  # rows without a cluster (NaN) are left out
    if not kept.any():
        return float("nan"), float("nan")
    codes = codes[kept]
    sums = np.bincount(codes, weights=h[valid][kept])
    counts = np.bincount(codes).astype(np.float64)
    rng = np.random.default_rng(seed)
    if draw == "indices":
        index = rng.integers(0, len(sums), size=(n_boot, len(sums)))
        return percentile_interval(sums[index].sum(1) / counts[index].sum(1), confidence)
    if draw != "weights":
        raise LensError(f"unknown bootstrap draw {draw!r}; use 'weights' or 'indices'")
    weights = rng.multinomial(len(sums), np.full(len(sums), 1 / len(sums)), size=n_boot)
    return _percentiles(weights, sums, counts, confidence)


def _percentiles(
    weights: np.ndarray, sums: np.ndarray, counts: np.ndarray, confidence: float
) -> tuple[float, float]:
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = (weights @ sums) / (weights @ counts)
    return percentile_interval(rates, confidence)


def percentile_interval(rates: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central ``confidence`` interval of the finite bootstrap ``rates`` (linear interpolation)."""
    rates = rates[np.isfinite(rates)]
    if not len(rates):
        return float("nan"), float("nan")
    alpha = round((1 - confidence) / 2, 12)  # 0.025, not 0.025000000000000022
    return float(np.quantile(rates, alpha)), float(np.quantile(rates, 1 - alpha))


def cluster_intervals(
    table: pd.DataFrame,
    *,
    ks: Sequence[int] = (1, 5, 10),
    by: Sequence[str] = ("site", "view"),
    cluster_by: str = "utterance",
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Cluster-bootstrap intervals of the transcription and next-word rates per (``by``..., layer, metric, k).

    ``cluster_by="utterance"`` resamples whole utterances, ``"word"`` whole word types. The same bootstrap
    weights are used for every layer of a ``by`` group, so curves are comparable.

    Returns:
        Columns ``by..., layer, metric, k, cluster_low, cluster_high``.
    """
    if cluster_by not in CLUSTER_UNITS:
        raise LensError(f"unknown cluster unit {cluster_by!r}; choose one of {list(CLUSTER_UNITS)}")
    cluster = table["utterance"] if cluster_by == "utterance" else table["word"].map(word_type)
    records = []
    groups = table.groupby(list(by), dropna=False) if by else [((), table)]
    for group_key, part in groups:
        universe = pd.Index(pd.unique(cluster.loc[part.index]))
        weights = np.random.default_rng(seed).multinomial(
            len(universe), np.full(len(universe), 1 / len(universe)), size=n_boot
        )
        codes = universe.get_indexer(cluster.loc[part.index])
        for metric, column in (("transcription", "rank"), ("next_word", "next_rank")):
            ranks = part[column].to_numpy(dtype=np.float64, na_value=np.nan)
            valid = ~np.isnan(ranks)
            for layer, idx in part.groupby("layer").indices.items():
                sel = idx[valid[idx]]
                counts = np.bincount(codes[sel], minlength=len(universe)).astype(np.float64)
                for k in ks:
                    sums = np.bincount(codes[sel], weights=(ranks[sel] < k), minlength=len(universe))
                    low, high = _percentiles(weights, sums, counts, confidence)
                    key = group_key if isinstance(group_key, tuple) else (group_key,)
                    records.append((*key, layer, metric, np.int64(k), low, high))
    return pd.DataFrame.from_records(
        records, columns=[*by, "layer", "metric", "k", "cluster_low", "cluster_high"]
    )
