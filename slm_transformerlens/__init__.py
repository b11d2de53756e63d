"""slm_transformerlens: TransformerLens for interleaved speech-text language models.

Load a speech LM checkpoint (SIMS, SpiritLM or any HF causal LM with unit tokens) as a
TransformerLens ``TransformerBridge`` that knows which ids are text and which are speech, feed it
``Speech`` / ``Text`` utterances, and analyse it with :mod:`slm_transformerlens.lens` (logit lens,
tuned lens, the paper's transcription metrics) and :mod:`slm_transformerlens.patching`
(word-aligned activation patching).

The top-level names are imported lazily (PEP 562), so ``import slm_transformerlens`` and
``slm-lens --help`` do not pay for importing torch and TransformerLens until a name needs them.
See ``docs/architecture.md`` for the layout of the package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from slm_transformerlens.errors import (
    CheckpointError,
    DevicePlacementError,
    MissingCheckpointFileError,
    SLMError,
    SpeechInputError,
    UnsupportedArchitectureError,
    VocabularyError,
)

if TYPE_CHECKING:
    from slm_transformerlens.interop.hf_export import export_hf, load_hf
    from slm_transformerlens.model import HookedSLM, load
    from slm_transformerlens.speech.inputs import Speech, Text
    from slm_transformerlens.vocab import SpeechVocab, TokenRange

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "DevicePlacementError",
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
    "export_hf",
    "load",
    "load_hf",
]

#: top-level name -> the module that defines it (imported on first access).
_LAZY: dict[str, str] = {
    "HookedSLM": "slm_transformerlens.model",
    "load": "slm_transformerlens.model",
    "Speech": "slm_transformerlens.speech.inputs",
    "Text": "slm_transformerlens.speech.inputs",
    "SpeechVocab": "slm_transformerlens.vocab",
    "TokenRange": "slm_transformerlens.vocab",
    "export_hf": "slm_transformerlens.interop.hf_export",
    "load_hf": "slm_transformerlens.interop.hf_export",
}


def __getattr__(name: str) -> Any:
    """Import a top-level name (or a subpackage such as ``slm_transformerlens.lens``) on first use."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as error:
        if error.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
