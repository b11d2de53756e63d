"""Encoding utterances into token ids and a word-span table, following each family's own string format.

How ids are produced (the decision): we write the exact string the family's own code feeds its tokenizer
and tokenize THAT string once (``add_special_tokens=False``; BOS = ``vocab.bos_token_id`` prepended by us).
So our ids equal ``tokenizer(family_string)`` by construction, including SentencePiece details such as a
``▁`` piece inserted before a marker: whatever the family's tokenizer produces, we produce. Each token is
then attributed to the piece of the string it came from (fast tokenizers: character offsets; slow ones:
prefix re-tokenization), and we check that every unit, marker, pitch and style piece became exactly its
own single token (otherwise the tokenizer is not this model's tokenizer: ``VocabularyError``). Tokens that
belong to no word (BOS, markers, a stray ``▁``, silence units between spoken words, pitch/style tokens
outside a word) appear in no word span.

Family string formats:

- ``sims`` (slamkit): ``<text> once upon a<speech><Un12><Un7>...<text> there was``: a marker before the
  first segment and at each modality change; text words keep their leading space; an utterance that is
  ALL speech is bare units with no marker (slamkit's evaluation); BOS = ``vocab.bos_token_id``
  (Llama-3 ``<|begin_of_text|>``; Qwen none).
- ``spiritlm``: ``[Text] once upon a[Speech][Hu12][Hu7]...``: a marker before the first segment (also for
  speech-only input, as ``Spiritlm._build_prompt`` does) and at each change; text lowercased with
  punctuation removed (intra-word apostrophes kept), leading space; Expressive ``[St*]``/``[Pi*]`` tokens
  merged with ``[Hu*]`` by time (stable order style, pitch, unit at equal times; unit time = first frame /
  24.99 Hz, pitch / style times as given); BOS ``<s>``.
  (SpiritLM's ``_build_prompt`` compares with ``"a"`` and so repeats ``[Speech]`` before consecutive
  speech segments: we treat that as a bug and put markers only at modality changes.)
- ``generic``: the SIMS rules with whatever markers the vocab has (none if it has none).

Word spans: a text word spans its own tokens; a spoken word spans from its first to its last unit token
(pitch/style tokens in between included), ``last`` = position of its last unit.
"""

from __future__ import annotations

import math
import re
import warnings
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from slm_transformerlens._deprecation import deprecated_attributes
from slm_transformerlens.checkpoints import StringConventions, conventions_of
from slm_transformerlens.errors import SpeechInputError, VocabularyError
from slm_transformerlens.spans import WORD_SPAN_COLUMNS as _SPAN_COLUMNS
from slm_transformerlens.spans import EncodedBatch
from slm_transformerlens.speech.inputs import EmptyWordPolicy, Speech, Text
from slm_transformerlens.speech.units import unit_start_frames
from slm_transformerlens.vocab import SpeechVocab

__all__ = [
    "EncodedBatch",
    "as_batch",
    "encode_utterances",
    "family_string",
    "is_speech_input",
]

#: Moved names (deprecated here): the span schema lives in :mod:`slm_transformerlens.spans`, SpiritLM's
#: conventions on its family object (:mod:`slm_transformerlens.checkpoints.spiritlm`).
__getattr__ = deprecated_attributes(
    __name__,
    {
        "WORD_SPAN_COLUMNS": "slm_transformerlens.spans:WORD_SPAN_COLUMNS",
        "SPIRITLM_HUBERT_RATE": "slm_transformerlens.checkpoints.spiritlm:SPIRITLM_HUBERT_RATE",
        "normalize_spiritlm_text": "slm_transformerlens.checkpoints.spiritlm:normalize_spiritlm_text",
    },
)

Segment = Speech | Text


def is_speech_input(x: object) -> bool:
    """True for a Speech, a Text, a list of them (one utterance), or a list of such lists (a batch)."""
    if isinstance(x, (Speech, Text)):
        return True
    if isinstance(x, (list, tuple)) and x:
        if all(isinstance(s, (Speech, Text)) for s in x):
            return True
        return all(
            isinstance(u, (list, tuple)) and u and all(isinstance(s, (Speech, Text)) for s in u) for u in x
        )
    return False


