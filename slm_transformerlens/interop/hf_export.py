"""Speech LMs as plain Hugging Face models: :func:`load_hf` and :func:`export_hf`.

Most interpretability tools (nnsight, nnterp, tuned-lens, ``TransformerBridge.boot_transformers``,
SAELens' loaders) open a model by path with ``AutoModelForCausalLM`` / ``AutoTokenizer``. A SIMS
directory (slamkit's ``UnitLM``) cannot be opened that way, and ``model.original_model`` of a bridge
is not a plain model (its layers are bridge modules). :func:`export_hf` writes any family as a
standard Hugging Face directory: the base architecture's ``config.json`` with the extended
vocabulary, the weights as safetensors, and the full tokenizer (units and markers included), plus
``speech_vocab.json`` recording the vocabulary layout. :func:`load_hf` gives the plain model and
tokenizer in memory (and a left-padding copy of the tokenizer, which batched generation and
nnterp need).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from slm_transformerlens.checkpoints import LoadedCheckpoint
from slm_transformerlens.interop.errors import InteropError
from slm_transformerlens.vocab import SpeechVocab

__all__ = ["SPEECH_VOCAB_FILE", "HFCheckpoint", "export_hf", "load_hf", "plain_hf_model"]

#: The side file :func:`export_hf` writes beside the Hugging Face files.
SPEECH_VOCAB_FILE = "speech_vocab.json"
_BRIDGE_WRAPPER = "._original_component"


class HFCheckpoint(NamedTuple):
    """A speech LM as plain Hugging Face objects (unpack it: ``model, tokenizer, *_ = load_hf(...)``).

    Attributes:
        model: the causal LM (``LlamaForCausalLM``, ``Qwen2ForCausalLM``, ...) in eval mode.
        tokenizer: the full speech-extended tokenizer, right-padding (as the bridge uses it).
        left_padding_tokenizer: a copy that pads on the left (batched ``generate``, nnterp).
        speech_vocab: which ids are text, units, markers.
    """

    model: nn.Module
    tokenizer: Any
    left_padding_tokenizer: Any
    speech_vocab: SpeechVocab


def load_hf(
    path: str | Path,
    *,
    tokenizer: Any = None,
    family: str | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    unit_format: str | None = None,
    marker_tokens: dict[str, str] | None = None,
    progress: bool = True,
) -> HFCheckpoint:
    """Read a speech LM checkpoint of any family as a plain Hugging Face model and tokenizer.

    Takes the arguments of :func:`slm_transformerlens.load`; nothing is wrapped, so any tool that
    accepts a ``PreTrainedModel`` accepts the result. When the tokenizer has no pad token, EOS
    becomes the pad token (as :func:`slm_transformerlens.load` does).

    Example:
        >>> model, tokenizer, left_tokenizer, vocab = slt.load_hf("ckpt/SIMS-7B", tokenizer="tok/Qwen2.5-7B")  # doctest: +SKIP
    """
    from slm_transformerlens.model import read_from_disk

    loaded = read_from_disk(
        path,
        family=family,
        tokenizer=tokenizer,
        device=device,
        dtype=dtype,
        unit_format=unit_format,
        marker_tokens=marker_tokens,
        progress=progress,
    )
    right = loaded.tokenizer
    if right.pad_token is None and right.eos_token is not None:
        right.pad_token = right.eos_token
    right.padding_side = "right"
    left = copy.deepcopy(right)
    left.padding_side = "left"
    return HFCheckpoint(loaded.hf_model, right, left, loaded.speech_vocab)


def plain_hf_model(bridge: Any) -> nn.Module:
    """A plain Hugging Face model sharing the weights of a bridge's ``original_model``.

    The bridge replaces the layers of the model it wraps by bridge modules; this rebuilds the
    base architecture on the meta device and assigns the same tensors (no copy).

    Raises:
        InteropError: the bridge is in compatibility mode (its weights were rewritten: folded norms,
            centred unembedding), so they are no longer the checkpoint's.
    """
    from transformers import AutoModelForCausalLM

    from slm_transformerlens.checkpoints.build import rebuild_meta_buffers

    if getattr(bridge, "compatibility_mode", False):
        raise InteropError(
            "this model is in compatibility mode: enable_compatibility_mode() rewrote its weights (folded "
            "norms, centred unembedding), so they are not the checkpoint's. Export a freshly loaded model "
            "(slt.load(...)) or the checkpoint directory itself"
        )
    wrapped = bridge.original_model
    state: dict[str, torch.Tensor] = {}
    for key, tensor in wrapped.state_dict().items():
        state.setdefault(key.replace(_BRIDGE_WRAPPER, ""), tensor)
    config = copy.deepcopy(wrapped.config)
    parameter = next(wrapped.parameters())
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=parameter.dtype, attn_implementation="eager")
    expected = plain.state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise InteropError(
            f"the bridge's model lacks {len(missing)} weights of a plain {type(plain).__name__}, e.g. "
            f"{missing[:3]}; export the checkpoint directory instead"
        )
    plain.load_state_dict({key: state[key] for key in expected}, strict=True, assign=True)
    if getattr(config, "tie_word_embeddings", False):
        plain.tie_weights()
    rebuild_meta_buffers(plain, parameter.device)
    return plain.eval()


def _source(
    source: Any, tokenizer: Any, family: str | None, dtype: torch.dtype | str | None, progress: bool
) -> tuple[nn.Module, Any, SpeechVocab, str | None, Path | None]:
    """(plain model, tokenizer, vocab, family, source path) of whatever :func:`export_hf` was given."""
    if isinstance(source, LoadedCheckpoint):
        return source.hf_model, source.tokenizer, source.speech_vocab, source.family, source.path
    if isinstance(source, (str, Path)):
        from slm_transformerlens.model import read_from_disk

        loaded = read_from_disk(
            source, tokenizer=tokenizer, family=family, dtype=dtype or "auto", progress=progress
        )
        return loaded.hf_model, loaded.tokenizer, loaded.speech_vocab, loaded.family, loaded.path
    vocab = getattr(source, "speech_vocab", None)
    if vocab is None or not hasattr(source, "original_model"):
        raise InteropError(
            f"export_hf takes a checkpoint directory, a LoadedCheckpoint or a model from slt.load(...); "
            f"got {type(source).__name__}"
        )
    return (
        plain_hf_model(source),
        source.tokenizer,
        vocab,
        getattr(source, "checkpoint_family", None),
        getattr(source, "checkpoint_path", None),
    )


def _check_writable_target(target: Path, source: Any, overwrite: bool) -> None:
    """Refuse an ``out`` that cannot be written, before a byte of the source is read."""
    if isinstance(source, (str, Path)) and target.resolve() == Path(source).expanduser().resolve():
        raise InteropError(
            f"export_hf would overwrite the checkpoint it reads ({target}); choose another out"
        )
    if target.exists() and not target.is_dir():
        raise InteropError(f"{target} is a file, not a folder; choose a folder for the exported model")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise InteropError(f"{target} is not empty; pass overwrite=True or choose an empty directory")
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InteropError(f"cannot create {target}: {existing} is a file, not a folder; choose another out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InteropError(
            f"cannot write into {existing} (permission denied or a read-only file system), so {target} "
            "cannot be written; choose a folder you can write to, or change its permissions"
        )


def export_hf(
    source: Any,
    out: str | Path,
    *,
    tokenizer: Any = None,
    family: str | None = None,
    dtype: torch.dtype | str | None = None,
    overwrite: bool = False,
    max_shard_size: str | int = "5GB",
    progress: bool = True,
) -> Path:
    """Write a speech LM as a standard Hugging Face directory that every HF-based tool opens by path.

    Args:
        source: a checkpoint directory of any family (SIMS, SpiritLM, generic), a
            :class:`~slm_transformerlens.checkpoints.LoadedCheckpoint`, or a model from
            :func:`slm_transformerlens.load` (not in compatibility mode).
        out: the directory to write (``config.json`` of the base architecture with the extended
            ``vocab_size``, ``model.safetensors``, the full tokenizer, ``speech_vocab.json``).
        tokenizer: for a SIMS directory, the base text tokenizer (as for ``slt.load``).
        family: force the checkpoint family of a directory.
        dtype: for a directory, the dtype to write (default: the checkpoint's stored dtype).
        overwrite: allow writing into a non-empty ``out``.
        max_shard_size: passed to ``save_pretrained``.
        progress: progress bar while reading a directory.

    Returns:
        ``out`` as a Path. ``AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager")`` gives
        bit-identical logits (the default ``"sdpa"`` differs by float32 rounding, ~1e-5),
        ``AutoTokenizer.from_pretrained(out)`` the same ids, and ``slt.load(out)`` the same vocabulary
        layout (family ``"generic"`` for an exported SIMS checkpoint, ``"spiritlm"`` for SpiritLM).

    Raises:
        InteropError: ``out`` is not empty (without ``overwrite``), is the source directory, cannot be
            written (checked before the weights are read), or the source is not a speech LM.
    """
    target = Path(out).expanduser()
    _check_writable_target(target, source, overwrite)  # before the (possibly long) read of the weights
    model, tok, vocab, source_family, source_path = _source(source, tokenizer, family, dtype, progress)
    if source_path is not None and target.resolve() == Path(source_path).resolve():
        raise InteropError(
            f"export_hf would overwrite the checkpoint it reads ({target}); choose another out"
        )
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InteropError(f"cannot create {target} ({error}); choose a folder you can write to") from None
    config = model.config
    architecture = type(model).__name__
    config.architectures = [architecture]
    model.save_pretrained(str(target), max_shard_size=max_shard_size, safe_serialization=True)
    tok = copy.copy(tok)
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    tok.save_pretrained(str(target))
    side = {
        "source_family": source_family,
        "architecture": architecture,
        "speech_vocab": vocab.to_dict(),
        "note": "written by slm_transformerlens.export_hf; load with AutoModelForCausalLM or slt.load",
    }
    (target / SPEECH_VOCAB_FILE).write_text(json.dumps(side, indent=2))
    return target
