"""Exceptions raised by slm_transformerlens.

Every error names the problem and, where there is one, the fix. They all derive from
:class:`SLMError`, and from the built-in exception a caller would naturally catch
(``ValueError`` for bad input, ``FileNotFoundError`` for missing files).
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "DevicePlacementError",
    "LensError",
    "MissingCheckpointFileError",
    "NonFiniteError",
    "OutputError",
    "SLMError",
    "SpeechInputError",
    "UnsupportedArchitectureError",
    "VocabularyError",
]


class SLMError(Exception):
    """Base class of every error raised by slm_transformerlens."""


class CheckpointError(SLMError, ValueError):
    """A checkpoint directory is malformed or inconsistent."""


class DevicePlacementError(CheckpointError):
    """A device map (or ``n_devices``) cannot be honoured: an unknown or absent device, a module it does
    not cover, tied weights split across devices, a conflict with ``device``, or accelerate missing."""


class MissingCheckpointFileError(SLMError, FileNotFoundError):
    """A file the checkpoint needs (config, weights, shard, tokenizer) is missing."""


class UnsupportedArchitectureError(CheckpointError):
    """The base architecture of a checkpoint is not one TransformerLens can wrap."""


class VocabularyError(SLMError, ValueError):
    """The tokenizer and the model disagree about the vocabulary, or units are malformed."""


class SpeechInputError(SLMError, ValueError):
    """A speech input (audio, units, alignment, interleaving) is invalid."""


class LensError(SLMError, ValueError):
    """A lens was asked for something it cannot do (bad layer or site, wrong model, bad file)."""


class NonFiniteError(SLMError, ValueError):
    """A weight, activation or logit is NaN or infinite (a corrupt file or a dtype overflow)."""


class OutputError(SLMError, OSError):
    """An output folder or file cannot be written (permissions, a file in the way, a full disk)."""
