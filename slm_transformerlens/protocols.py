"""What the analyses need from a model, as a typing ``Protocol`` (instead of ``model: Any``).

:class:`SpeechLM` is satisfied by the :class:`~slm_transformerlens.model.HookedSLM` that
:func:`slm_transformerlens.load` returns (a TransformerLens ``TransformerBridge``), by the
``HookedTransformer`` of :func:`slm_transformerlens.legacy.to_hooked_transformer`, and by any TransformerLens
model that carries a :class:`~slm_transformerlens.vocab.SpeechVocab` as ``speech_vocab``: the analyses use
TransformerLens' hook API (``model.hooks(...)``, ``model(tokens, ...)``, ``run_with_cache``), its config
(``cfg.n_layers``, ``cfg.d_model``, ``cfg.n_heads``, ``cfg.device``), the tokenizer and the vocabulary
layout. It is ``runtime_checkable``: ``isinstance(model, SpeechLM)`` checks those attributes exist.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

from slm_transformerlens.vocab import SpeechVocab

__all__ = ["SpeechLM"]


@runtime_checkable
class SpeechLM(Protocol):
    """A TransformerLens model of a speech LM: hooks, config, tokenizer and speech vocabulary."""

    cfg: Any
    tokenizer: Any
    speech_vocab: SpeechVocab

    def hooks(self, *args: Any, **kwargs: Any) -> AbstractContextManager[Any]:
        """TransformerLens' context manager that attaches forward / backward hooks."""
        ...

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The forward pass (``model(tokens, return_type=..., stop_at_layer=...)``)."""
        ...
