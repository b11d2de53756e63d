"""SpiritLM checkpoints (Meta, 2024): a plain ``LlamaForCausalLM`` with a SentencePiece tokenizer.

On disk: ``config.json``, ``pytorch_model.bin`` (read with ``weights_only=True``) or safetensors,
``tokenizer.model`` holding ``[Text]``, ``[Speech]``, ``[Hu0]``.. and, for Expressive, pitch
``[Pi0]``.. and style ``[St0]``.. tokens, ``tokenizer_config.json``, ``special_tokens_map.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slm_transformerlens.checkpoints.base import CheckpointLayout, LoadOptions, register_family
from slm_transformerlens.checkpoints.hf_dir import read_hf_layout
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
        if not (directory / "config.json").is_file():
            return False
        for name in ("tokenizer.model", "tokenizer.json"):
            path = directory / name
            if path.is_file():
                content = path.read_bytes()
                if b"[Hu0]" in content and b"[Speech]" in content:
                    return True
        return False

    def read_layout(self, directory: Path, options: LoadOptions) -> CheckpointLayout:
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

        layout = read_hf_layout(
            directory, options, family=self.name, make_vocab=make_vocab, max_padding_rows=_MAX_PADDING_ROWS
        )
        layout.metadata["variant"] = "expressive" if layout.speech_vocab.extra_groups else "base"
        return layout


register_family(SpiritLMFamily())
