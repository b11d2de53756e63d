"""slm_transformerlens: TransformerLens for interleaved speech-text language models.

Load a speech LM checkpoint (SIMS, SpiritLM or any HF causal LM with unit tokens) as a
TransformerLens ``TransformerBridge`` that knows which ids are text and which are speech.
"""

from slm_transformerlens.errors import (
    CheckpointError,
    MissingCheckpointFileError,
    SLMError,
    SpeechInputError,
    UnsupportedArchitectureError,
    VocabularyError,
)
from slm_transformerlens.model import HookedSLM, load
from slm_transformerlens.vocab import SpeechVocab, TokenRange

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "HookedSLM",
    "MissingCheckpointFileError",
    "SLMError",
    "SpeechInputError",
    "SpeechVocab",
    "TokenRange",
    "UnsupportedArchitectureError",
    "VocabularyError",
    "__version__",
    "load",
]
