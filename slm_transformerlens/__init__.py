"""slm_transformerlens: TransformerLens for interleaved speech-text language models.

Load a speech LM checkpoint (SIMS, SpiritLM or any HF causal LM with unit tokens) as a
TransformerLens ``TransformerBridge`` that knows which ids are text and which are speech, feed it
``Speech`` / ``Text`` utterances, and analyse it with :mod:`slm_transformerlens.lens` (logit lens,
tuned lens, the paper's transcription metrics) and :mod:`slm_transformerlens.patching`
(word-aligned activation patching).

The public names are imported lazily (PEP 562), so that modules which need neither TransformerLens
nor the bridge (e.g. :mod:`slm_transformerlens.organism.train`) import without it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module that defines it (imported on first access).
_LAZY: dict[str, str] = {
    "CheckpointError": "slm_transformerlens.errors",
    "MissingCheckpointFileError": "slm_transformerlens.errors",
    "SLMError": "slm_transformerlens.errors",
    "SpeechInputError": "slm_transformerlens.errors",
    "UnsupportedArchitectureError": "slm_transformerlens.errors",
    "VocabularyError": "slm_transformerlens.errors",
    "HookedSLM": "slm_transformerlens.model",
    "load": "slm_transformerlens.model",
    "Speech": "slm_transformerlens.speech.inputs",
    "Text": "slm_transformerlens.speech.inputs",
    "SpeechVocab": "slm_transformerlens.vocab",
    "TokenRange": "slm_transformerlens.vocab",
}

__all__ = [
    "CheckpointError",
    "HookedSLM",
    "MissingCheckpointFileError",
    "SLMError",
    "Speech",
    "SpeechInputError",
    "SpeechVocab",
    "Text",
    "TokenRange",
    "UnsupportedArchitectureError",
    "VocabularyError",
    "__version__",
    "load",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from slm_transformerlens.errors import (
        CheckpointError,
        MissingCheckpointFileError,
        SLMError,
        SpeechInputError,
        UnsupportedArchitectureError,
        VocabularyError,
    )
    from slm_transformerlens.model import HookedSLM, load
    from slm_transformerlens.speech.inputs import Speech, Text
    from slm_transformerlens.vocab import SpeechVocab, TokenRange


def __getattr__(name: str) -> Any:
    """Import a public name on first access (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'slm_transformerlens' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
