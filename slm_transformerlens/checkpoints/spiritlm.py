"""SpiritLM checkpoints (Meta, 2024): a plain ``LlamaForCausalLM`` with a SentencePiece tokenizer.

On disk: ``config.json``, ``pytorch_model.bin`` (read with ``weights_only=True``) or safetensors,
``tokenizer.model`` holding ``[Text]``, ``[Speech]``, ``[Hu0]``.. and, for Expressive, pitch
``[Pi0]``.. and style ``[St0]``.. tokens, ``tokenizer_config.json``, ``special_tokens_map.json``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from slm_transformerlens.checkpoints.base import (
    CheckpointLayout,
    LoadOptions,
    StringConventions,
    register_family,
)
from slm_transformerlens.checkpoints.hf_dir import read_hf_layout
from slm_transformerlens.checkpoints.tokenizers import bos_if_prepended
from slm_transformerlens.vocab import SpeechVocab

__all__ = [
    "SPIRITLM_CONVENTIONS",
    "SPIRITLM_EXTRA_FORMATS",
    "SPIRITLM_HUBERT_RATE",
    "SPIRITLM_MARKERS",
    "SpiritLMFamily",
    "normalize_spiritlm_text",
]

SPIRITLM_MARKERS: dict[str, str] = {"text": "[Text]", "speech": "[Speech]"}
SPIRITLM_EXTRA_FORMATS: dict[str, str] = {"pitch": "[Pi{}]", "style": "[St{}]"}
_MAX_PADDING_ROWS = 512
#: SpiritLM's HuBERT token rate used to merge units with pitch/style tokens by time.
SPIRITLM_HUBERT_RATE: float = 24.99
_PUNCT = re.compile(r"[^\w\s']", re.UNICODE)


def normalize_spiritlm_text(word: str) -> str:
    """SpiritLM text convention for one word: lowercase, punctuation removed (intra-word ``'`` kept)."""
    return _PUNCT.sub("", word.lower()).strip().strip("'")


#: SpiritLM's string conventions: ``[Text] once upon a[Speech][Hu12]...``, a marker also before an
#: all-speech utterance (as ``Spiritlm._build_prompt`` does), normalised text, Expressive tokens merged
#: with units by time at 24.99 Hz.
SPIRITLM_CONVENTIONS = StringConventions(
    speech_only_marker=True,
    unit_rate_hz=SPIRITLM_HUBERT_RATE,
    normalize_text=normalize_spiritlm_text,
    expressive_tokens=True,
)


class SpiritLMFamily:
    """Reader for SpiritLM Base and Expressive checkpoints."""

    name = "spiritlm"
    conventions = SPIRITLM_CONVENTIONS

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
