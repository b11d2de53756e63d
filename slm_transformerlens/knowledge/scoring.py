"""Spoken-knowledge scoring: does the model give the correct completion a higher likelihood?

The conventions are slamkit's (``slamkit/metric/modelling_metric.py`` and ``UnitLM.log_likelihood``):

- the log-likelihood of a sequence is the sum over scored positions ``p`` of
  ``log softmax(logits[p - 1])[token[p]]``; with ``mean_nll`` (slamkit's default) it is divided by the
  number of scored tokens (length-normalised), which cancels the length bias between completions;
- "which tokens count" is chosen by modality, as slamkit's ``used_token_modality``: only tokens of that
  modality are scored, and the softmax is taken over that modality's ids only (slamkit sets the logits of
  the ignored ids to ``-inf``); ``"all"`` scores every token over the whole vocabulary;
- a pair scores 1 when ``ll(correct) > ll(counterfactual)``, 0.5 on an exact tie, 0 otherwise;
  accuracy is the mean over pairs;
- sequences are batched right-padded with an attention mask (padding is never scored).

Unlike sStoryCloze, where slamkit scores the whole audio file, a knowledge item has a shared prompt and
two completions: by default only the completion's tokens are scored (``score_tokens="continuation"``);
``"sequence"`` scores the prompt too, as slamkit does for a single audio file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from slm_transformerlens.checks import check_finite_logits
from slm_transformerlens.errors import SLMError, SpeechInputError
from slm_transformerlens.knowledge.data import KnowledgeItem
from slm_transformerlens.lens.batching import length_batches
from slm_transformerlens.speech.inputs import Speech, Text

__all__ = [
    "KNOWLEDGE_MODES",
    "SCORE_TOKENS",
    "KnowledgeError",
    "encode_continuation",
    "knowledge_accuracy",
    "knowledge_table",
    "pair_scores",
    "sequence_log_likelihoods",
]

#: ``prompt_continuation`` modalities; ``"interleaved"`` is an alias of ``"speech_text"``.
KNOWLEDGE_MODES: tuple[str, ...] = ("speech", "text", "speech_text", "text_speech", "interleaved")
#: Which positions are scored: the completion only, or the whole sequence (slamkit on one audio file).
SCORE_TOKENS: tuple[str, ...] = ("continuation", "sequence")


class KnowledgeError(SLMError, ValueError):
    """A knowledge item cannot be scored as asked (missing audio / units, bad mode)."""


def _modalities(mode: str) -> tuple[str, str]:
    if mode not in KNOWLEDGE_MODES:
        raise KnowledgeError(f"unknown knowledge mode {mode!r}; choose one of {list(KNOWLEDGE_MODES)}")
    mode = "speech_text" if mode == "interleaved" else mode
    if mode in ("speech", "text"):
        return mode, mode
    prompt, continuation = mode.split("_")
    return prompt, continuation


#: Per-item scores: an array, a tensor, a pandas Series or a sequence of floats.
Scores = np.ndarray | Sequence[float] | Tensor | pd.Series


def pair_scores(correct: Scores, counterfactual: Scores) -> np.ndarray:
    """slamkit's rule per pair: 1.0 if ``correct > counterfactual``, 0.5 if equal, 0.0 if lower."""
    c = np.asarray(correct.cpu() if isinstance(correct, Tensor) else correct, dtype=np.float64)
    x = np.asarray(
        counterfactual.cpu() if isinstance(counterfactual, Tensor) else counterfactual, dtype=np.float64
    )
    return np.where(c > x, 1.0, np.where(c == x, 0.5, 0.0))


