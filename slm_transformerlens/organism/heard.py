"""Heard above context: the organism's transcription minus what context alone gives (swapped audio).

The protocol (fixed before any new result was looked at; issues 17 and 21):

- data: the held-out utterances of a data directory, spoken by its held-out voice as bare units;
- read-out: logit lens at ``resid_post`` of every block, text view (ranks among text tokens), top-10, at
  ``positions`` ``"any"`` (the target at any unit of the word's span; the headline), ``"max"`` (per-token
  max of the logits over the span) or ``"last"`` (the span's last unit);
- words: content words only (:func:`~slm_transformerlens.organism.corpus.is_content_word`);
- control: swapped audio, context unchanged. The utterances are ALL speech, so swapping every spoken word
  at once (what :func:`~slm_transformerlens.lens.controls.swap_audio` does to an item) would swap each
  word's context too. Each content word therefore gets its own item: the utterance's tokens up to the end
  of that word, with only that word in the span table, and
  :func:`~slm_transformerlens.lens.controls.swapped_audio_table` swaps that word alone (donor: a spoken
  word of another type from another item, the closest unit count; another item may be another content
  word of the same sentence) and scores its ORIGINAL target;
- ``heard = rate - swapped_rate`` per layer with a 95% paired cluster bootstrap by utterance
  (:func:`~slm_transformerlens.lens.controls.heard_rates`, 1,000 resamples, seed 0; ``heard_low_type``
  / ``heard_high_type``: the same by word type).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from slm_transformerlens.lens import heard_rates, shuffled_control, swap_audio, swapped_audio_table
from slm_transformerlens.organism.corpus import is_content_word

__all__ = ["HEARD_READOUTS", "K", "acceptance", "heard_curves"]

K = 10
#: The read-outs measured; ``"any"`` is the headline.
HEARD_READOUTS: tuple[str, ...] = ("any", "max", "last")


def _content(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["word"].map(lambda w: isinstance(w, str) and is_content_word(w))]


def _one_word_items(batches: Sequence[Any]) -> tuple[list[Any], np.ndarray]:
    """One item per content word that owns tokens: its utterance's tokens up to the word's end, only that
    word in the span table. Also the original utterance of each item."""
    from slm_transformerlens.spans import EncodedBatch

    items, owners = [], []
    for u, batch in enumerate(batches):
        spans = batch.word_spans
        for index in spans.index:
            row = spans.loc[[index]]
            start, stop = int(row["start"].iat[0]), int(row["stop"].iat[0])
            if stop <= start or not is_content_word(str(row["word"].iat[0])):
                continue
            items.append(EncodedBatch(batch.tokens[:, :stop], None, row.assign(utterance=0)))
            owners.append(u)
    return items, np.asarray(owners, dtype=np.int64)


def heard_curves(
    model: Any,
    dataset: Sequence[Any],
    *,
    readouts: Sequence[str] = HEARD_READOUTS,
    seed: int = 0,
    n_boot: int = 1000,
) -> pd.DataFrame:
    """Per read-out and layer: ``rate``, ``swapped_rate``, ``heard`` and its 95% paired interval
    (``heard_low``, ``heard_high``; ``heard_low_type`` / ``heard_high_type`` by word type), ``n`` content
    words, and the shuffled-target control of the same read-out (``shuffled_rate``, ``shuffled_sd`` over 10
    permutations), for ``model`` on ``dataset`` (``Speech`` items with word alignments)."""
    from slm_transformerlens.lens import transcription_table
    from slm_transformerlens.speech.interleave import encode_utterances

    with warnings.catch_warnings():  # words shorter than a frame own no unit: left out, as in the table
        warnings.simplefilter("ignore")
        batches = [
            encode_utterances([[s]], model.speech_vocab, model.tokenizer, on_empty_word="warn")
            for s in dataset
        ]
    items, owners = _one_word_items(batches)
    swapped_items = swap_audio(model, items, seed=seed)  # one swap (deterministic) for every read-out
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
        table = _content(transcription_table(model, batches, **kwargs))
        swapped = swapped_audio_table(model, swapped_items, **kwargs)
        swapped["utterance"] = owners[swapped["utterance"].to_numpy()]
        keys = ["utterance", "word_index"]
        table = table.merge(swapped[keys].drop_duplicates(), on=keys)  # words that own tokens in both
        rates = heard_rates(table, swapped, ks=(K,), by=("view",), n_boot=n_boot, confidence=0.95, seed=seed)
        rates = rates[rates["metric"] == "transcription"].drop(columns=["metric"])
        shuffled = shuffled_control(table, ks=(K,), n_permutations=10, seed=seed, by=("view",))
        shuffled = shuffled[shuffled["metric"] == "transcription"][["layer", "shuffled_rate", "shuffled_sd"]]
        frames.append(rates.merge(shuffled, on="layer", how="left").assign(readout=positions))
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
