"""The checkpoint-family protocol, the result of reading a checkpoint, and the family registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from slm_transformerlens.checkpoints.files import WeightFiles
from slm_transformerlens.errors import CheckpointError
from slm_transformerlens.vocab import SpeechVocab

__all__ = [
    "DEFAULT_CONVENTIONS",
    "CheckpointFamily",
    "CheckpointLayout",
    "LoadOptions",
    "LoadedCheckpoint",
    "StringConventions",
    "detect_family",
    "get_family",
    "list_families",
    "read_weights",
    "register_family",
]


@dataclass(frozen=True)
class LoadOptions:
    """What the caller asked for when loading.

    Attributes:
        tokenizer: a tokenizer object or a local directory holding one (for SIMS: the BASE text
            tokenizer, which is extended with the unit tokens as slamkit does).
        device: where the parameters go.
        dtype: the parameter dtype.
        unit_format: the unit token format (generic family), e.g. ``"<Un{}>"``.
        marker_tokens: marker token strings by role (generic family).
        progress: show progress bars.
        device_map: a split over several devices (``"auto"``, ..., or module name -> device), or ``None``
            for ``device`` alone (:mod:`slm_transformerlens.checkpoints.placement`).
        n_devices: ``"balanced"`` over the first ``n_devices`` GPUs, or ``None``.
    """

    tokenizer: Any = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    unit_format: str | None = None
    marker_tokens: dict[str, str] | None = None
    progress: bool = True
    device_map: Any = None
    n_devices: int | None = None


@dataclass
class LoadedCheckpoint:
    """A checkpoint read from disk: the HF model, its tokenizer and its vocabulary layout.

    Attributes:
        family: the family that read it.
        path: the checkpoint directory.
        hf_model: the base causal LM (``LlamaForCausalLM``, ``Qwen2ForCausalLM``, ...), in eval mode.
        hf_config: the base model's HF config.
        architecture: the bridge architecture key, e.g. ``"Qwen2ForCausalLM"``.
        tokenizer: the full (speech-extended) tokenizer.
        speech_vocab: the vocabulary layout.
        metadata: family-specific facts (base model name, twist init, weight format, ...).
    """

    family: str
    path: Path
    hf_model: nn.Module
    hf_config: Any
    architecture: str
    tokenizer: Any
    speech_vocab: SpeechVocab
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class CheckpointLayout:
    """Everything about a checkpoint except its weights (cheap to read: config and tokenizer only).

    Attributes:
        hf_config: the base model's HF config (``vocab_size`` = embedding rows).
        architecture: the bridge architecture key.
        tokenizer: the full (speech-extended) tokenizer.
        speech_vocab: the vocabulary layout.
        weights: the weight files.
        rename: maps a weight key on disk to the HF model's key.
        metadata: family-specific facts.
    """

    hf_config: Any
    architecture: str
    tokenizer: Any
    speech_vocab: SpeechVocab
    weights: WeightFiles
    rename: Callable[[str], str | None] = lambda key: key
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StringConventions:
    """How a family writes an utterance as the one string its tokenizer reads.

    The encoder (:func:`slm_transformerlens.speech.encode_utterances`) follows these and nothing else, so a
    new family states its conventions here (on its family object) and needs no change in ``speech``. The
    marker and unit token strings themselves are part of the family's :class:`SpeechVocab`.

    Attributes:
        speech_only_marker: put the speech marker before an all-speech utterance (SpiritLM's
            ``_build_prompt`` does; slamkit evaluates SIMS on bare units).
        unit_rate_hz: the unit frame rate used to merge unit tokens with timed pitch / style tokens
            (SpiritLM: 24.99 Hz); ``None``: the ``Speech`` segment's own frame rate.
        normalize_text: maps one text word to its text as the family writes it (SpiritLM: lowercase, no
            punctuation); the result gets one leading space, and an empty result owns no token. ``None``:
            the word verbatim (its leading space kept).
        expressive_tokens: pitch / style tokens are this family's convention (others warn).
    """

    speech_only_marker: bool = False
    unit_rate_hz: float | None = None
    normalize_text: Callable[[str], str] | None = None
    expressive_tokens: bool = False

    def text_string(self, word: str) -> str:
        """One text word as it appears in the family's string (``""``: the word owns no token)."""
        if self.normalize_text is None:
            return word
        normalized = self.normalize_text(word)
        return " " + normalized if normalized else ""

    def unit_rate(self, frame_duration: float) -> float:
        """Units per second for timing units against pitch / style tokens."""
        return self.unit_rate_hz if self.unit_rate_hz is not None else 1.0 / frame_duration


#: The SIMS / slamkit conventions, also used by ``generic`` and by any family that states none.
DEFAULT_CONVENTIONS = StringConventions()


@runtime_checkable
class CheckpointFamily(Protocol):
    """A reader for one on-disk checkpoint family, with the conventions of its token strings."""

    name: str
    conventions: StringConventions

    def detect(self, directory: Path) -> bool:
        """Whether ``directory`` looks like a checkpoint of this family (cheap: no weights read)."""
        ...

    def read_layout(self, directory: Path, options: LoadOptions) -> CheckpointLayout:
        """Config, tokenizer, vocabulary and weight files, without reading the weights."""
        ...


def read_weights(family: CheckpointFamily, directory: Path, options: LoadOptions) -> LoadedCheckpoint:
    """Read a checkpoint of ``family``: its layout, then its weights (streamed, meta-device build)."""
    from slm_transformerlens.checkpoints.build import build_causal_lm

    layout = family.read_layout(directory, options)
    model = build_causal_lm(
        layout.hf_config,
        layout.weights,
        dtype=options.dtype,
        device=options.device,
        rename=layout.rename,
        progress=options.progress,
        device_map=options.device_map,
        n_devices=options.n_devices,
    )
    return LoadedCheckpoint(
        family=family.name,
        path=directory,
        hf_model=model,
        hf_config=layout.hf_config,
        architecture=layout.architecture,
        tokenizer=layout.tokenizer,
        speech_vocab=layout.speech_vocab,
        metadata={
            **layout.metadata,
            "weight_format": layout.weights.format,
            "weight_files": [f.name for f in layout.weights.files],
            "weight_bytes": layout.weights.total_bytes,
        },
    )


_FAMILIES: dict[str, CheckpointFamily] = {}


def register_family(family: CheckpointFamily) -> CheckpointFamily:
    """Add a family to the registry (later registrations are tried first by detection)."""
    _FAMILIES[family.name] = family
    return family


def list_families() -> list[str]:
    """Names of the registered families."""
    return list(_FAMILIES)


def get_family(name: str) -> CheckpointFamily:
    """The family called ``name``."""
    try:
        return _FAMILIES[name]
    except KeyError:
        raise CheckpointError(
            f"unknown checkpoint family {name!r}; known families are {list(_FAMILIES)}"
        ) from None


def detect_family(directory: Path) -> CheckpointFamily:
    """The first registered family (most specific first) whose ``detect`` accepts ``directory``."""
    for family in reversed(list(_FAMILIES.values())):
        if family.detect(directory):
            return family
    raise CheckpointError(
        f"{directory} is not a checkpoint of any known family ({list(_FAMILIES)}): no config.json with "
        "model_type 'speech_language_model' (SIMS), no Llama config with a [Hu0] tokenizer (SpiritLM), "
        "and no supported causal-LM config (generic). Pass family= to force one."
    )