def as_batch(x: Any) -> list[list[Segment]]:
    """Any speech input as a batch: a list of utterances, each a list of Speech / Text segments.

    Raises:
        SpeechInputError: ``x`` is not a speech input, or it (or one of its utterances) is empty.
    """
    if isinstance(x, (Speech, Text)):
        return [[x]]
    if isinstance(x, (list, tuple)) and not x:
        raise SpeechInputError(
            "the speech input is empty (a list with no utterance); pass at least one Speech or Text, "
            "e.g. [Text('the cat'), Speech(units)]"
        )
    if isinstance(x, (list, tuple)):
        for i, u in enumerate(x):
            if isinstance(u, (list, tuple)) and not u:
                raise SpeechInputError(
                    f"utterance {i} is empty (a list with no Speech or Text segment); give every utterance "
                    "at least one segment, or leave it out of the batch"
                )
    if not is_speech_input(x):
        raise SpeechInputError(
            "expected a Speech, a Text, a list of them (one utterance) or a list of such lists (a batch); "
            f"got {type(x).__name__}"
        )
    if all(isinstance(s, (Speech, Text)) for s in x):
        return [list(x)]
    return [list(u) for u in x]


# ---------------------------------------------------------------------------------------------- pieces
@dataclass
class _Piece:
    text: str
    kind: str  # "marker" | "unit" | "pitch" | "style" | "text"
    expected_id: int | None
    row: int | None  # index into the utterance's word rows


def _marker_strings(vocab: SpeechVocab) -> dict[str, str]:
    return {role: token for role, token in vocab.marker_tokens.items() if role in ("text", "speech")}


def _forbidden_in_text(vocab: SpeechVocab, tokenizer: Any) -> re.Pattern[str]:
    literals = list(vocab.marker_tokens.values())
    literals += [t for t in (getattr(tokenizer, "all_special_tokens", None) or []) if t]
    parts = [re.escape(t) for t in sorted(set(literals), key=len, reverse=True)]
    for token_format in [vocab.unit_format, *vocab.extra_formats.values()]:
        prefix, suffix = token_format.split("{}")
        parts.append(re.escape(prefix) + r"\d+" + re.escape(suffix))
    return re.compile("|".join(parts))


def _speech_pieces(
    segment: Speech,
    vocab: SpeechVocab,
    conventions: StringConventions,
    row_of_unit: list[int | None],
) -> list[_Piece]:
    if max(segment.units) >= vocab.n_units:
        bad = max(segment.units)
        raise SpeechInputError(
            f"speech unit {bad} is out of range: this model has {vocab.n_units} units (0..{vocab.n_units - 1}); "
            "were the units made by a quantizer with another codebook size?"
        )
    timed: list[tuple[float, int, _Piece]] = []
    if segment.pitch or segment.style:
        if not conventions.expressive_tokens:
            warnings.warn(
                f"pitch/style tokens are a SpiritLM Expressive convention; family {vocab.family!r}",
                stacklevel=4,
            )
        for order, name, tokens in ((0, "style", segment.style), (1, "pitch", segment.pitch)):
            if not tokens:
                continue
            if name not in vocab.extra_groups:
                raise SpeechInputError(
                    f"the Speech has {name} tokens but this vocabulary has no {name} group"
                )
            group = vocab.extra_groups[name]
            for token in tokens:
                if not 0 <= token.value < len(group):
                    raise SpeechInputError(
                        f"{name} token {token.value} is out of range (0..{len(group) - 1})"
                    )
                piece = _Piece(
                    vocab.extra_formats[name].format(token.value), name, group.start + token.value, None
                )
                timed.append((token.time, order, piece))
    starts = unit_start_frames(segment.durations or (), segment.frame_offset)
    rate = conventions.unit_rate(segment.frame_duration)
    for k, unit in enumerate(segment.units):
        piece = _Piece(vocab.unit_format.format(unit), "unit", vocab.units.start + unit, row_of_unit[k])
        timed.append((float(starts[k]) / rate, 2, piece))
    timed.sort(key=lambda item: (item[0], item[1]))  # SpiritLM: stable sort of style+pitch+unit by time
    return [piece for _, _, piece in timed]


