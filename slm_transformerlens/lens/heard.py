"""Heard = the rate on the real audio minus the rate when each word's audio is swapped for another word's.

With the audio swapped (:mod:`~slm_transformerlens.lens.swap`) a word's ORIGINAL target can only be read
out from its context (the words before it, the text, the layout), so the swapped-audio rate is what
context alone gives, and ``heard = rate - swapped_rate`` is what the word's own audio adds.
:func:`heard_rates` computes it per (site, view, layer, metric, k) with a PAIRED cluster bootstrap (the
same resampled utterances, or word types, for both tables); :func:`heard_peak` finds the layer where heard
peaks and :func:`heard_headline` says it in one line.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from slm_transformerlens.lens.base import LensError
from slm_transformerlens.lens.controls import percentile_interval, word_type

__all__ = ["HEARD_COLUMNS", "heard_headline", "heard_peak", "heard_rates"]

#: The columns :func:`heard_rates` adds beside the keys.
HEARD_COLUMNS: tuple[str, ...] = (
    "n",
    "rate",
    "swapped_rate",
    "heard",
    "heard_low",
    "heard_high",
    "heard_low_type",
    "heard_high_type",
)

_METRICS = (("transcription", "rank"), ("next_word", "next_rank"))


def _check(table: pd.DataFrame, name: str, by: Sequence[str]) -> None:
    needed = ["utterance", "word_index", "word", "layer", "rank", "next_rank", *by]
    missing = [c for c in needed if c not in table.columns]
    if table.empty or missing:
        raise LensError(
            f"the {name} has {'no rows' if table.empty else f'no columns {missing}'}: heard_rates needs two "
            "transcription_table results (the table, and swapped_audio_table on the same data and settings)"
        )


def _paired_interval(
    weights: np.ndarray,
    sums: tuple[np.ndarray, np.ndarray],
    counts: tuple[np.ndarray, np.ndarray],
    confidence: float,
) -> tuple[float, float]:
    """Percentile interval of ``rate - swapped_rate`` when both use the SAME resampled clusters."""
    with np.errstate(invalid="ignore", divide="ignore"):
        diff = (weights @ sums[0]) / (weights @ counts[0]) - (weights @ sums[1]) / (weights @ counts[1])
    return percentile_interval(diff, confidence)


def heard_rates(
    table: pd.DataFrame,
    swapped_table: pd.DataFrame,
    *,
    ks: Sequence[int] = (1, 5, 10),
    by: Sequence[str] = ("site", "view"),
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Rate, swapped-audio rate and heard = their difference, per (``by``..., layer, metric, k).

    Args:
        table: a :func:`~slm_transformerlens.lens.transcription_table`.
        swapped_table: :func:`~slm_transformerlens.lens.swapped_audio_table` of the same data with the same
            settings (its rows keep the original words, so the ORIGINAL target is scored).
        ks: the top-k rates.
        by: the grouping columns besides layer.
        n_boot: bootstrap draws; confidence: of the intervals; seed: of the bootstrap.

    Returns:
        Columns ``by..., layer, metric, k`` and :data:`HEARD_COLUMNS`: ``n`` (rows with a target),
        ``rate``, ``swapped_rate``, ``heard = rate - swapped_rate``, ``heard_low`` / ``heard_high`` (paired
        cluster bootstrap over utterances: each draw resamples utterances once and recomputes BOTH rates
        on them) and ``heard_low_type`` / ``heard_high_type`` (the same over word types).

    Raises:
        LensError: an empty table, missing columns, or tables of different words.
    """
    _check(table, "table", by)
    _check(swapped_table, "swapped table", by)
    words = [
        set(map(tuple, t[["utterance", "word_index"]].drop_duplicates().to_numpy().tolist()))
        for t in (table, swapped_table)
    ]
    if words[0] != words[1]:
        raise LensError(
            f"the swapped table has other words than the table ({len(words[1] ^ words[0])} differ): make it with "
            "swapped_audio_table on the same dataset and the same settings"
        )
    keys = [*by, "layer"]
    both = pd.concat([table.assign(_swapped=0), swapped_table.assign(_swapped=1)], ignore_index=True)
    records = []
    groups = both.groupby(list(by), dropna=False) if by else [((), both)]
    for group_key, part in groups:
        draws = {}
        for unit, cluster in (("", part["utterance"]), ("_type", part["word"].map(word_type))):
            codes, universe = pd.factorize(cluster, sort=True)
            weights = np.random.default_rng(seed).multinomial(
                len(universe), np.full(len(universe), 1 / len(universe)), size=n_boot
            )
            draws[unit] = (codes, len(universe), weights)
        swapped = part["_swapped"].to_numpy()
        for metric, column in _METRICS:
            ranks = part[column].to_numpy(dtype=np.float64, na_value=np.nan)
            valid = ~np.isnan(ranks)
            for layer, idx in part.groupby("layer").indices.items():
                sides = [idx[valid[idx] & (swapped[idx] == s)] for s in (0, 1)]
                for k in ks:
                    hit = ranks < int(k)
                    rate = [float(hit[s].mean()) if len(s) else np.nan for s in sides]
                    record = {
                        **dict(
                            zip(by, group_key if isinstance(group_key, tuple) else (group_key,), strict=True)
                        )
                    }
                    record.update(layer=layer, metric=metric, k=np.int64(k), n=len(sides[0]))
                    record.update(rate=rate[0], swapped_rate=rate[1], heard=rate[0] - rate[1])
                    for unit, (codes, n_clusters, weights) in draws.items():
                        sums = tuple(
                            np.bincount(codes[s], weights=hit[s], minlength=n_clusters) for s in sides
                        )
                        counts = tuple(
                            np.bincount(codes[s], minlength=n_clusters).astype(np.float64) for s in sides
                        )
                        low, high = _paired_interval(weights, sums, counts, confidence)  # type: ignore[arg-type]
                        record[f"heard_low{unit}"], record[f"heard_high{unit}"] = low, high
                    records.append(record)
    out = pd.DataFrame.from_records(records, columns=[*keys, "metric", "k", *HEARD_COLUMNS])
    return out.sort_values([*keys, "metric", "k"], kind="stable").reset_index(drop=True)


