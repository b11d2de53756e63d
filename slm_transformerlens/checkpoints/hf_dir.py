"""Reading a plain Hugging Face causal-LM directory (config.json + weights + tokenizer files).

Shared by the SpiritLM and generic families, which differ only in how they find the speech
tokens in the tokenizer.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from slm_transformerlens.checkpoints.base import CheckpointLayout, LoadOptions
from slm_transformerlens.checkpoints.build import resolve_architecture
from slm_transformerlens.checkpoints.files import find_weight_files, read_json
from slm_transformerlens.checkpoints.tokenizers import load_tokenizer
from slm_transformerlens.errors import CheckpointError, VocabularyError
from slm_transformerlens.vocab import SpeechVocab

__all__ = ["hf_config_of", "read_hf_layout"]

#: Config keys that set the weights' shapes: a default filled in for one of them builds another model.
_SHAPE_KEYS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size")


def hf_config_of(directory: Path) -> Any:
    """The HF config of a plain causal-LM directory."""
    from transformers import AutoConfig

    stored = read_json(directory / "config.json", what="model config")  # clear error when absent or broken
    if "vocab_size" not in stored:
        raise CheckpointError(
            f"{directory / 'config.json'} has no 'vocab_size' (the embedding's row count); transformers would "
            "fill in a default that does not match the weights. Restore config.json from the original "
            "checkpoint, or add the row count of model.embed_tokens.weight as vocab_size."
        )
    try:
        config = AutoConfig.from_pretrained(str(directory))
    except (ValueError, KeyError) as error:
        raise CheckpointError(
            f"{directory / 'config.json'} is not a config transformers can read: {error}"
        ) from error
    aliases = getattr(config, "attribute_map", {}) or {}
    missing = [
        key
        for key in _SHAPE_KEYS
        if hasattr(config, key) and key not in stored and aliases.get(key) not in stored
    ]
    if missing and "text_config" not in stored:
        defaults = ", ".join(f"{key}={getattr(config, key)!r}" for key in missing)
        raise CheckpointError(
            f"{directory / 'config.json'} has no {missing}: transformers would fill in its defaults ({defaults}), "
            "which need not match the weights. Restore config.json from the original checkpoint, or add "
            f"{missing[0]!r} (num_hidden_layers = the number of model.layers.N blocks in the weights)."
        )
    return config


def read_hf_layout(
    directory: Path,
    options: LoadOptions,
    *,
    family: str,
    make_vocab: Callable[[Any, int], SpeechVocab],
    max_padding_rows: int,
) -> CheckpointLayout:
    """The layout of a plain HF causal-LM directory.

    Args:
        directory: the checkpoint directory.
        options: load options (``options.tokenizer`` overrides the directory's own tokenizer).
        family: the family name, for error messages.
        make_vocab: ``(tokenizer, embedding_rows) -> SpeechVocab``.
        max_padding_rows: how many embedding rows beyond the tokenizer this family may have.

    Raises:
        VocabularyError: the tokenizer is larger than the embedding, or smaller by more than the
            family's padding rows.
    """
    hf_config = hf_config_of(directory)
    architecture = resolve_architecture(hf_config)
    tokenizer = load_tokenizer(options.tokenizer if options.tokenizer is not None else directory)
    rows = int(hf_config.vocab_size)
    padding = rows - len(tokenizer)
    if padding < 0 or padding > max_padding_rows:
        raise VocabularyError(
            f"the tokenizer has {len(tokenizer)} tokens but the model's embedding has {rows} rows "
            f"({family} checkpoints have at most {max_padding_rows} padding rows beyond the tokenizer). "
            "The tokenizer does not belong to this checkpoint: pass tokenizer= the checkpoint's own."
        )
    return CheckpointLayout(
        hf_config=hf_config,
        architecture=architecture,
        tokenizer=tokenizer,
        speech_vocab=make_vocab(tokenizer, rows),
        weights=find_weight_files(directory),
        metadata={"padding_rows": padding},
    )
