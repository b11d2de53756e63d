"""SAELens on speech LMs (transformer-lens 3.x, where SAELens lives).

- :func:`~slm_transformerlens.legacy.to_hooked_transformer` takes ``model_class=HookedSAETransformer``
  and returns a model whose ``to_tokens`` / ``forward`` / ``run_with_cache`` / ``run_with_saes`` /
  ``run_with_cache_with_saes`` accept ``Speech`` / ``Text`` inputs (:class:`SpeechInputsMixin`).
- :func:`sae_exclude_token_ids`: the ids to pass as ``exclude_special_tokens`` (SAELens' ``True``
  covers BOS / EOS / PAD only, not the ``<speech>`` / ``<text>`` markers).
- :func:`token_dataset` / :func:`export_token_dataset`: interleaved utterances as a pre-tokenized
  ``input_ids`` data set (rows of ``context_size`` tokens) for SAELens training.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm

from slm_transformerlens.interop.errors import InteropError

__all__ = [
    "SpeechInputsMixin",
    "export_token_dataset",
    "sae_exclude_token_ids",
    "speech_model_class",
    "token_dataset",
]

_STRUCTURAL = ("bos_token_id", "eos_token_id", "pad_token_id", "sep_token_id")


def _is_speech(value: Any) -> bool:
    from slm_transformerlens.speech.interleave import is_speech_input

    return is_speech_input(value)


class SpeechInputsMixin:
    """``Speech`` / ``Text`` inputs for a transformer-lens 3.x ``HookedTransformer`` (or subclass).

    Needs ``speech_vocab``, ``tokenizer`` and ``cfg`` on the model (``to_hooked_transformer`` sets
    them). Encoding is the family's (as ``HookedSLM.encode``); a batch is right-padded and its
    attention mask passed to ``forward``, so padded and unpadded runs agree at real positions.
    """

    speech_vocab: Any
    tokenizer: Any
    cfg: Any

    def encode(self, speech_input: Any) -> Any:
        """Tokens, attention mask and word spans of ``Speech`` / ``Text`` input (``EncodedBatch``)."""
        from slm_transformerlens.speech.interleave import encode_utterances

        return encode_utterances(
            speech_input,
            self.speech_vocab,
            self.tokenizer,
            n_ctx=getattr(self.cfg, "n_ctx", None),
            pad_id=self.tokenizer.pad_token_id,
        )

    def to_tokens(self, input: Any, *args: Any, **kwargs: Any) -> Int[Tensor, "batch pos"]:
        """HookedTransformer's ``to_tokens``, also for ``Speech`` / ``Text`` inputs."""
        if _is_speech(input):
            return self.encode(input).tokens.to(self.cfg.device)
        return super().to_tokens(input, *args, **kwargs)  # type: ignore[misc]

    def to_str_tokens(self, input: Any, *args: Any, **kwargs: Any) -> Any:
        """HookedTransformer's ``to_str_tokens``, also for ``Speech`` / ``Text`` inputs."""
        if _is_speech(input):
            from slm_transformerlens.interop.generation import to_str_tokens

            return to_str_tokens(self, input)
        return super().to_str_tokens(input, *args, **kwargs)  # type: ignore[misc]

    def forward(self, input: Any, *args: Any, **kwargs: Any) -> Any:
        """HookedTransformer's ``forward``, also for ``Speech`` / ``Text`` inputs."""
        if _is_speech(input):
            from slm_transformerlens.model import speech_forward_args

            input, kwargs = speech_forward_args(self, input, kwargs)
        return super().forward(input, *args, **kwargs)  # type: ignore[misc]


@functools.cache
def speech_model_class(model_class: type) -> type:
    """``model_class`` (``HookedTransformer`` or a subclass such as ``HookedSAETransformer``) with speech inputs."""
    return type(f"Speech{model_class.__name__}", (SpeechInputsMixin, model_class), {"__module__": __name__})


def sae_exclude_token_ids(model: Any) -> list[int]:
    """Ids an SAE should skip on a speech LM: the modality markers and the structural specials.

    Pass the list as SAELens' ``exclude_special_tokens`` (``add_sae``, ``run_with_saes`` or the
    training config). SAELens' ``True`` takes BOS / EOS / PAD / SEP from the tokenizer, which misses
    ``<speech>`` / ``<text>`` (``[Speech]`` / ``[Text]``), tokens that carry no content and whose
    activations are outliers.
    """
    vocab = model.speech_vocab
    ids = set(vocab.markers.values())
    if vocab.bos_token_id is not None:
        ids.add(int(vocab.bos_token_id))
    for attribute in _STRUCTURAL:
        value = getattr(model.tokenizer, attribute, None)
        if value is not None:
            ids.add(int(value))
    return sorted(ids)


def token_dataset(model: Any, utterances: Iterable[Any], *, context_size: int, progress: bool = True) -> Any:
    """Interleaved utterances as a ``datasets.Dataset`` of ``input_ids`` rows of ``context_size`` tokens.

    Each utterance is encoded with the family's conventions (BOS included where the family has one),
    the token streams are concatenated in order and cut into rows of exactly ``context_size``
    tokens; the last incomplete row is dropped. SAELens takes the result as a pre-tokenized data
    set (``override_dataset=`` or, saved with :func:`export_token_dataset`, ``dataset_path=``).

    Raises:
        InteropError: ``context_size`` is not positive, or the utterances hold fewer tokens than one row.
    """
    import datasets

    if context_size <= 0:
        raise InteropError(f"context_size must be positive, got {context_size}")
    stream: list[int] = []
    rows: list[list[int]] = []
    for utterance in tqdm(utterances, desc="encoding utterances", disable=not progress):
        encoded = model.encode(utterance)
        for row, length in zip(encoded.tokens, encoded.lengths, strict=True):
            stream.extend(int(t) for t in row[:length])
        while len(stream) >= context_size:
            rows.append(stream[:context_size])
            stream = stream[context_size:]
    if not rows:
        raise InteropError(
            f"the utterances hold {len(stream)} tokens, fewer than one row of context_size={context_size}"
        )
    return datasets.Dataset.from_dict({"input_ids": rows})


def export_token_dataset(
    model: Any, utterances: Iterable[Any], out: str | Path, *, context_size: int, progress: bool = True
) -> Path:
    """Write :func:`token_dataset` as ``out/data/train-00000-of-00001.parquet`` (``load_dataset(out)`` reads it)."""
    dataset = token_dataset(model, utterances, context_size=context_size, progress=progress)
    target = Path(out) / "data"
    target.mkdir(parents=True, exist_ok=True)
    dataset.to_parquet(str(target / "train-00000-of-00001.parquet"))
    return Path(out)
