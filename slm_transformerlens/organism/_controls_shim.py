"""TEMPORARY stand-in for ``lens.controls.swapped_audio_table`` / ``heard_rates`` (branch ``controls``).

Same names and semantics as the controls issue (17) specifies; deleted once ``controls`` is merged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["heard_rates", "swap_audio", "swapped_audio_table"]


def swap_audio(model: Any, dataset: Sequence[Any], *, seed: int = 0) -> tuple[list[Any], pd.DataFrame]:
    """One variant per spoken word: the utterance's units up to the word, then the units of another spoken
    word (another type, another utterance, the closest unit count, uniform among ties). The variant holds
    only the swapped word's alignment; ``keys`` maps variant -> (utterance, word_index, word)."""
    from slm_transformerlens.speech.inputs import Speech

    del model
    pool = []
    for u, speech in enumerate(dataset):
        ranges = speech.word_unit_ranges(on_empty="warn")
        for i, (w, (lo, hi)) in enumerate(zip(speech.words, ranges, strict=True)):
            if hi > lo:
                pool.append((u, i, w.word.strip().lower(), lo, hi))
    lengths = np.asarray([hi - lo for *_, lo, hi in pool])
    utts = np.asarray([p[0] for p in pool])
    types = np.asarray([p[2] for p in pool], dtype=object)
    rng = np.random.default_rng(seed)
    variants, keys = [], []
    for u, i, word, lo, hi in pool:
        ok = (utts != u) & (types != word)
        diff = np.where(ok, np.abs(lengths - (hi - lo)), np.iinfo(np.int64).max)
        choices = np.flatnonzero(diff == diff.min())
        du, _, _, dlo, dhi = pool[int(rng.choice(choices))]
        donor, speech = dataset[du], dataset[u]
        units = tuple(speech.units[:lo]) + tuple(donor.units[dlo:dhi])
        durations = tuple(speech.durations[:lo]) + tuple(donor.durations[dlo:dhi])
        frame = speech.frame_duration
        start = (speech.frame_offset + sum(speech.durations[:lo])) * frame
        end = (speech.frame_offset + sum(durations)) * frame
        variants.append(
            Speech(
                units,
                durations,
                words=[(speech.words[i].word, start + 1e-6, end)],
                frame_offset=speech.frame_offset,
                frame_duration=frame,
            )
        )
        keys.append((u, i))
    return variants, pd.DataFrame(keys, columns=["utterance", "word_index"])


def swapped_audio_table(
    model: Any, dataset: Sequence[Any], *, seed: int = 0, **transcription_table_kwargs: Any
) -> pd.DataFrame:
    """The transcription table of :func:`swap_audio`'s variants, rows keyed like the original table's
    (``utterance``, ``word_index``), targets the ORIGINAL words."""
    from slm_transformerlens.lens import transcription_table

    variants, keys = swap_audio(model, dataset, seed=seed)
    table = transcription_table(model, variants, **transcription_table_kwargs)
    table = table[table["word_index"] == 0].copy()
    mapped = keys.iloc[table["utterance"].to_numpy()]
    table["utterance"] = mapped["utterance"].to_numpy()
    table["word_index"] = mapped["word_index"].to_numpy()
    return table.reset_index(drop=True)


def heard_rates(
    table: pd.DataFrame,
    swapped_table: pd.DataFrame,
    *,
    ks: Sequence[int] = (10,),
    by: Sequence[str] = ("site", "view"),
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """rate, swapped_rate, heard = rate - swapped_rate per (by..., layer, k), paired cluster bootstrap by
    utterance over the words present in both tables."""
    keys = ["utterance", "word_index", *by, "layer"]
    records = []
    for k in ks:
        col = f"hit{k}"
        a = table[[*keys, col]].dropna(subset=[col])
        b = swapped_table[[*keys, col]].dropna(subset=[col])
        both = a.merge(b, on=keys, suffixes=("", "_swapped"))
        groups = both.groupby(list(by), dropna=False) if by else [((), both)]
        for group_key, part in groups:
            utt_codes, universe = pd.factorize(part["utterance"], sort=True)
            rng = np.random.default_rng(seed)
            weights = rng.multinomial(len(universe), np.full(len(universe), 1 / len(universe)), size=n_boot)
            for layer, g in part.groupby("layer"):
                codes = utt_codes[part["layer"].to_numpy() == layer]
                h = g[col].astype(float).to_numpy()
                s = g[col + "_swapped"].astype(float).to_numpy()
                sums_h = np.bincount(codes, weights=h, minlength=len(universe))
                sums_s = np.bincount(codes, weights=s, minlength=len(universe))
                counts = np.bincount(codes, minlength=len(universe)).astype(float)
                with np.errstate(invalid="ignore", divide="ignore"):
                    boot = (weights @ (sums_h - sums_s)) / (weights @ counts)
                boot = boot[np.isfinite(boot)]
                alpha = (1 - confidence) / 2
                gk = group_key if isinstance(group_key, tuple) else (group_key,)
                records.append(
                    dict(zip(by, gk, strict=False))
                    | {
                        "layer": int(layer),
                        "k": int(k),
                        "n": len(g),
                        "rate": float(h.mean()),
                        "swapped_rate": float(s.mean()),
                        "heard": float(h.mean() - s.mean()),
                        "heard_low": float(np.quantile(boot, alpha)),
                        "heard_high": float(np.quantile(boot, 1 - alpha)),
                    }
                )
    return pd.DataFrame(records)