def _utterance_pieces(
    utterance: Sequence[Segment],
    vocab: SpeechVocab,
    forbidden: re.Pattern[str],
    on_empty_word: EmptyWordPolicy,
    speech_only_marker: bool | None,
) -> tuple[list[_Piece], list[dict[str, Any]]]:
    if not utterance:
        raise SpeechInputError("an utterance needs at least one segment")
    conventions = conventions_of(vocab.family)
    markers = _marker_strings(vocab)
    all_speech = all(isinstance(s, Speech) for s in utterance)
    if speech_only_marker is None:
        speech_only_marker = conventions.speech_only_marker
    use_markers = bool(markers) and not (all_speech and not speech_only_marker)
    pieces: list[_Piece] = []
    rows: list[dict[str, Any]] = []
    previous: str | None = None
    for segment in utterance:
        modality = "speech" if isinstance(segment, Speech) else "text"
        if use_markers and modality != previous:
            if modality not in markers:
                raise VocabularyError(
                    f"the vocabulary has no {modality!r} marker but the utterance changes to {modality}"
                )
            pieces.append(_Piece(markers[modality], "marker", vocab.markers[modality], None))
        previous = modality
        if isinstance(segment, Text):
            for k, word in enumerate(segment.words):
                found = forbidden.search(word)
                if found:
                    raise SpeechInputError(
                        f"text word {word!r} contains the token {found.group(0)!r} (a marker, unit or special token); "
                        "text segments must be plain text: use Speech segments for units and let the encoder insert markers"
                    )
                token_text = conventions.text_string(word)
                times = segment.times[k] if segment.times is not None else (math.nan, math.nan)
                rows.append(
                    {
                        "word": word.strip(),
                        "modality": "text",
                        "start_s": times[0],
                        "end_s": times[1],
                        "token_text": token_text,
                        "n_units": 0,
                    }
                )
                if token_text:
                    pieces.append(_Piece(token_text, "text", None, len(rows) - 1))
            continue
        row_of_unit: list[int | None] = [None] * len(segment.units)
        if segment.words:
            ranges = segment.word_unit_ranges("error" if on_empty_word == "error" else "warn")
            for word, (lo, hi) in zip(segment.words, ranges, strict=True):
                rows.append(
                    {
                        "word": word.word.strip(),
                        "modality": "speech",
                        "start_s": word.start,
                        "end_s": word.end,
                        "token_text": "",
                        "n_units": hi - lo,
                    }
                )
                for k in range(lo, hi):
                    row_of_unit[k] = len(rows) - 1
        else:
            rows.append(
                {
                    "word": (segment.transcript or "").strip(),
                    "modality": "speech",
                    "start_s": segment.start_s,
                    "end_s": (segment.frame_offset + segment.n_frames) * segment.frame_duration,
                    "token_text": "",
                    "n_units": len(segment.units),
                }
            )
            row_of_unit = [len(rows) - 1] * len(segment.units)
        pieces.extend(_speech_pieces(segment, vocab, conventions, row_of_unit))
    return pieces, rows


