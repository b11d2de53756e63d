"""SIMS checkpoints: slamkit's ``UnitLM`` wrapper around a Qwen2.5 or Llama-3.2 base LM.

On disk: ``config.json`` with ``model_type: "speech_language_model"``, ``architectures:
["UnitLM"]``, ``base_model_name``, the nested ``base_config``, ``vocab_size`` and
``tie_word_embeddings``; safetensors weights (single or sharded) whose keys are the base
model's keys prefixed with ``lm.``. No tokenizer is saved: the caller passes the base text
tokenizer and we extend it as slamkit does (``<Un0>``..``<Un499>``, ``<speech>``, ``<text>``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slm_transformerlens.checkpoints.base import (
    DEFAULT_CONVENTIONS,
    CheckpointLayout,
    LoadOptions,
    register_family,
)
from slm_transformerlens.checkpoints.build import resolve_architecture
from slm_transformerlens.checkpoints.files import find_weight_files, peek_tensor_shape, read_json
from slm_transformerlens.checkpoints.tokenizers import (
    SLAMKIT_MARKERS,
    bos_if_prepended,
    extend_like_slamkit,
    load_tokenizer,
)
from slm_transformerlens.errors import CheckpointError, MissingCheckpointFileError, VocabularyError
from slm_transformerlens.vocab import SpeechVocab

__all__ = ["BASE_TOKENIZER_FOLDER", "SIMS_PREFIX", "SimsFamily", "sims_base_config"]

#: The key prefix of the base model's weights inside slamkit's UnitLM.
SIMS_PREFIX = "lm."
_DEFAULT_UNITS = 500
#: base_config fields without a safe default: the model's shape.
_REQUIRED_BASE_FIELDS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size")
#: Where :func:`slm_transformerlens.testing.make_smollm2_checkpoint` saves the base tokenizer.
BASE_TOKENIZER_FOLDER = "base_tokenizer"


def _config(directory: Path) -> dict[str, Any]:
    return read_json(directory / "config.json", what="SIMS config")


def sims_base_config(config: dict[str, Any]) -> Any:
    """The HF config of the base LM, built from ``base_config``."""
    from transformers import AutoConfig

    base = config.get("base_config")
    if not isinstance(base, dict) or "model_type" not in base:
        raise CheckpointError(
            "SIMS config.json has no usable 'base_config' (a dict with the base LM's config and its "
            "'model_type'); this is not a slamkit UnitLM checkpoint"
        )
    try:
        defaults = AutoConfig.for_model(base["model_type"])
    except ValueError as error:
        raise CheckpointError(
            f"unknown base model_type {base['model_type']!r} in base_config: {error}"
        ) from error
    missing = [key for key in _REQUIRED_BASE_FIELDS if key not in base]
    if missing:
        resolve_architecture(defaults)  # an unsupported base model is the more useful error
        raise CheckpointError(
            f"SIMS config.json's base_config lacks {missing}; without them transformers would invent "
            "defaults that do not match the weights. Restore config.json from the original checkpoint "
            "(base_config is the base LM's own config.json)."
        )
    fields = {k: v for k, v in base.items() if k != "model_type"}
    try:
        hf_config = AutoConfig.for_model(base["model_type"], **fields)
    except ValueError as error:
        raise CheckpointError(
            f"base_config is not a valid {base['model_type']!r} config ({' '.join(str(error).split())}); "
            "restore config.json from the original checkpoint"
        ) from error
    if "tie_word_embeddings" in config:
        hf_config.tie_word_embeddings = bool(config["tie_word_embeddings"])
    return hf_config


class SimsFamily:
    """Reader for slamkit ``UnitLM`` (SIMS) checkpoints."""

    name = "sims"
    conventions = DEFAULT_CONVENTIONS  # slamkit's: bare units when all speech, text words verbatim

    def detect(self, directory: Path) -> bool:
        path = directory / "config.json"
        if not path.is_file():
            return False
        config = _config(directory)
        return config.get("model_type") == "speech_language_model" or "UnitLM" in (
            config.get("architectures") or []
        )

    def _layout(self, directory: Path) -> tuple[dict[str, Any], Any, int, int]:
        config = _config(directory)
        hf_config = sims_base_config(config)
        if "vocab_size" not in config:
            raise CheckpointError("SIMS config.json has no 'vocab_size' (base tokenizer + units + 2 markers)")
        vocab_size = int(config["vocab_size"])
        n_units = int(config.get("num_units", config.get("n_units", _DEFAULT_UNITS)))
        return config, hf_config, vocab_size, n_units

    def read_layout(self, directory: Path, options: LoadOptions) -> CheckpointLayout:
        config, hf_config, vocab_size, n_units = self._layout(directory)
        base_name = str(config.get("base_model_name") or "the base LM")
        tokenizer_spec = options.tokenizer
        if tokenizer_spec is None and (directory / BASE_TOKENIZER_FOLDER).is_dir():
            tokenizer_spec = directory / BASE_TOKENIZER_FOLDER  # saved beside the weights by our builder
        if tokenizer_spec is None:
            raise MissingCheckpointFileError(
                f"SIMS checkpoints do not ship a tokenizer: slamkit rebuilds it from the base text tokenizer. "
                f"Pass tokenizer= the tokenizer of {base_name!r} (a local directory with its tokenizer files, "
                f"or a loaded tokenizer); it is extended with {n_units} unit tokens, <speech> and <text>. "
                f"A {BASE_TOKENIZER_FOLDER}/ folder inside the checkpoint is used when present."
            )
        tokenizer = load_tokenizer(tokenizer_spec, what=f"base tokenizer of {base_name}")
        tokenizer = extend_like_slamkit(
            tokenizer, n_units=n_units, expected_size=vocab_size, base_model_name=base_name
        )
        weights = find_weight_files(directory)
        rows_shape = peek_tensor_shape(weights, f"{SIMS_PREFIX}model.embed_tokens.weight")
        rows = rows_shape[0] if rows_shape else vocab_size
        if rows < vocab_size:
            raise VocabularyError(
                f"the embedding has {rows} rows but config.json says vocab_size {vocab_size}; the weights "
                "and the config belong to different checkpoints"
            )
        hf_config.vocab_size = rows
        vocab = SpeechVocab.from_tokenizer(
            tokenizer,
            vocab_size=rows,
            family=self.name,
            unit_format="<Un{}>",
            marker_tokens=SLAMKIT_MARKERS,
            bos_token_id=bos_if_prepended(tokenizer),
        )
        if vocab.units.start != vocab_size - n_units - 2 or vocab.n_units != n_units:
            raise VocabularyError(
                f"unit tokens sit at ids {vocab.units.to_list()}, but slamkit's layout puts them at "
                f"[{vocab_size - n_units - 2}, {vocab_size - 2}); the tokenizer was extended differently"
            )
        return CheckpointLayout(
            hf_config=hf_config,
            architecture=resolve_architecture(hf_config),
            tokenizer=tokenizer,
            speech_vocab=vocab,
            weights=weights,
            rename=_strip_unit_lm_prefix,
            metadata={
                "base_model_name": config.get("base_model_name"),
                "twist_init": config.get("twist_init"),
            },
        )


def _strip_unit_lm_prefix(key: str) -> str:
    if not key.startswith(SIMS_PREFIX):
        raise CheckpointError(
            f"weight {key!r} lacks the {SIMS_PREFIX!r} prefix of slamkit's UnitLM; is this a plain HF "
            "checkpoint? Load it with family='generic'"
        )
    return key[len(SIMS_PREFIX) :]


register_family(SimsFamily())
