"""SpiritLM checkpoints (Meta, 2024): a plain ``LlamaForCausalLM`` with a SentencePiece tokenizer.

On disk: ``config.json``, ``pytorch_model.bin`` (read with ``weights_only=True``) or safetensors,
``tokenizer.model`` holding ``[Text]``, ``[Speech]``, ``[Hu0]``.. and, for Expressive, pitch
``[Pi0]``.. and style ``[St0]``.. tokens, ``tokenizer_config.json``, ``special_tokens_map.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slm_transformerlens.checkpoints.base import LoadedCheckpoint, LoadOptions, register_family
from slm_transformerlens.checkpoints.hf_dir import hf_config_of, read_hf_directory
from slm_transformerlens.checkpoints.tokenizers import bos_if_prepended
from slm_transformerlens.vocab import SpeechVocab

__all__ = ["SPIRITLM_EXTRA_FORMATS", "SPIRITLM_MARKERS", "SpiritLMFamily"]

SPIRITLM_MARKERS: dict[str, str] = {"text": "[Text]", "speech": "[Speech]"}
SPIRITLM_EXTRA_FORMATS: dict[str, str] = {"pitch": "[Pi{}]", "style": "[St{}]"}
_MAX_PADDING_ROWS = 512


class SpiritLMFamily:
    """Reader for SpiritLM Base and Expressive checkpoints."""

    name = "spiritlm"

    def detect(self, directory: Path) -> bool:
        sp_model = directory / "tokenizer.model"
        if not (directory / "config.json").is_file() or not sp_model.is_file():
            return False
        return b"[Hu0]" in sp_model.read_bytes() and b"[Speech]" in sp_model.read_bytes()

    def describe(self, directory: Path, options: LoadOptions) -> dict[str, Any]:
        return {"hf_config": hf_config_of(directory)}

    def read(self, directory: Path, options: LoadOptions) -> LoadedCheckpoint:
        def make_vocab(tokenizer: Any, rows: int) -> SpeechVocab:
            return SpeechVocab.from_tokenizer(
                tokenizer,
                vocab_size=rows,
                family=self.name,
                unit_format="[Hu{}]",
                marker_tokens=SPIRITLM_MARKERS,
                extra_formats=SPIRITLM_EXTRA_FORMATS,
                bos_token_id=bos_if_prepended(tokenizer),
            )

        loaded = read_hf_directory(
            directory, options, family=self.name, make_vocab=make_vocab, max_padding_rows=_MAX_PADDING_ROWS
        )
        loaded.metadata["variant"] = "expressive" if loaded.speech_vocab.extra_groups else "base"
        return loaded


register_family(SpiritLMFamily())