def _clears(rows: pd.DataFrame) -> pd.Series:
    """Heard's utterance interval lies above 0 and, when given, so does its word-type interval."""
    clears = rows["heard_low"] > 0
    if "heard_low_type" in rows.columns:
        clears &= rows["heard_low_type"] > 0
    return clears


def heard_peak(
    heard: pd.DataFrame,
    *,
    by: Sequence[str] = ("site", "view"),
    metric: str | None = "transcription",
    k: int | None = None,
) -> pd.DataFrame:
    """The layer where heard peaks (first layer on ties), per (``by``..., metric, k), with its interval.

    Returns:
        Columns ``by..., metric, k, peak_layer, heard, heard_low, heard_high, rate, swapped_rate, n``
        (``heard_low_type``, ``heard_high_type`` when present) and ``clears``: the utterance-bootstrap
        interval lies above 0 AND, when present, so does the word-type one (an effect carried by a few word
        types, e.g. a model that by chance reads one type's fixed units, does not generalise over words).
    """
    rows = heard
    if metric is not None:
        rows = rows[rows["metric"] == metric]
    if k is not None:
        rows = rows[rows["k"] == int(k)]
    columns = [
        *by,
        "metric",
        "k",
        "peak_layer",
        "heard",
        "heard_low",
        "heard_high",
        "rate",
        "swapped_rate",
        "n",
    ]
    columns += [c for c in ("heard_low_type", "heard_high_type") if c in heard.columns]
    rows = rows.dropna(subset=["heard"])
    if rows.empty:
        return pd.DataFrame(columns=[*columns, "clears"])
    idx = (
        rows.sort_values("layer", kind="stable").groupby([*by, "metric", "k"], dropna=False)["heard"].idxmax()
    )
    peaks = rows.loc[idx.to_numpy()].rename(columns={"layer": "peak_layer"})[columns].reset_index(drop=True)
    peaks["clears"] = _clears(peaks)
    return peaks


def heard_headline(
    heard: pd.DataFrame,
    *,
    k: int,
    view: str = "text",
    site: str | None = None,
    modality: str | None = "speech",
) -> str:
    """One line for the top of a report: where heard (transcription, top-``k``, ``view``) is above context.

    ``heard`` is a :func:`heard_rates` frame or a summary with its columns; with a ``modality`` column only
    that modality's rows count (default spoken words). ``"heard above context: +0.123 at layer 4 [+0.080,
    +0.170] (utterance bootstrap; word types [...]; ...)"`` for the layer with the largest heard among those
    that clear (both intervals above 0, see :func:`heard_peak`); else it says in plain words that no layer
    clears, with the numbers of the layer where heard is largest.
    """
    rows = heard[(heard["metric"] == "transcription") & (heard["k"] == int(k))]
    for column, value in (("view", view), ("site", site), ("modality", modality)):
        if value is not None and column in rows.columns:
            rows = rows[rows[column] == value]
    rows = rows.dropna(subset=["heard"])
    if rows.empty:
        return f"heard above context: not measured (no top-{k} rows in the {view} view)"
    clears = _clears(rows)
    pool = rows[clears] if bool(clears.any()) else rows
    best = pool.sort_values(["heard", "layer"], ascending=[False, True], kind="stable").iloc[0]
    types = (
        f"; word types [{best['heard_low_type']:+.3f}, {best['heard_high_type']:+.3f}]"
        if "heard_low_type" in rows.columns
        else ""
    )
    numbers = (
        f"{best['heard']:+.3f} at layer {int(best['layer'])} [{best['heard_low']:+.3f}, {best['heard_high']:+.3f}] "
        f"(utterance bootstrap{types}; rate {best['rate']:.3f}, swapped audio {best['swapped_rate']:.3f}, "
        f"n={int(best['n'])}, top-{k}, {view} view)"
    )
    if bool(clears.any()):
        return f"heard above context: {numbers}"
    return (
        "heard above context: no layer clears (at no layer do the utterance and word-type intervals both lie "
        f"above 0: context alone, the swapped-audio control, explains the rate); largest {numbers}"
    )
