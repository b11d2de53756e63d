"""The model organism: a small interleaved speech LM trained here with the SIMS recipe, and its ablations.

Stages (``slm-lens organism build | train | evaluate``): :mod:`~slm_transformerlens.organism.corpus`
(text and fact base), :mod:`~slm_transformerlens.organism.espeak` (speech with exact word timings),
:mod:`~slm_transformerlens.organism.units` (25 Hz units), :mod:`~slm_transformerlens.organism.tokenizer`,
:mod:`~slm_transformerlens.organism.build` (token streams in the SIMS layout),
:mod:`~slm_transformerlens.organism.train` (imports only torch / transformers / safetensors / numpy),
:mod:`~slm_transformerlens.organism.evaluate` and :mod:`~slm_transformerlens.organism.report`;
heard across runs (seeds, recipes; ``slm-lens organism spread``): :mod:`~slm_transformerlens.organism.spread`.
The packaged models: :mod:`~slm_transformerlens.organism.shipped`; the SmolLM2-135M organism (LoRA + unit
rows over the real SmolLM2, shipped as a delta): :mod:`~slm_transformerlens.organism.smollm2`. A WAV to
the organism's units: :mod:`~slm_transformerlens.organism.speech_tokenizer` (imported on first use).
"""

import importlib
from typing import Any

from slm_transformerlens.organism.shipped import (
    MAIN,
    SMOLLM2_MAIN,
    heldout_utterances,
    load_organism,
    load_smollm2_organism,
    shipped_checkpoint,
    shipped_models,
    shipped_root,
)

__all__ = [
    "MAIN",
    "SMOLLM2_MAIN",
    "OrganismSpeechTokenizer",
    "heldout_utterances",
    "load_organism",
    "load_smollm2_organism",
    "organism_speech_tokenizer",
    "shipped_checkpoint",
    "shipped_models",
    "shipped_root",
]

#: Names imported on first access (the speech tokenizer needs jaxtyping; training must not).
_LAZY = {
    "OrganismSpeechTokenizer": "slm_transformerlens.organism.speech_tokenizer",
    "organism_speech_tokenizer": "slm_transformerlens.organism.speech_tokenizer",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