def sequence_log_likelihoods(
    model: Any,
    sequences: Sequence[Int[Tensor, " _pos"]],
    scored: Sequence[Bool[Tensor, " _pos"]],
    *,
    allowed: Bool[Tensor, " vocab"] | None = None,
    batch_size: int = 8,
    progress: bool = False,
    batch_tokens: int | None = None,
) -> tuple[Float[Tensor, " n"], Int[Tensor, " n"]]:
    """Summed log-likelihood of the scored tokens of each sequence, and how many were scored.

    Args:
        model: a ``HookedSLM`` (or any TransformerLens model returning logits).
        sequences: 1-D token tensors (different lengths are right-padded per batch).
        scored: per sequence, a bool mask of the positions whose token is scored (position 0 never is:
            nothing predicts it).
        allowed: restrict every softmax to these ids (slamkit's ignored-token masking); ``None`` = all.
        batch_size: sequences per forward pass (sorted by length to limit padding).
        progress: show a progress bar.
        batch_tokens: instead of ``batch_size``, group sequences by length into batches of at most
            ``batch_tokens`` padded tokens (:func:`~slm_transformerlens.lens.batching.length_batches`).

    Returns:
        ``(sum_log_likelihood [n] float64, n_scored [n] int64)``.
    """
    if len(sequences) != len(scored):
        raise KnowledgeError(f"{len(sequences)} sequences but {len(scored)} score masks")
    for name, value in (("batch_size", batch_size), ("batch_tokens", batch_tokens)):
        if value is not None and value < 1:
            raise KnowledgeError(f"{name}={value}: a forward pass needs at least 1 (e.g. {name}=8)")
    device = torch.device(getattr(model.cfg, "device", "cpu") or "cpu")
    pad_id = getattr(getattr(model, "tokenizer", None), "pad_token_id", None) or 0
    sums = torch.zeros(len(sequences), dtype=torch.float64)
    counts = torch.zeros(len(sequences), dtype=torch.long)
    if batch_tokens is not None:
        batches = length_batches([len(s) for s in sequences], batch_tokens)
    else:
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        batches = [order[i : i + batch_size] for i in range(0, len(order), max(1, batch_size))]
    mask_allowed = None if allowed is None else allowed.to(device)
    for batch in tqdm(batches, desc="knowledge", disable=not progress, unit="batch"):
        width = max(len(sequences[i]) for i in batch)
        tokens = torch.full((len(batch), width), int(pad_id), dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        score = torch.zeros((len(batch), width), dtype=torch.bool)
        for row, i in enumerate(batch):
            n = len(sequences[i])
            if scored[i].shape != sequences[i].shape:
                raise KnowledgeError(f"sequence {i}: the score mask must have the sequence's shape")
            tokens[row, :n] = sequences[i]
            attention[row, :n] = 1
            score[row, :n] = scored[i]
        score[:, 0] = False
        kwargs: dict[str, Any] = {"return_type": "logits"}
        if bool((attention == 0).any()):
            kwargs["attention_mask"] = attention.to(device)
        with torch.no_grad():
            logits = model(tokens.to(device), **kwargs).float()[:, :-1]
            out = logits.device  # the unembedding's on a model split over devices
            real = attention[:, 1:].bool().to(out)  # padded positions are never scored
            check_finite_logits(logits[real], describe_row=_row_namer(real, batch), what="knowledge logits")
            if mask_allowed is not None:
                logits = logits.masked_fill(~mask_allowed.to(out), float("-inf"))
            log_probs = torch.log_softmax(logits, dim=-1)
            targets = tokens[:, 1:].to(out)
            picked = torch.gather(log_probs, -1, targets.unsqueeze(-1)).squeeze(-1).double().cpu()
        keep = score[:, 1:]
        values = torch.where(keep, picked, torch.zeros((), dtype=torch.float64))
        sums[batch] = values.sum(-1)
        counts[batch] = keep.sum(-1)
    return sums, counts


def _row_namer(real: Bool[Tensor, "batch pos"], batch: Sequence[int]) -> Callable[[int], str]:
    """Names row ``r`` of ``logits[real]``: its sequence and position (only called on an error)."""

    def name(r: int) -> str:
        row, position = torch.nonzero(real)[r].tolist()
        return f"sequence {batch[row]} position {position}"

    return name


def _segment(
    item: KnowledgeItem, part: str, modality: str, speech_tokenizer: Callable[..., Speech] | None
) -> Any:
    if modality == "text":
        return Text(item.text(part))
    spoken = item.spoken.get(part)
    if spoken is not None and spoken.speech is not None:
        return spoken.speech
    if spoken is None or spoken.audio is None:
        raise KnowledgeError(
            f"item {item.item_id}: the {part} has no audio or units; use mode='text' or give spoken parts"
        )
    if speech_tokenizer is None:
        raise KnowledgeError(
            "spoken parts from audio need a speech tokenizer (HuBERT + quantizer: "
            "speech_tokenizer=SpeechTokenizer(...), CLI --hubert DIR --quantizer FILE)"
        )
    return speech_tokenizer(spoken.audio, spoken.sample_rate, words=spoken.words, resample=True)


def encode_continuation(
    model: Any,
    prompt: Any,
    continuation: Any,
    *,
    token_modality: str,
    score_tokens: str = "continuation",
) -> tuple[Int[Tensor, " pos"], Bool[Tensor, " pos"]]:
    """Tokens of ``prompt`` followed by ``continuation`` (``Speech`` / ``Text`` segments) and the scored mask.

    The continuation starts after the prompt's own tokens when both have the same modality (the joint
    encoding must then begin with the prompt's), else at its first word span (a modality marker before
    it is not part of it). Scored positions are those of the continuation (or, with
    ``score_tokens="sequence"``, every position) whose token belongs to ``token_modality`` (``"text"``,
    ``"speech"`` or ``"all"``).
    """
    if score_tokens not in SCORE_TOKENS:
        raise KnowledgeError(f"unknown score_tokens {score_tokens!r}; choose one of {list(SCORE_TOKENS)}")
    joint = model.encode([prompt, continuation])
    tokens = joint.tokens[0, : joint.lengths[0]].cpu()
    if isinstance(prompt, Text) == isinstance(continuation, Text):
        alone = model.encode([prompt])
        prefix = alone.tokens[0, : alone.lengths[0]].cpu()
        if len(prefix) >= len(tokens) or not torch.equal(tokens[: len(prefix)], prefix):
            raise KnowledgeError("the joint encoding does not start with the prompt's tokens")
        start = len(prefix)
    else:
        modality = "text" if isinstance(continuation, Text) else "speech"
        spans = joint.word_spans[joint.word_spans["modality"] == modality]
        if spans.empty:
            raise KnowledgeError("the continuation has no word span in the encoding")
        start = int(spans["start"].min())
    region = torch.zeros(len(tokens), dtype=torch.bool)
    region[0 if score_tokens == "sequence" else start :] = True
    if token_modality != "all":
        group = model.speech_vocab.group_mask(token_modality)
        region &= group[tokens]
    return tokens, region


def knowledge_table(
    model: Any,
    items: Sequence[KnowledgeItem],
    *,
    mode: str = "speech",
    speech_tokenizer: Callable[..., Speech] | None = None,
    token_modality: str | None = None,
    score_tokens: str = "continuation",
    batch_size: int = 8,
    progress: bool = True,
    batch_tokens: int | None = None,
) -> pd.DataFrame:
    """Log-likelihood of the correct and the counterfactual completion of every item.

    Args:
        model: a ``HookedSLM``.
        items: :class:`~slm_transformerlens.knowledge.data.KnowledgeItem` (from parquet, JSON or facts).
        mode: ``"speech"`` (spoken prompt and completions), ``"text"``, ``"speech_text"`` (alias
            ``"interleaved"``: spoken prompt, written completion) or ``"text_speech"``.
        speech_tokenizer: audio -> :class:`Speech` (a ``SpeechTokenizer``) for parts given as audio only.
        token_modality: which tokens count and the softmax's vocabulary: ``"text"``, ``"speech"`` or
            ``"all"`` (default: the completion's modality, slamkit's ``used_token_modality``).
        score_tokens: ``"continuation"`` (default) or ``"sequence"`` (see the module docstring).
        batch_size: sequences per forward pass.
        progress: show progress bars.
        batch_tokens: group sequences by length under this token budget instead of ``batch_size``.

    Returns:
        One row per item: ``item_id, category, mode, ll_correct, ll_counterfactual`` (summed
        log-likelihoods), ``n_correct, n_counterfactual`` (scored tokens), ``mean_ll_correct,
        mean_ll_counterfactual`` (length-normalised), ``score_mean`` and ``score_sum`` (1 / 0.5 / 0).
    """
    prompt_modality, continuation_modality = _modalities(mode)
    token_modality = token_modality or continuation_modality
    if token_modality not in ("text", "speech", "all"):
        raise KnowledgeError(f"token_modality must be 'text', 'speech' or 'all', got {token_modality!r}")
    sequences, masks = [], []
    for item in tqdm(items, desc="knowledge: encode", disable=not progress, unit="item"):
        prompt = _segment(item, "prompt", prompt_modality, speech_tokenizer)
        for part in ("correct", "counterfactual"):
            continuation = _segment(item, part, continuation_modality, speech_tokenizer)
            try:
                tokens, mask = encode_continuation(
                    model, prompt, continuation, token_modality=token_modality, score_tokens=score_tokens
                )
            except SpeechInputError as error:
                raise KnowledgeError(f"item {item.item_id} ({part}): {error}") from None
            if not bool(mask[1:].any()):
                raise KnowledgeError(f"item {item.item_id} ({part}): no {token_modality} token to score")
            sequences.append(tokens)
            masks.append(mask)
    _check_pairs_differ(items, sequences)
    allowed = None if token_modality == "all" else model.speech_vocab.group_mask(token_modality)
    sums, counts = sequence_log_likelihoods(
        model,
        sequences,
        masks,
        allowed=allowed,
        batch_size=batch_size,
        progress=progress,
        batch_tokens=batch_tokens,
    )
    ll = sums.numpy().reshape(-1, 2)
    n = counts.numpy().reshape(-1, 2)
    mean = ll / n
    return pd.DataFrame(
        {
            "item_id": [item.item_id for item in items],
            "category": pd.array([item.category for item in items], dtype="string"),
            "mode": mode,
            "ll_correct": ll[:, 0],
            "ll_counterfactual": ll[:, 1],
            "n_correct": n[:, 0],
            "n_counterfactual": n[:, 1],
            "mean_ll_correct": mean[:, 0],
            "mean_ll_counterfactual": mean[:, 1],
            "score_mean": pair_scores(mean[:, 0], mean[:, 1]),
            "score_sum": pair_scores(ll[:, 0], ll[:, 1]),
        }
    )


def _check_pairs_differ(items: Sequence[KnowledgeItem], sequences: Sequence[Tensor]) -> None:
    """Refuse items whose counterfactual is the correct completion itself (as tokens): such a pair always
    ties, and an accuracy of 0.5 over them would read as a real chance result.

    Raises:
        KnowledgeError: every item's two sequences are identical (a warning names some, when only some are).
    """
    same = [
        item.item_id
        for item, correct, counterfactual in zip(items, sequences[0::2], sequences[1::2], strict=True)
        if correct.shape == counterfactual.shape and bool(torch.equal(correct, counterfactual))
    ]
    if same and len(same) == len(items):
        raise KnowledgeError(
            f"every item's counterfactual is identical to its correct completion ({len(items)} items, e.g. "
            f"{same[0]}): the pairs cannot be told apart, and every score would be a tie (0.5). Check that "
            "the data's correct and counterfactual fields are different columns (--columns / "
            "KnowledgeColumns)"
        )
    if same:
        import warnings

        warnings.warn(
            f"{len(same)} of {len(items)} knowledge items have a counterfactual identical to the correct "
            f"completion ({', '.join(map(str, same[:5]))}); each scores a tie (0.5)",
            stacklevel=3,
        )


def knowledge_accuracy(table: pd.DataFrame, *, mean_nll: bool = True) -> float:
    """Mean pair score of a :func:`knowledge_table` (length-normalised by default, as slamkit)."""
    if table.empty:
        raise KnowledgeError("no knowledge items were scored")
    return float(table["score_mean" if mean_nll else "score_sum"].mean())
