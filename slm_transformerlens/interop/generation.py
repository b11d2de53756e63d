"""Speech-aware string views, ``test_prompt`` and ``generate`` for :class:`~slm_transformerlens.HookedSLM`.

TransformerLens' ``to_str_tokens``, ``to_string``, ``utils.test_prompt`` and ``generate`` take strings
or token tensors only. These functions accept ``Speech`` / ``Text`` inputs (encoded with the family's
conventions) and are what the ``HookedSLM`` methods of the same names call for such inputs.

Batched generation LEFT-pads: our encoder right-pads a batch (what a forward pass wants), but a
right-padded prompt would be continued after its padding. :func:`generate` moves each utterance's
padding to the left and passes the attention mask, so every row continues from its own last token
(equal to generating it alone). A right-padded token tensor without an attention mask is refused.

Generation runs WITHOUT TransformerBridge's past-key-value cache (:func:`no_kv_cache`): on transformer-lens
4.3 its cached path diverges from Hugging Face's greedy ``generate`` after the first new token, on every
model tried (a plain Llama loaded by TransformerBridge too), while the uncached path equals it. Each new
token costs a full forward pass over the sequence so far; for long generations use
``model.original_model.generate`` (Hugging Face's own).
"""

from __future__ import annotations

import inspect
from typing import Any

import pandas as pd
import torch
from jaxtyping import Int
from torch import Tensor

from slm_transformerlens.interop.errors import InteropError

__all__ = [
    "check_not_right_padded",
    "generate",
    "left_pad",
    "no_kv_cache",
    "test_prompt",
    "to_str_tokens",
    "to_string",
]


def _encode(model: Any, speech_input: Any) -> tuple[Int[Tensor, "batch pos"], list[int]]:
    encoded = model.encode(speech_input)
    return encoded.tokens, encoded.lengths


def _single(speech_input: Any) -> bool:
    from slm_transformerlens.speech.interleave import as_batch

    return len(as_batch(speech_input)) == 1 and not _is_batch(speech_input)


def _is_batch(speech_input: Any) -> bool:
    from slm_transformerlens.speech.inputs import Speech, Text

    return isinstance(speech_input, (list, tuple)) and not all(
        isinstance(s, (Speech, Text)) for s in speech_input
    )


def to_str_tokens(model: Any, speech_input: Any) -> list[str] | list[list[str]]:
    """The tokens of ``Speech`` / ``Text`` input as strings (``<Un71>``, ``<speech>``...), without padding.

    One utterance gives a list of strings, a batch a list of lists (each as long as its utterance).
    """
    tokens, lengths = _encode(model, speech_input)
    rows = [
        model.tokenizer.batch_decode([[int(t)] for t in row[:n].tolist()], clean_up_tokenization_spaces=False)
        for row, n in zip(tokens, lengths, strict=True)
    ]
    return rows[0] if _single(speech_input) else rows


def to_string(model: Any, speech_input: Any) -> str | list[str]:
    """The decoded string of ``Speech`` / ``Text`` input, ready for a Hugging Face tool: ``tokenizer(text)``
    gives back exactly the input's tokens.

    The family's leading BOS is left out of the string when the tokenizer prepends one itself (Llama-3
    based SIMS, SpiritLM, the organism), so it is not doubled; it is kept when the tokenizer does not.
    """
    tokens, lengths = _encode(model, speech_input)
    skip = _tokenizer_adds_bos(model.tokenizer)
    rows = [
        model.tokenizer.decode(
            row[1:n] if skip and n and int(row[0]) == model.tokenizer.bos_token_id else row[:n],
            clean_up_tokenization_spaces=False,
        )
        for row, n in zip(tokens, lengths, strict=True)
    ]
    return rows[0] if _single(speech_input) else rows


def _tokenizer_adds_bos(tokenizer: Any) -> bool:
    """Whether ``tokenizer(text)`` prepends the BOS token by itself."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and int(ids[0]) == int(bos)


def left_pad(
    tokens: Int[Tensor, "batch pos"], attention_mask: Int[Tensor, "batch pos"], pad_id: int
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """Move each row's padding from the right to the left (same length); returns tokens and mask."""
    lengths = attention_mask.sum(dim=1)
    width = tokens.shape[1]
    out = torch.full_like(tokens, pad_id)
    mask = torch.zeros_like(attention_mask)
    for row, n in enumerate(lengths.tolist()):
        out[row, width - n :] = tokens[row, :n]
        mask[row, width - n :] = 1
    return out, mask


def check_not_right_padded(model: Any, tokens: Tensor, attention_mask: Tensor | None) -> None:
    """Refuse a batch of prompts with trailing pad tokens and no mask (generation would continue the padding).

    Raises:
        InteropError: some rows end in the pad token and others do not, and no ``attention_mask`` was given.
    """
    pad_id = getattr(model.tokenizer, "pad_token_id", None)
    if attention_mask is not None or pad_id is None or tokens.ndim != 2 or tokens.shape[0] < 2:
        return
    ends_in_pad = tokens[:, -1] == pad_id
    if bool(ends_in_pad.any()) and not bool(ends_in_pad.all()):
        raise InteropError(
            "these prompts look right-padded (some rows end in the pad token, others do not): generation "
            "would continue each short prompt after its padding. Pass the Speech / Text inputs themselves "
            "(model.generate(batch) left-pads them), or attention_mask= with left-padded tokens"
        )


