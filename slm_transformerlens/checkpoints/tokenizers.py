"""Loading tokenizers from disk and extending a base tokenizer with speech units as slamkit does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slm_transformerlens.errors import MissingCheckpointFileError, VocabularyError

__all__ = [
    "SLAMKIT_MARKERS",
    "bos_if_prepended",
    "extend_like_slamkit",
    "load_tokenizer",
    "slamkit_unit_tokens",
]

#: The marker tokens slamkit adds after the units: ``<speech>`` then ``<text>``.
SLAMKIT_MARKERS: dict[str, str] = {"speech": "<speech>", "text": "<text>"}


def load_tokenizer(spec: Any, *, what: str = "tokenizer") -> Any:
    """A tokenizer from an object (returned as is) or a local directory.

    Raises:
        MissingCheckpointFileError: the directory does not exist or holds no tokenizer files.
    """
    if spec is None:
        raise MissingCheckpointFileError(f"no {what} was given")
    if not isinstance(spec, (str, Path)):
        return spec
    from transformers import AutoTokenizer

    path = Path(spec).expanduser()
    if not path.exists():
        raise MissingCheckpointFileError(
            f"{what} {spec!r} is not a local directory; slm_transformerlens loads tokenizers from disk "
            "only. Download it once (e.g. `huggingface-cli download NAME --include 'tokenizer*' "
            "--local-dir DIR`) and pass the directory."
        )
    try:
        return AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError, TypeError) as error:
        raise MissingCheckpointFileError(f"no usable {what} in {path}: {error}") from error


def slamkit_unit_tokens(n_units: int) -> list[str]:
    """The tokens slamkit appends to the base tokenizer, in order."""
    return [f"<Un{u}>" for u in range(n_units)] + [SLAMKIT_MARKERS["speech"], SLAMKIT_MARKERS["text"]]


def extend_like_slamkit(tokenizer: Any, *, n_units: int, expected_size: int, base_model_name: str) -> Any:
    """Add ``<Un0>..<Un{n-1}>, <speech>, <text>`` to a base tokenizer, exactly as slamkit does.

    A tokenizer that already holds ``<Un0>`` is taken as already extended and only checked.

    Args:
        tokenizer: the base text tokenizer (it is modified in place, like slamkit's).
        n_units: number of speech units.
        expected_size: the checkpoint's ``vocab_size`` (base size + n_units + 2).
        base_model_name: for the error message.

    Raises:
        VocabularyError: the result does not have ``expected_size`` tokens, i.e. the base
            tokenizer is not the one this checkpoint was trained from.
    """
    if "<Un0>" not in tokenizer.get_vocab():
        base_size = len(tokenizer)
        if base_size + n_units + 2 != expected_size:
            raise VocabularyError(
                f"the base tokenizer has {base_size} tokens, but this checkpoint's vocab_size {expected_size} "
                f"= base + {n_units} units + 2 markers needs a base tokenizer of {expected_size - n_units - 2} "
                f"tokens. Pass the tokenizer of {base_model_name!r}, the checkpoint's base model."
            )
        tokenizer.add_tokens(slamkit_unit_tokens(n_units))
    if len(tokenizer) != expected_size:
        raise VocabularyError(
            f"the extended tokenizer has {len(tokenizer)} tokens but the checkpoint's vocab_size is "
            f"{expected_size}; pass the base tokenizer of {base_model_name!r}"
        )
    return tokenizer


def bos_if_prepended(tokenizer: Any) -> int | None:
    """The BOS id when the tokenizer prepends one by itself (Llama), else ``None`` (Qwen)."""
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    bos = tokenizer.bos_token_id
    return int(bos) if bos is not None and ids and ids[0] == bos else None
