"""slm_transformerlens: TransformerLens for interleaved speech-text language models.

Load a speech LM checkpoint (SIMS, SpiritLM or any HF causal LM with unit tokens) as a
TransformerLens ``TransformerBridge`` that knows which ids are text and which are speech, feed it
``Speech`` / ``Text`` utterances, and analyse it with :mod:`slm_transformerlens.lens` (logit lens,
tuned lens, the paper's transcription metrics) and :mod:`slm_transformerlens.patching`
(word-aligned activation patching).
"""

from slm_transformerlens.errors import (
    CheckpointError,
    MissingCheckpointFileError,
    SLMError,
    SpeechInputError,
    UnsupportedArchitectureError,
    VocabularyError,
)
from slm_transformerlens.interop.hf_export import export_hf, load_hf
from slm_transformerlens.model import HookedSLM, load
from slm_transformerlens.speech.inputs import Speech, Text
from slm_transformerlens.vocab import SpeechVocab, TokenRange

__version__ = "0.1.0"

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
    "export_hf",
    "load",
    "load_hf",
]
