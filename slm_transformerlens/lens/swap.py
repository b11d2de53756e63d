"""The swapped-audio control: every spoken word's units replaced by another spoken word's, context unchanged.

A model that reads a word's target out of its span may have HEARD the word (its units) or GUESSED it from
the context (the words before it). :func:`swap_audio` replaces the unit tokens of every spoken word by the
unit tokens of a DONOR: a spoken word of another word type, from another utterance, with the closest unit
count (ties drawn with a seeded generator). Every other token is unchanged; word spans after a swapped
word shift by the length difference, and a swapped span keeps its ORIGINAL word, so
:func:`swapped_audio_table` scores the original target: its rate is what context alone gives (see
:func:`~slm_transformerlens.lens.heard.heard_rates`). It costs a second forward pass over the dataset.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import torch

from slm_transformerlens.lens.analysis import encoded_inputs
from slm_transformerlens.lens.base import LensError
from slm_transformerlens.lens.controls import word_type
from slm_transformerlens.lens.metrics import transcription_table
from slm_transformerlens.protocols import SpeechLM
from slm_transformerlens.spans import EncodedBatch

__all__ = ["DONOR_COLUMNS", "SwappedDataset", "swap_audio", "swapped_audio_table"]

#: Columns of :attr:`SwappedDataset.donors`: one row per spoken word and the word whose units it got.
DONOR_COLUMNS: tuple[str, ...] = (
    "utterance",
    "word_index",
    "word",
    "n_units",
    "donor_utterance",
    "donor_word_index",
    "donor_word",
    "donor_n_units",
)


class SwappedDataset(list[EncodedBatch]):
    """A ``list[EncodedBatch]`` (the swapped dataset, one batch per input item) with its donor table.

    Attributes:
        donors: one row per spoken word (:data:`DONOR_COLUMNS`; ``utterance`` numbered across the dataset
            as :func:`~slm_transformerlens.lens.transcription_table` numbers it).
    """

    def __init__(self, batches: Iterable[EncodedBatch], donors: pd.DataFrame) -> None:
        super().__init__(batches)
        self.donors = donors


def _indexed(batch: EncodedBatch) -> EncodedBatch:
    """The batch with its word-span table indexed 0..n-1 (span indices name the words to swap)."""
    if batch.word_spans is None or isinstance(batch.word_spans.index, pd.RangeIndex):
        return batch
    return EncodedBatch(batch.tokens, batch.attention_mask, batch.word_spans.reset_index(drop=True))


def _spoken(batch: EncodedBatch) -> pd.DataFrame:
    """The spoken words of a batch that own tokens."""
    frame = batch.spans.frame if batch.spans is not None else None
    if frame is None:
        raise LensError(
            "every dataset item needs word spans (a word-span table) for the swapped-audio control"
        )
    return frame[(frame["modality"] == "speech") & (frame["stop"] > frame["start"])]


def _choose_donors(words: pd.DataFrame, seed: int) -> np.ndarray:
    """For each spoken word, the index of its donor: another type, another utterance, closest unit count."""
    rng = np.random.default_rng(seed)
    types = words["word"].map(word_type).to_numpy(dtype=object)
    utterances = words["utterance"].to_numpy()
    n_units = words["units"].map(len).to_numpy()
    donors = np.zeros(len(words), dtype=np.int64)
    for i in range(len(words)):
        candidates = np.nonzero((utterances != utterances[i]) & (types != types[i]))[0]
        if not len(candidates):
            raise LensError(
                f"no donor for the spoken word {words['word'].iat[i]!r} (utterance {utterances[i]}): the "
                "swapped-audio control needs a spoken word of ANOTHER type in ANOTHER utterance for every "
                "spoken word; add utterances, or run without it (controls without 'swapped-audio')"
            )
        gap = np.abs(n_units[candidates] - n_units[i])
        donors[i] = int(rng.choice(candidates[gap == gap.min()]))
    return donors


def _swap_row(
    tokens: list[int], spans: pd.DataFrame, new_units: dict[int, list[int]]
) -> tuple[list[int], pd.DataFrame]:
    """One row's tokens with the spans in ``new_units`` (span index -> units) replaced; spans shifted."""
    out: list[int] = []
    cuts: list[tuple[int, int]] = []  # (old stop, length change) of each swapped span, in order
    cursor = 0
    for index in sorted(new_units, key=lambda i: int(spans.at[i, "start"])):
        start, stop = int(spans.at[index, "start"]), int(spans.at[index, "stop"])
        out += tokens[cursor:start] + new_units[index]
        cuts.append((stop, len(new_units[index]) - (stop - start)))
        cursor = stop
    out += tokens[cursor:]

    def moved(position: int) -> int:
        return position + sum(delta for stop, delta in cuts if stop <= position)

    spans = spans.copy()
    for index in spans.index:
        start, stop = int(spans.at[index, "start"]), int(spans.at[index, "stop"])
        if start < 0 or stop <= start:
            continue
        new_start = moved(start)
        new_stop = new_start + len(new_units[index]) if index in new_units else moved(stop - 1) + 1
        spans.at[index, "start"], spans.at[index, "stop"] = new_start, new_stop
        if "last" in spans.columns:
            spans.at[index, "last"] = new_stop - 1
        if "n_tokens" in spans.columns:
            spans.at[index, "n_tokens"] = new_stop - new_start
        if index in new_units and "n_units" in spans.columns:
            spans.at[index, "n_units"] = len(new_units[index])
    return out, spans


