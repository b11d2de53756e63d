"""Generic speech LMs: any HF causal-LM directory whose tokenizer holds numbered unit tokens.

The unit token format is given by the caller (``unit_format="<Un{}>"``) or found among
:data:`~slm_transformerlens.vocab.KNOWN_UNIT_FORMATS`. Marker tokens are optional.
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
from slm_transformerlens.checkpoints.hf_dir import read_hf_layout
from slm_transformerlens.checkpoints.tokenizers import bos_if_prepended
from slm_transformerlens.errors import VocabularyError
from slm_transformerlens.vocab import KNOWN_UNIT_FORMATS, SpeechVocab, find_numbered_tokens

__all__ = ["GenericFamily", "guess_unit_format"]

_MAX_PADDING_ROWS = 1024


def guess_unit_format(tokenizer: Any) -> str:
    """The first of :data:`KNOWN_UNIT_FORMATS` with tokens in the tokenizer.

    Raises:
        VocabularyError: none matches; the caller must pass ``unit_format=``.
    """
    token_to_id = tokenizer.get_vocab()
    for token_format in KNOWN_UNIT_FORMATS:
        if find_numbered_tokens(token_to_id, token_format) is not None:
            return token_format
    raise VocabularyError(
        f"no speech unit tokens found: none of {list(KNOWN_UNIT_FORMATS)} matches a token of the tokenizer. "
        "Pass unit_format= with this model's unit token format, with {} where the number goes."
    )


class GenericFamily:
    """Reader for any supported HF causal LM with numbered unit tokens."""

    name = "generic"
    conventions = DEFAULT_CONVENTIONS  # slamkit's: bare units when all speech, text words verbatim

    def detect(self, directory: Path) -> bool:
        return (directory / "config.json").is_file()

    def read_layout(self, directory: Path, options: LoadOptions) -> CheckpointLayout:
        def make_vocab(tokenizer: Any, rows: int) -> SpeechVocab:
            unit_format = options.unit_format or guess_unit_format(tokenizer)
            markers = options.marker_tokens
            if markers is None:
                vocab = tokenizer.get_vocab()
                markers = {
                    role: token
                    for pair in (
                        {"text": "<text>", "speech": "<speech>"},
                        {"text": "[Text]", "speech": "[Speech]"},
                    )
                    if all(t in vocab for t in pair.values())
                    for role, token in pair.items()
                }
            return SpeechVocab.from_tokenizer(
                tokenizer,
                vocab_size=rows,
                family=self.name,
                unit_format=unit_format,
                marker_tokens=markers,
                bos_token_id=bos_if_prepended(tokenizer),
            )

        return read_hf_layout(
            directory, options, family=self.name, make_vocab=make_vocab, max_padding_rows=_MAX_PADDING_ROWS
        )


register_family(GenericFamily())
