"""Helpers of the speech tests (a uniquely named module, so it never clashes with another conftest):
real tokenizers with unit tokens, vocabs, a tiny 25 Hz HuBERT config, the committed real-speech fixtures."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "speech"
FIXTURE_NAMES = sorted(p.stem for p in FIXTURES.glob("*.wav"))


@functools.cache
def sims_tokenizer(base: str) -> Any:
    """The real Qwen2.5 / Llama-3 tokenizer extended with slamkit's 500 units + markers."""
    from transformers import AutoTokenizer

    from slm_transformerlens.testing import base_tokenizer_dir, sims_unit_tokens

    tokenizer = AutoTokenizer.from_pretrained(str(base_tokenizer_dir(base)))  # type: ignore[arg-type]
    tokenizer.add_tokens(sims_unit_tokens(500))
    return tokenizer


@functools.cache
def sims_vocab(base: str) -> Any:
    from slm_transformerlens.vocab import SpeechVocab

    tokenizer = sims_tokenizer(base)
    return SpeechVocab.from_tokenizer(
        tokenizer,
        vocab_size=len(tokenizer),
        family="sims",
        unit_format="<Un{}>",
        marker_tokens={"text": "<text>", "speech": "<speech>"},
        bos_token_id=tokenizer.bos_token_id if base == "llama3" else None,
    )


@functools.cache
def spiritlm_tokenizer(expressive: bool) -> Any:
    """A SentencePiece tokenizer in SpiritLM's layout (trained here), loaded with transformers."""
    import tempfile

    from transformers import AutoTokenizer

    from slm_transformerlens.testing import make_spiritlm_tokenizer

    directory = make_spiritlm_tokenizer(Path(tempfile.mkdtemp(prefix="spiritlm_tok_")), expressive=expressive)
    return AutoTokenizer.from_pretrained(str(directory))


@functools.cache
def spiritlm_vocab(expressive: bool) -> Any:
    from slm_transformerlens.vocab import SpeechVocab

    tokenizer = spiritlm_tokenizer(expressive)
    return SpeechVocab.from_tokenizer(
        tokenizer,
        vocab_size=len(tokenizer),
        family="spiritlm",
        unit_format="[Hu{}]",
        marker_tokens={"text": "[Text]", "speech": "[Speech]"},
        extra_formats={"pitch": "[Pi{}]", "style": "[St{}]"},
        bos_token_id=tokenizer.bos_token_id,
    )


def load_fixture(name: str) -> tuple[Any, int, list[list[Any]], dict[str, Any]]:
    """(audio float32, sample_rate, aligned_text, json) of a committed fixture."""
    from slm_transformerlens.speech.audio import read_wav

    audio, rate = read_wav(FIXTURES / f"{name}.wav")
    meta = json.loads((FIXTURES / f"{name}.json").read_text())
    return audio, rate, meta["aligned_text"], meta