def _rebuild(batch: EncodedBatch, new_units: dict[int, list[int]], pad_id: int) -> EncodedBatch:
    """The batch with the given spans' units replaced (span index of ``batch.word_spans`` -> units)."""
    frame = batch.spans.frame  # type: ignore[union-attr]
    rows, spans = [], []
    for row, length in enumerate(batch.lengths):
        mine = frame[frame["utterance"] == row]
        tokens, shifted = _swap_row(
            batch.tokens[row, :length].tolist(), mine, {i: u for i, u in new_units.items() if i in mine.index}
        )
        rows.append(tokens)
        spans.append(shifted)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=batch.tokens.dtype)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, tokens in enumerate(rows):
        ids[row, : len(tokens)] = torch.as_tensor(tokens, dtype=batch.tokens.dtype)
        mask[row, : len(tokens)] = 1
    padded = batch.attention_mask is not None or len({len(r) for r in rows}) > 1
    word_spans = pd.concat(spans).reindex(frame.index) if spans else frame
    return EncodedBatch(ids, mask if padded else None, word_spans)


def swap_audio(model: SpeechLM, dataset: Iterable[Any], *, seed: int = 0) -> SwappedDataset:
    """The dataset with every spoken word's unit tokens replaced by a donor word's unit tokens.

    The donor of a spoken word (``modality == "speech"``, owning tokens) is a spoken word of the dataset of
    another word type (:func:`~slm_transformerlens.lens.controls.word_type`), from another utterance, with
    the closest number of unit tokens (ties: drawn with ``numpy.random.default_rng(seed)``, words taken in
    dataset order; deterministic for a seed). Donor units come from the ORIGINAL dataset. Every other token
    (text, markers, BOS) is unchanged; spans after a swapped word shift by the length difference
    (``start``, ``stop``, ``last``, ``n_tokens``; ``n_units`` of a swapped word becomes the donor's), and
    each span keeps its original ``word``, so the original target is scored.

    Args:
        model: a ``HookedSLM`` (to encode ``Speech`` / ``Text`` items).
        dataset: what :func:`~slm_transformerlens.lens.transcription_table` accepts.
        seed: the tie-breaking seed.

    Returns:
        A :class:`SwappedDataset`: a list with one :class:`~slm_transformerlens.spans.EncodedBatch` per
        item (right-padded with an attention mask when its rows' lengths differ) and ``.donors``.

    Raises:
        LensError: an item without word spans, or a spoken word without any donor.
    """
    encoded = [_indexed(encoded_inputs(model, item)) for item in dataset]
    pad_id = getattr(getattr(model, "tokenizer", None), "pad_token_id", None) or 0
    records, offset = [], 0
    for item, batch in enumerate(encoded):
        for index, span in _spoken(batch).iterrows():
            row, start, stop = int(span["utterance"]), int(span["start"]), int(span["stop"])
            units = batch.tokens[row, start:stop].tolist()
            records.append((item, index, offset + row, int(span["word_index"]), str(span["word"]), units))
        offset += int(batch.tokens.shape[0])
    words = pd.DataFrame.from_records(
        records, columns=["item", "index", "utterance", "word_index", "word", "units"]
    )
    if words.empty:
        return SwappedDataset(encoded, pd.DataFrame(columns=list(DONOR_COLUMNS)))
    donors = _choose_donors(words, seed)
    donor = words.iloc[donors].reset_index(drop=True)
    new_units: list[dict[int, list[int]]] = [{} for _ in encoded]
    for i, (item, index) in enumerate(zip(words["item"], words["index"], strict=True)):
        new_units[int(item)][index] = list(donor["units"].iat[i])
    table = pd.DataFrame(
        {
            "utterance": words["utterance"].to_numpy(dtype=np.int64),
            "word_index": words["word_index"].to_numpy(dtype=np.int64),
            "word": words["word"],
            "n_units": words["units"].map(len).to_numpy(dtype=np.int64),
            "donor_utterance": donor["utterance"].to_numpy(dtype=np.int64),
            "donor_word_index": donor["word_index"].to_numpy(dtype=np.int64),
            "donor_word": donor["word"],
            "donor_n_units": donor["units"].map(len).to_numpy(dtype=np.int64),
        }
    )
    return SwappedDataset(
        [
            _rebuild(batch, units, pad_id) if units else batch
            for batch, units in zip(encoded, new_units, strict=True)
        ],
        table,
    )


def swapped_audio_table(
    model: SpeechLM, dataset: Iterable[Any], *, seed: int = 0, **table_kwargs: Any
) -> pd.DataFrame:
    """:func:`~slm_transformerlens.lens.transcription_table` on :func:`swap_audio` of ``dataset``.

    ``dataset`` may already be a :class:`SwappedDataset` (what :func:`swap_audio` returns): it is then read
    as it is, never swapped twice, so that one swap serves several read-outs (``seed`` is then unused).
    ``table_kwargs`` are the table's (use the SAME as for the original table). Rows are keyed like the
    original table's (``utterance``, ``word_index``, ``word``, ``layer``, ``site``, ``view``) and score each
    word's ORIGINAL target; each swapped word's donor is in ``donor_utterance``, ``donor_word_index``,
    ``donor_word`` (``<NA>`` for words that were not swapped, e.g. written words).
    """
    swapped = dataset if isinstance(dataset, SwappedDataset) else swap_audio(model, dataset, seed=seed)
    table = transcription_table(model, swapped, **table_kwargs)
    if table.empty:
        return table.assign(donor_utterance=None, donor_word_index=None, donor_word=None)
    donors = swapped.donors.set_index(["utterance", "word_index"])
    where = donors.index.get_indexer(
        pd.MultiIndex.from_frame(table[["utterance", "word_index"]].astype("int64"))
    )
    for column, dtype in (
        ("donor_utterance", "Int64"),
        ("donor_word_index", "Int64"),
        ("donor_word", "string"),
    ):
        values = donors[column].to_numpy(dtype=object)
        table[column] = pd.array([None if i < 0 else values[i] for i in where], dtype=dtype)
    return table
