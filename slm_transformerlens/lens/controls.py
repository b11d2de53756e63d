"""Chance controls and honest intervals for the transcription rates of a :func:`transcription_table`.

A transcription rate cannot be read without its chance level. This module computes, from the table
alone (no second forward pass):

- the **shuffled-target control**: every word is paired (fixed seed) with ANOTHER word of the same
  dataset, of a different word type where one exists, and scored against that partner's target set
  with the same read-out: ``hit_k = (partner targets) ∩ top_ids[:k] ≠ ∅``. It needs the table's
  ``top_ids`` to hold at least ``k`` ids (``transcription_table(top_k >= k)``, the default);
- the **frequency prior**: the rate that a FIXED ranking of the dataset's own target tokens by how
  many words have them would get: ``hit_k = (word targets) ∩ (k most frequent target ids) ≠ ∅``
  (in-sample, so an upper bound for any frequency-only strategy);
- a **content-word filter** (:class:`WordFilter`: a stop list and / or the most frequent word types);
- **cluster bootstrap** intervals that resample whole utterances (or word types) instead of treating
  every row as independent.

For the next-word metric the same is done with ``next_target_ids``.
"""

from __future__ import annotations

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
    "WordFilter",
    "chance_controls",
    "cluster_bootstrap",
    "cluster_intervals",
    "frequency_prior_hits",
    "shuffled_partners",
    "shuffled_target_hits",
    "word_type",
]

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


def _hits_in_top(top_ids: pd.Series, target_sets: Sequence[list[int]], k: int) -> np.ndarray:
    """1.0 where a target set meets ``top_ids[:k]``, 0.0 where not, NaN where fewer than ``k`` ids are stored."""
    out = np.full(len(top_ids), np.nan)
    for i, (top, targets) in enumerate(zip(top_ids, target_sets, strict=True)):
        if targets and len(top) >= k:
            out[i] = float(bool(set(targets) & {int(t) for t in top[:k]}))
    return out


def shuffled_target_hits(
    table: pd.DataFrame, ks: Sequence[int], *, metric: str = "transcription", seed: int = 0
) -> dict[int, np.ndarray]:
    """Shuffled-target hits per row of ``table`` and per ``k`` (NaN where the row has no target).

    Every word (``utterance, word_index``) gets one partner word (:func:`shuffled_partners`); each of the
    word's rows (every layer, site, view) is scored against the partner's ``target_ids``
    (``next_target_ids`` for ``metric="next_word"``): a hit when one of them is in the row's top-k.

    Rows read with ``positions="any"`` get NaN: their stored top-k is the span's LAST position, while
    their rank is the best over every position, so a control from that top-k would sit below the true
    chance level of an any-position hit (which needs each position's top-k). Use ``positions="max"``
    (ranks and top-k both from the pooled logits) when the shuffled control matters.
    """
    ids_column, rank_column = _columns(table, metric)
    key = _word_key(table)
    words = table.drop_duplicates(key)[[*key, "word", ids_column]].reset_index(drop=True)
    partners = shuffled_partners(list(words["word"]), seed=seed)
    partner_ids = {
        tuple(int(v) for v in row[: len(key)]): _id_list(words.at[int(partners[i]), ids_column])
        for i, row in enumerate(words[key].itertuples(index=False))
    }
    sets = [partner_ids[tuple(int(v) for v in row)] for row in table[key].itertuples(index=False)]
    valid = table[rank_column].notna().to_numpy()
    if "positions" in table.columns:
        valid = valid & (table["positions"] != "any").to_numpy()
    out = {}
    for k in ks:
        hits = _hits_in_top(table["top_ids"], sets, int(k))
        out[int(k)] = np.where(valid, hits, np.nan)
    return out


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
) -> pd.DataFrame:
    """Shuffled-target and frequency-prior rates per (``by``..., layer, metric, k).

    Returns:
        Columns ``by..., layer, metric, k, shuffled_rate, prior_rate`` (NaN where ``top_ids`` holds fewer
        than ``k`` ids, for the shuffled control).
    """
    keys = [*by, "layer"]
    frames = []
    for metric in ("transcription", "next_word"):
        shuffled = shuffled_target_hits(table, ks, metric=metric, seed=seed)
        prior = frequency_prior_hits(table, ks, metric=metric)
        for k in ks:
            frame = table[keys].copy()
            frame["shuffled_rate"] = shuffled[int(k)]
            frame["prior_rate"] = prior[int(k)]
            grouped = frame.groupby(keys, dropna=False)[["shuffled_rate", "prior_rate"]].mean().reset_index()
            grouped["metric"] = metric
            grouped["k"] = np.int64(k)
            frames.append(grouped)
    return pd.concat(frames, ignore_index=True)[[*keys, "metric", "k", "shuffled_rate", "prior_rate"]]


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
        return _quantiles(sums[index].sum(1) / counts[index].sum(1), confidence)
    if draw != "weights":
        raise LensError(f"unknown bootstrap draw {draw!r}; use 'weights' or 'indices'")
    weights = rng.multinomial(len(sums), np.full(len(sums), 1 / len(sums)), size=n_boot)
    return _percentiles(weights, sums, counts, confidence)


def _percentiles(
    weights: np.ndarray, sums: np.ndarray, counts: np.ndarray, confidence: float
) -> tuple[float, float]:
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = (weights @ sums) / (weights @ counts)
    return _quantiles(rates, confidence)


def _quantiles(rates: np.ndarray, confidence: float) -> tuple[float, float]:
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