def no_kv_cache(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``generate`` keywords with TransformerBridge's past-key-value cache off (see the module doc).

    Raises:
        InteropError: ``use_past_kv_cache=True`` asked for (its output differs from Hugging Face's).
    """
    if kwargs.get("use_past_kv_cache"):
        raise InteropError(
            "use_past_kv_cache=True: TransformerBridge's KV-cache generation (transformer-lens 4.3) diverges "
            "from Hugging Face's greedy generate after the first new token on these models; leave it out "
            "(generation runs without the cache and equals Hugging Face's), or call "
            "model.original_model.generate(...) for fast Hugging Face generation"
        )
    return {**kwargs, "use_past_kv_cache": False}


def generate(model: Any, speech_input: Any, generate_fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Generate from ``Speech`` / ``Text`` input, left-padding a batch (see the module doc).

    Args:
        model: the HookedSLM.
        speech_input: one utterance or a batch.
        generate_fn: TransformerBridge's ``generate`` bound to ``model`` (takes tokens and ``attention_mask``).
        args, kwargs: passed to it. ``return_type="input"`` (the default) returns tokens for speech input.

    Returns:
        What TransformerBridge's ``generate`` returns: ``[batch, prompt + new]`` tokens (a batch is
        left-padded), or strings with ``return_type="str"``.

    Raises:
        InteropError: a batch of unequal lengths and a ``generate`` that takes no ``attention_mask``;
            ``use_past_kv_cache=True``.
    """
    kwargs = no_kv_cache(kwargs)
    encoded = model.encode(speech_input)
    tokens, mask = encoded.tokens.to(model.cfg.device), encoded.attention_mask.to(model.cfg.device)
    if kwargs.get("return_type", "input") == "input":
        kwargs["return_type"] = "tokens"
    if bool((mask == 0).any()):
        if "attention_mask" not in inspect.signature(generate_fn).parameters:
            raise InteropError(
                "this transformer-lens generate() takes no attention_mask, so a batch of utterances of "
                "different lengths cannot be generated without continuing the padding; generate one "
                "utterance at a time"
            )
        pad_id = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
        tokens, mask = left_pad(tokens, mask, int(pad_id))
        kwargs["attention_mask"] = mask
    return generate_fn(tokens, *args, **kwargs)


def _answer_segments(answer: Any) -> list[Any]:
    from slm_transformerlens.speech.inputs import Speech, Text

    if isinstance(answer, str):
        return [Text(answer)]
    if isinstance(answer, (Speech, Text)):
        return [answer]
    if isinstance(answer, (list, tuple)) and all(isinstance(s, (Speech, Text)) for s in answer):
        return list(answer)
    raise InteropError(
        f"answer must be a string, a Speech / Text or a list of them; got {type(answer).__name__}"
    )


def test_prompt(
    model: Any,
    prompt: Any,
    answer: Any,
    *,
    top_k: int = 10,
    print_details: bool = True,
) -> pd.DataFrame:
    """TransformerLens' ``test_prompt`` for an interleaved prompt: how the model ranks each answer token.

    The answer (a string, read as ``Text``, or ``Speech`` / ``Text`` segments) is encoded after the
    prompt with the family's conventions, so a modality marker the family inserts between them is
    one of the answer tokens (the model must predict it).

    Returns:
        One row per answer token: ``position``, ``token``, ``str_token``, ``logit``, ``prob``,
        ``rank`` (0 = top), and ``top_k`` (the ``top_k`` most likely strings at that position).

    Raises:
        InteropError: the prompt is a batch, or the answer changes how the prompt is tokenized.
    """
    from slm_transformerlens.speech.inputs import Speech, Text

    if _is_batch(prompt):
        raise InteropError("test_prompt takes one utterance, not a batch")
    segments = [prompt] if isinstance(prompt, (Speech, Text)) else list(prompt)
    prompt_tokens = model.encode(segments).tokens[0]
    full = model.encode([*segments, *_answer_segments(answer)]).tokens[0]
    n = prompt_tokens.shape[0]
    if full.shape[0] <= n or not torch.equal(full[:n], prompt_tokens):
        raise InteropError(
            "the answer changes how the prompt is tokenized (the tokenizer merges across the boundary); "
            "end the prompt at a word boundary or start the answer with a space"
        )
    with torch.no_grad():
        logits = model(full[None].to(model.cfg.device))[0].float()
    log_probs = logits.log_softmax(-1)
    decode = model.tokenizer.batch_decode
    rows = []
    for position in range(n, full.shape[0]):
        token = int(full[position])
        step_logits = logits[position - 1]
        rank = int((step_logits > step_logits[token]).sum())
        top = torch.topk(step_logits, top_k).indices.tolist()
        rows.append(
            {
                "position": position,
                "token": token,
                "str_token": decode([[token]], clean_up_tokenization_spaces=False)[0],
                "logit": float(step_logits[token]),
                "prob": float(log_probs[position - 1, token].exp()),
                "rank": rank,
                "top_k": decode([[t] for t in top], clean_up_tokenization_spaces=False),
            }
        )
    frame = pd.DataFrame(rows)
    if print_details:
        print(
            "Tokenized prompt:", decode([[int(t)] for t in prompt_tokens], clean_up_tokenization_spaces=False)
        )
        print("Tokenized answer:", frame["str_token"].tolist())
        for row in frame.itertuples():
            print(
                f"Performance on answer token:\nRank: {row.rank: <8} Logit: {row.logit:5.2f} "
                f"Prob: {row.prob:6.2%} Token: |{row.str_token}|"
            )
            print("Top tokens:", row.top_k)
    return frame


test_prompt.__test__ = False  # type: ignore[attr-defined]  (not a pytest test when imported by name)
