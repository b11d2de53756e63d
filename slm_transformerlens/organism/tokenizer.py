"""The organism's base text tokenizer (a byte-level BPE trained on its corpus, in Hugging Face format)
and the SIMS layout on top of it (``<Un0>``.., ``<speech>``, ``<text>``), without building a model."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["BOS_TOKEN", "EOS_TOKEN", "sims_tokenizer_and_vocab", "train_base_tokenizer"]

BOS_TOKEN = "<|begin_of_text|>"
EOS_TOKEN = "<|end_of_text|>"


def train_base_tokenizer(sentences: Iterable[str], directory: str | Path, *, vocab_size: int = 640) -> Path:
    """Train a Llama-3-style byte-level BPE (BOS prepended, words with their leading space) and save it.

    The directory holds ``tokenizer.json`` + ``tokenizer_config.json`` and loads with
    ``AutoTokenizer.from_pretrained``; it is the base tokenizer of the organism's SIMS checkpoints.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    directory = Path(directory)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS_TOKEN, EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator((" " + s for s in sentences), trainer=trainer)
    bos = tokenizer.token_to_id(BOS_TOKEN)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B", special_tokens=[(BOS_TOKEN, bos)]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BOS_TOKEN, eos_token=EOS_TOKEN)
    fast.save_pretrained(str(directory))
    return directory


def sims_tokenizer_and_vocab(base_tokenizer: str | Path | Any, n_units: int) -> tuple[Any, Any]:
    """The base tokenizer extended as slamkit does, and its :class:`~slm_transformerlens.vocab.SpeechVocab`.

    This is what ``slt.load(checkpoint, tokenizer=base_tokenizer)`` builds, without loading a model:
    training code uses it to write sequences in the exact SIMS string format.
    """
    from slm_transformerlens.checkpoints.tokenizers import (
        SLAMKIT_MARKERS,
        bos_if_prepended,
        extend_like_slamkit,
        load_tokenizer,
    )
    from slm_transformerlens.vocab import SpeechVocab

    tokenizer = load_tokenizer(base_tokenizer, what="organism base tokenizer")
    size = len(tokenizer) + n_units + 2 if "<Un0>" not in tokenizer.get_vocab() else len(tokenizer)
    tokenizer = extend_like_slamkit(
        tokenizer, n_units=n_units, expected_size=size, base_model_name="organism"
    )
    vocab = SpeechVocab.from_tokenizer(
        tokenizer,
        vocab_size=size,
        family="sims",
        unit_format="<Un{}>",
        marker_tokens=SLAMKIT_MARKERS,
        bos_token_id=bos_if_prepended(tokenizer),
    )
    return tokenizer, vocab
