"""Heard above context: the organism's transcription minus what context alone gives (swapped audio).

The protocol (fixed before any new result was looked at; issues 17 and 21):

- data: the held-out utterances of a data directory, spoken by its held-out voice as bare units;
- read-out: logit lens at ``resid_post`` of every block, text view (ranks among text tokens), top-10, at
  ``positions`` ``"any"`` (the target at any unit of the word's span; the headline), ``"max"`` (per-token
  max of the logits over the span) or ``"last"`` (the span's last unit);
- words: content words only (:func:`~slm_transformerlens.organism.corpus.is_content_word`);
- control: swapped audio (:func:`~slm_transformerlens.lens.controls.swapped_audio_table`): each spoken
  word's units replaced by another spoken word's (another type, another utterance, similar unit count),
  context unchanged, the ORIGINAL target read at the swapped span;
- ``heard = rate - swapped_rate`` per layer with a 95% paired cluster bootstrap by utterance
  (:func:`~slm_transformerlens.lens.controls.heard_rates`, 1,000 resamples, seed 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from slm_transformerlens.organism._controls_shim import heard_rates, swapped_audio_table
from slm_transformerlens.organism.corpus import is_content_word

__all__ = ["HEARD_READOUTS", "K", "acceptance", "heard_curves"]

K = 10
#: The read-outs measured; ``"any"`` is the headline.
HEARD_READOUTS: tuple[str, ...] = ("any", "max", "last")


def _content(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["word"].map(lambda w: isinstance(w, str) and is_content_word(w))]


def heard_curves(
    model: Any,
    dataset: Sequence[Any],
    *,
    readouts: Sequence[str] = HEARD_READOUTS,
    seed: int = 0,
    n_boot: int = 1000,
) -> pd.DataFrame:
    """Per read-out and layer: ``rate``, ``swapped_rate``, ``heard`` and its 95% paired interval
    (``heard_low``, ``heard_high``), ``n`` content words, for ``model`` on ``dataset`` (``Speech`` items
    with word alignments)."""
    frames = []
    for positions in readouts:
        kwargs = {
            "positions": positions,
            "views": ("text",),
            "ks": (K,),
            "top_k": K,
            "token_strings": False,
            "progress": False,
            "batch_tokens": 8192,
        }
        from slm_transformerlens.lens import transcription_table

        table = _content(transcription_table(model, dataset, **kwargs))
        swapped = _content(swapped_audio_table(model, dataset, seed=seed, **kwargs))
        rates = heard_rates(table, swapped, ks=(K,), by=("view",), n_boot=n_boot, confidence=0.95, seed=seed)
        frames.append(rates.assign(readout=positions))
    return pd.concat(frames, ignore_index=True)


def acceptance(
    main: pd.DataFrame, baselines: dict[str, pd.DataFrame], *, readout: str = "any"
) -> dict[str, Any]:
    """Issue 21's criterion on one test set: at some layer strictly between the first and the last, main's
    heard lower bound is above 0 and above every baseline's best heard (any layer)."""
    m = main[main["readout"] == readout].sort_values("layer")
    inner = m.iloc[1:-1]
    best = {name: float(b[b["readout"] == readout]["heard"].max()) for name, b in baselines.items()}
    bar = max([0.0, *best.values()])
    layers = [int(r.layer) for r in inner.itertuples() if r.heard_low > bar]
    return {"holds": bool(layers), "layers": layers, "baseline_best": best, "bar": bar}