# ---------------------------------------------------------------------------------------------- tokens
def _assign_tokens(pieces: list[_Piece], string: str, tokenizer: Any) -> tuple[list[int], list[int]]:
    """Tokenize ``string`` and give each token the index of the piece it came from (-1: none)."""
    starts = []
    position = 0
    for piece in pieces:
        starts.append(position)
        position += len(piece.text)
    if getattr(tokenizer, "is_fast", False):
        encoded = tokenizer(string, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(encoded["input_ids"])
        owner = []
        for begin, end in encoded["offset_mapping"]:
            owner.append(bisect_right(starts, end - 1) - 1 if end > begin else -1)
        return ids, owner
    # slow tokenizer: re-tokenize prefixes at every group boundary (groups: runs of pieces of one word/kind)
    ids = list(tokenizer(string, add_special_tokens=False)["input_ids"])
    owner = [-1] * len(ids)
    groups: list[list[int]] = []
    for index, piece in enumerate(pieces):
        key = (piece.kind == "text", piece.row, piece.kind == "marker")
        if (
            groups
            and key
            == (
                pieces[groups[-1][0]].kind == "text",
                pieces[groups[-1][0]].row,
                pieces[groups[-1][0]].kind == "marker",
            )
            and piece.kind != "text"
        ):
            groups[-1].append(index)
        else:
            groups.append([index])
    previous_count = 0
    for group_index, group in enumerate(groups):
        end_char = starts[groups[group_index + 1][0]] if group_index + 1 < len(groups) else len(string)
        prefix = list(tokenizer(string[:end_char], add_special_tokens=False)["input_ids"])
        if prefix != ids[: len(prefix)]:
            raise VocabularyError(
                "this (slow) tokenizer does not tokenize prefixes consistently; use a fast tokenizer "
                "(PreTrainedTokenizerFast) so tokens can be attributed to words by offsets"
            )
        span = range(previous_count, len(prefix))
        if len(group) == 1 and pieces[group[0]].kind == "text":
            for t in span:
                owner[t] = group[0]
        elif len(span) == len(group):
            for t, p in zip(span, group, strict=True):
                owner[t] = p
        previous_count = len(prefix)
    return ids, owner


def _check_special_pieces(pieces: list[_Piece], ids: list[int], owner: list[int], tokenizer: Any) -> None:
    counts = [0] * len(pieces)
    for t, p in enumerate(owner):
        if p >= 0:
            counts[p] += 1
            piece = pieces[p]
            if piece.kind != "text" and ids[t] != piece.expected_id:
                raise VocabularyError(
                    f"{piece.text!r} was tokenized to id {ids[t]} but the vocabulary says {piece.expected_id}; "
                    "this tokenizer is not the model's tokenizer"
                )
    for piece, count in zip(pieces, counts, strict=True):
        if piece.kind != "text" and count != 1:
            raise VocabularyError(
                f"{piece.text!r} became {count} tokens instead of one; the tokenizer lacks this {piece.kind} token "
                "(was it built with the unit / marker tokens added?)"
            )


def _spans(
    pieces: list[_Piece],
    owner: list[int],
    ids: list[int],
    rows: list[dict[str, Any]],
    vocab: SpeechVocab,
    offset: int,
) -> None:
    positions: dict[int, list[int]] = {}
    for t, p in enumerate(owner):
        if p >= 0 and pieces[p].row is not None and pieces[p].kind in ("text", "unit"):
            positions.setdefault(int(pieces[p].row), []).append(t)  # type: ignore[arg-type]
    for r, row in enumerate(rows):
        tokens = positions.get(r, [])
        if not tokens:
            row.update(start=-1, stop=-1, last=-1, n_tokens=0)
            continue
        start, stop = min(tokens), max(tokens) + 1
        for t in range(start, stop):
            p = owner[t]
            inside = p >= 0 and (pieces[p].row == r or pieces[p].kind in ("pitch", "style"))
            if not inside:
                raise SpeechInputError(f"the tokens of word {row['word']!r} are not contiguous (token {t})")
        if row["modality"] == "text":
            groups = {vocab.group_of(ids[t]) for t in range(start, stop)}
            if groups - {"text", "special"}:
                raise SpeechInputError(
                    f"text word {row['word']!r} was tokenized into {sorted(groups)} tokens"
                )
        row.update(start=start + offset, stop=stop + offset, last=stop - 1 + offset, n_tokens=stop - start)


def family_string(
    utterance: Sequence[Segment] | Segment, vocab: SpeechVocab, tokenizer: Any | None = None
) -> str:
    """The exact string the family's own code would tokenize for one utterance (without BOS)."""
    segments = [utterance] if isinstance(utterance, (Speech, Text)) else list(utterance)
    forbidden = _forbidden_in_text(vocab, tokenizer)
    pieces, _ = _utterance_pieces(segments, vocab, forbidden, "keep", None)
    return "".join(p.text for p in pieces)


def encode_utterances(
    x: Any,
    vocab: SpeechVocab,
    tokenizer: Any,
    *,
    n_ctx: int | None = None,
    pad_id: int | None = None,
    on_empty_word: EmptyWordPolicy = "warn",
    speech_only_marker: bool | None = None,
) -> EncodedBatch:
    """Encode Speech / Text inputs into token ids and a word-span table.

    Args:
        x: a Speech or Text, an utterance (list of them) or a batch (list of utterances).
        vocab: the model's :class:`SpeechVocab` (family, unit format, markers, BOS).
        tokenizer: the model's ``transformers`` tokenizer (unit and marker tokens added).
        n_ctx: the model's context length; a longer utterance is an error.
        pad_id: padding id (default: the tokenizer's pad id, else its EOS id, else 0).
        on_empty_word: a word that owns no token (a spoken word shorter than a frame, or a SpiritLM text
            word made only of punctuation): ``"warn"`` (default) drops its row with a warning, ``"error"``
            raises, ``"keep"`` keeps it with ``n_tokens == 0`` and ``start == stop == last == -1``.
        speech_only_marker: put the speech marker before an all-speech utterance. Default: family rule
            (SIMS / generic: no, as slamkit evaluates; SpiritLM: yes).

    Returns:
        :class:`EncodedBatch` with right-padded tokens, the attention mask and the word spans.

    Raises:
        SpeechInputError: bad input (unit out of range, marker tokens inside text, empty words with
            ``"error"``, an utterance longer than ``n_ctx``...).
        VocabularyError: the tokenizer does not match the vocabulary.
    """
    batch = as_batch(x)
    forbidden = _forbidden_in_text(vocab, tokenizer)
    sequences: list[list[int]] = []
    frames: list[pd.DataFrame] = []
    for u, utterance in enumerate(batch):
        pieces, rows = _utterance_pieces(utterance, vocab, forbidden, on_empty_word, speech_only_marker)
        string = "".join(p.text for p in pieces)
        ids, owner = _assign_tokens(pieces, string, tokenizer) if string else ([], [])
        _check_special_pieces(pieces, ids, owner, tokenizer)
        offset = 0
        if vocab.bos_token_id is not None:
            ids = [int(vocab.bos_token_id), *ids]
            offset = 1
        _spans(pieces, owner, ids[offset:], rows, vocab, offset)
        who = f"utterance {u}" if len(batch) > 1 else "the utterance"  # callers may number their items
        if n_ctx is not None and len(ids) > n_ctx:
            raise SpeechInputError(
                f"{who} is {len(ids)} tokens long but the model's context is {n_ctx}; "
                "split the audio into shorter utterances"
            )
        if not ids:
            raise SpeechInputError(f"{who} encodes to no token")
        frame = pd.DataFrame(rows)
        frame.insert(0, "word_index", range(len(rows)))
        frame.insert(0, "utterance", u)
        empty = frame["n_tokens"] == 0
        if empty.any():
            words = frame.loc[empty, "word"].tolist()
            message = f"{who}: words {words} own no token (shorter than a speech frame, or only punctuation)"
            if on_empty_word == "error":
                raise SpeechInputError(message + "; pass on_empty_word='warn' or 'keep' to accept them")
            if on_empty_word == "warn":
                warnings.warn(message + "; they are left out of the word-span table", stacklevel=2)
                frame = frame[~empty]
        sequences.append(ids)
        frames.append(frame)
    if pad_id is None:
        pad_id = getattr(tokenizer, "pad_token_id", None)
        if pad_id is None:
            pad_id = getattr(tokenizer, "eos_token_id", None)
        pad_id = 0 if pad_id is None else int(pad_id)
    length = max(len(s) for s in sequences)
    tokens = torch.full((len(sequences), length), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for b, sequence in enumerate(sequences):
        tokens[b, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        mask[b, : len(sequence)] = 1
    spans = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(_SPAN_COLUMNS))
    spans = spans[list(_SPAN_COLUMNS)].astype(
        {
            "utterance": int,
            "word_index": int,
            "start": int,
            "stop": int,
            "last": int,
            "n_tokens": int,
            "n_units": int,
            "start_s": float,
            "end_s": float,
        }
    )
    return EncodedBatch(tokens=tokens, attention_mask=mask, word_spans=spans.reset_index(drop=True))
