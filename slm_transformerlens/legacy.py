"""The transformer-lens 3.x route: speech LM checkpoints as a real ``HookedTransformer``.

Users pinned below transformer-lens 4 (SAELens pins ``<4``) get a ``HookedTransformer`` built
from the checkpoint itself: :func:`hooked_transformer_config` translates the HF config into a
``HookedTransformerConfig`` (no official-name lookup, no hub), TransformerLens' own weight
converters rearrange the weights, and ``load_and_process_state_dict`` folds them. The model
carries the same :class:`~slm_transformerlens.vocab.SpeechVocab` as :func:`slm_transformerlens.load`.

:func:`slm_transformerlens.load` itself works on 3.9 too (the bridge is built without the 4.x
driver layer); the tokenizer is prepared by :func:`~slm_transformerlens.model.prepare_tokenizer`
(re-exported here), never reloaded, so the unit tokens added to a base tokenizer survive.

Importing this module never fails; calling the HookedTransformer functions on transformer-lens
4.x raises :class:`HookedTransformerUnavailableError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from slm_transformerlens.checkpoints import LoadedCheckpoint, LoadOptions, read_checkpoint
from slm_transformerlens.errors import SLMError, UnsupportedArchitectureError
from slm_transformerlens.model import prepare_tokenizer

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer, HookedTransformerConfig

__all__ = [
    "HOOKED_TRANSFORMER_ARCHITECTURES",
    "HookedTransformerUnavailableError",
    "has_hooked_transformer",
    "hooked_transformer_config",
    "hooked_transformer_state_dict",
    "prepare_tokenizer",
    "rope_settings",
    "to_hooked_transformer",
    "transformer_lens_version",
]

#: HF architectures this route converts, and the TransformerLens converter each uses.
HOOKED_TRANSFORMER_ARCHITECTURES: dict[str, str] = {
    "LlamaForCausalLM": "convert_llama_weights",
    "Qwen2ForCausalLM": "convert_qwen2_weights",
}
_MODEL_TYPES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}


class HookedTransformerUnavailableError(SLMError, ImportError):
    """The installed transformer-lens has no ``HookedTransformer`` (4.x removed it)."""


def transformer_lens_version() -> str:
    """The installed transformer-lens version string."""
    from importlib.metadata import version

    return version("transformer-lens")


def has_hooked_transformer() -> bool:
    """Whether the installed transformer-lens still has ``HookedTransformer`` (3.x)."""
    try:
        from transformer_lens import HookedTransformer  # noqa: F401
    except ImportError:
        return False
    return True


def _require_hooked_transformer() -> None:
    if not has_hooked_transformer():
        raise HookedTransformerUnavailableError(
            f"HookedTransformer was removed in transformer-lens 4.x (installed: {transformer_lens_version()}); "
            "use slt.load(...) which returns a TransformerBridge, or pip install 'transformer-lens<4'"
        )


# ---------------------------------------------------------------------------------------- config
def rope_settings(hf_config: Any) -> dict[str, Any]:
    """The rotary settings of an HF config, from either transformers layout.

    transformers 5 keeps them in ``config.rope_parameters`` (``rope_theta`` included);
    transformers 4.x has a top-level ``rope_theta`` and an optional ``rope_scaling`` dict.

    Returns:
        A dict with at least ``rope_type`` (``"default"`` when unscaled) and ``rope_theta``.
    """
    settings: dict[str, Any] = {}
    scaling = getattr(hf_config, "rope_scaling", None)
    if isinstance(scaling, dict):
        settings.update(scaling)
    parameters = getattr(hf_config, "rope_parameters", None)
    if isinstance(parameters, dict):
        settings.update(parameters)
    theta = settings.get("rope_theta")
    if theta is None:
        theta = getattr(hf_config, "rope_theta", None)
    settings["rope_theta"] = float(theta) if theta is not None else 10_000.0
    settings["rope_type"] = str(settings.get("rope_type") or settings.get("type") or "default").lower()
    return settings


def _architecture_of(hf_config: Any) -> str:
    names = [*list(getattr(hf_config, "architectures", None) or [])]
    mapped = _MODEL_TYPES.get(getattr(hf_config, "model_type", None) or "")
    if mapped:
        names.append(mapped)
    for name in names:
        if name in HOOKED_TRANSFORMER_ARCHITECTURES:
            return name
    raise UnsupportedArchitectureError(
        f"architecture {names or getattr(hf_config, 'model_type', None)!r} has no HookedTransformer "
        f"conversion here; supported: {sorted(HOOKED_TRANSFORMER_ARCHITECTURES)}. Use slt.load(...) "
        "(the TransformerBridge wraps any architecture TransformerLens has an adapter for)."
    )


def _check_supported_features(hf_config: Any, architecture: str) -> None:
    problems = []
    if architecture == "LlamaForCausalLM":
        if getattr(hf_config, "attention_bias", False):
            problems.append("attention_bias=True (TransformerLens' Llama converter drops q/k/v/o biases)")
        if getattr(hf_config, "mlp_bias", False):
            problems.append("mlp_bias=True (HookedTransformer's gated MLP has no gate bias)")
    if getattr(hf_config, "use_sliding_window", False):
        problems.append("use_sliding_window=True (HookedTransformer attends to the whole context)")
    if problems:
        raise UnsupportedArchitectureError(
            f"this {architecture} cannot be converted to a HookedTransformer exactly: {'; '.join(problems)}. "
            "Use slt.load(...) (TransformerBridge, which runs the Hugging Face modules as they are)."
        )


def hooked_transformer_config(
    hf_config: Any,
    d_vocab: int | None = None,
    *,
    n_ctx: int | None = None,
    default_prepend_bos: bool | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> HookedTransformerConfig:
    """A ``HookedTransformerConfig`` for a Llama- or Qwen2-style HF config, built by hand.

    Nothing is looked up by model name and nothing is downloaded: every field comes from
    ``hf_config`` (RMSNorm, rotary with the config's theta and llama3 NTK-by-parts scaling,
    gated MLP, grouped-query heads, ``head_dim``).

    Args:
        hf_config: the base LM's HF config (``LlamaConfig`` / ``Qwen2Config``, transformers 4 or 5).
        d_vocab: embedding rows (speech-extended vocabulary plus padding rows); default
            ``hf_config.vocab_size``.
        n_ctx: context length; default ``max_position_embeddings`` (rotary tables and the causal
            mask are built lazily, so a long context costs no memory up front).
        default_prepend_bos: whether ``to_tokens`` prepends BOS by default; default ``True`` for
            Llama and ``False`` for Qwen2 (as TransformerLens does for those families).
        dtype: parameter dtype.
        device: parameter device.

    Raises:
        UnsupportedArchitectureError: another architecture, or a feature HookedTransformer cannot
            reproduce exactly (Llama attention/MLP biases, sliding-window attention, rope scaling
            other than llama3).
    """
    _require_hooked_transformer()
    from transformer_lens import HookedTransformerConfig
    from transformer_lens.utilities.activation_functions import SUPPORTED_ACTIVATIONS

    architecture = _architecture_of(hf_config)
    _check_supported_features(hf_config, architecture)
    n_heads = int(hf_config.num_attention_heads)
    d_model = int(hf_config.hidden_size)
    d_head = int(getattr(hf_config, "head_dim", None) or d_model // n_heads)
    n_kv = int(getattr(hf_config, "num_key_value_heads", None) or n_heads)
    act_fn = str(getattr(hf_config, "hidden_act", "silu"))
    if act_fn not in SUPPORTED_ACTIVATIONS:
        raise UnsupportedArchitectureError(
            f"hidden_act {act_fn!r} is not a HookedTransformer activation ({sorted(SUPPORTED_ACTIVATIONS)})"
        )
    rope = rope_settings(hf_config)
    fields: dict[str, Any] = {
        "d_model": d_model,
        "d_head": d_head,
        "n_heads": n_heads,
        "d_mlp": int(hf_config.intermediate_size),
        "n_layers": int(hf_config.num_hidden_layers),
        "n_ctx": int(n_ctx or getattr(hf_config, "max_position_embeddings", 2048)),
        "eps": float(hf_config.rms_norm_eps),
        "d_vocab": int(d_vocab if d_vocab is not None else hf_config.vocab_size),
        "act_fn": act_fn,
        # Qwen2's converter always writes grouped K/V; Llama's only when the counts differ.
        "n_key_value_heads": n_kv if (architecture == "Qwen2ForCausalLM" or n_kv != n_heads) else None,
        "normalization_type": "RMS",
        "positional_embedding_type": "rotary",
        "rotary_dim": d_head,
        "rotary_base": rope["rope_theta"],
        "rotary_adjacent_pairs": False,
        "final_rms": True,
        "gated_mlp": True,
        "use_attn_scale": True,
        "original_architecture": architecture,
        "tie_word_embeddings": bool(getattr(hf_config, "tie_word_embeddings", False)),
        "default_prepend_bos": (
            default_prepend_bos if default_prepend_bos is not None else architecture == "LlamaForCausalLM"
        ),
        "initializer_range": float(getattr(hf_config, "initializer_range", 0.02)),
        "dtype": dtype,
        "device": str(device),
    }
    if rope["rope_type"] == "llama3":
        fields.update(
            use_NTK_by_parts_rope=True,
            NTK_by_parts_factor=float(rope.get("factor", 8.0)),
            NTK_by_parts_low_freq_factor=float(rope.get("low_freq_factor", 1.0)),
            NTK_by_parts_high_freq_factor=float(rope.get("high_freq_factor", 4.0)),
            NTK_original_ctx_len=int(
                rope.get("original_max_position_embeddings") or hf_config.max_position_embeddings
            ),
        )
    elif rope["rope_type"] != "default":
        raise UnsupportedArchitectureError(
            f"rope scaling {rope['rope_type']!r} has no HookedTransformer equivalent (only unscaled rope and "
            "llama3 NTK-by-parts are supported); use slt.load(...) instead"
        )
    return HookedTransformerConfig(**fields)


def hooked_transformer_state_dict(hf_model: Any, cfg: HookedTransformerConfig) -> dict[str, torch.Tensor]:
    """The HF model's weights in HookedTransformer layout (TransformerLens' own converters).

    The tensors are detached views of (or copies of) the HF weights; the HF model is not modified.
    """
    _require_hooked_transformer()
    from transformer_lens.pretrained import weight_conversions

    converter = getattr(weight_conversions, HOOKED_TRANSFORMER_ARCHITECTURES[cfg.original_architecture])
    with torch.no_grad():
        state = converter(hf_model, cfg)
    return {key: value.detach() for key, value in state.items()}


# ------------------------------------------------------------------------------------- tokenizer
# ----------------------------------------------------------------------------- HookedTransformer
def _read(
    loaded_or_path: LoadedCheckpoint | str | Path,
    tokenizer: Any,
    family: str | None,
    device: str | torch.device | None,
    dtype: torch.dtype | str | None,
) -> LoadedCheckpoint:
    if isinstance(loaded_or_path, LoadedCheckpoint):
        return loaded_or_path
    from slm_transformerlens.checkpoints.build import check_dtype_supported, directory_of, resolve_dtype

    directory = directory_of(loaded_or_path)
    torch_device = torch.device(device) if device is not None else torch.device("cpu")
    torch_dtype = resolve_dtype(dtype, _stored_dtype_config(directory))
    check_dtype_supported(torch_dtype, torch_device)
    options = LoadOptions(tokenizer=tokenizer, device=torch_device, dtype=torch_dtype)
    return read_checkpoint(directory, options, family=family)


def _stored_dtype_config(directory: Path) -> Any:
    """The stored dtype fields of config.json (SIMS: of ``base_config``), for ``dtype="auto"``."""
    import json
    from types import SimpleNamespace

    path = directory / "config.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    base = data.get("base_config") if isinstance(data.get("base_config"), dict) else data
    return SimpleNamespace(dtype=base.get("dtype") or data.get("dtype"), torch_dtype=base.get("torch_dtype"))


def to_hooked_transformer(
    loaded_or_path: LoadedCheckpoint | str | Path,
    *,
    tokenizer: Any = None,
    family: str | None = None,
    fold_ln: bool = True,
    center_writing_weights: bool = False,
    center_unembed: bool = False,
    fold_value_biases: bool = True,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    n_ctx: int | None = None,
    model_class: type | None = None,
) -> HookedTransformer:
    """A speech LM checkpoint as a transformer-lens 3.x ``HookedTransformer`` (with ``.speech_vocab``).

    Args:
        loaded_or_path: a checkpoint directory, or a :class:`LoadedCheckpoint` already read
            (its HF model is left untouched; the HookedTransformer gets its own weights).
        tokenizer: for SIMS, the BASE text tokenizer (object or local directory); optional otherwise.
        family: ``"sims"``, ``"spiritlm"`` or ``"generic"``; detected when ``None``.
        fold_ln: fold the RMSNorm weights into the next linear layer (exact; the norms become
            ``RMSNormPre``, as in ``HookedTransformer.from_pretrained``).
        center_writing_weights: ignored by TransformerLens for RMSNorm models (kept for symmetry).
        center_unembed: subtract W_U's mean over the WHOLE extended vocabulary: log-probs,
            ranks and logit differences are unchanged, single raw logits are not (default off, so
            raw logits match Hugging Face).
        fold_value_biases: fold Qwen2's value biases into the attention output bias (exact).
        device: where the parameters go (default CPU; ignored for a ``LoadedCheckpoint``, whose
            parameters' device is used).
        dtype: parameter dtype (default float32; ignored for a ``LoadedCheckpoint``).
        n_ctx: context length (default the config's ``max_position_embeddings``).
        model_class: ``HookedTransformer`` (default) or a subclass, e.g. SAELens'
            ``HookedSAETransformer``. The model also accepts ``Speech`` / ``Text`` inputs
            (:class:`slm_transformerlens.interop.saelens.SpeechInputsMixin`).

    Returns:
        A ``HookedTransformer`` in eval mode with ``speech_vocab``, ``checkpoint_family``,
        ``checkpoint_path`` and ``checkpoint_metadata`` attributes; its tokenizer is the
        checkpoint's full (speech-extended) tokenizer.

    Raises:
        HookedTransformerUnavailableError: transformer-lens 4.x is installed.
        UnsupportedArchitectureError: the base LM is not Llama- or Qwen2-style, or uses a feature
            HookedTransformer cannot reproduce exactly.
    """
    _require_hooked_transformer()
    import warnings

    from transformer_lens import HookedTransformer

    from slm_transformerlens.interop.errors import InteropError
    from slm_transformerlens.interop.saelens import speech_model_class

    model_class = HookedTransformer if model_class is None else model_class
    if not (isinstance(model_class, type) and issubclass(model_class, HookedTransformer)):
        raise InteropError(f"model_class must be HookedTransformer or a subclass of it, got {model_class!r}")

    loaded = _read(loaded_or_path, tokenizer, family, device, dtype)
    parameter = next(loaded.hf_model.parameters())
    rows = int(loaded.hf_model.get_input_embeddings().weight.shape[0])
    vocab = loaded.speech_vocab
    cfg = hooked_transformer_config(
        loaded.hf_config,
        rows,
        n_ctx=n_ctx,
        default_prepend_bos=vocab.bos_token_id is not None,
        dtype=parameter.dtype,
        device=parameter.device,
    )
    state = hooked_transformer_state_dict(loaded.hf_model, cfg)
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="HookedTransformer is deprecated", category=DeprecationWarning
        )
        model = speech_model_class(model_class)(cfg, tokenizer=None, move_to_device=True)
    if center_writing_weights:
        center_writing_weights = False  # TransformerLens skips it for RMSNorm (with a warning)
    model.load_and_process_state_dict(
        state,
        fold_ln=fold_ln,
        center_writing_weights=center_writing_weights,
        center_unembed=center_unembed,
        fold_value_biases=fold_value_biases,
    )
    del state
    # HookedTransformer.set_tokenizer would reload the tokenizer (see prepare_tokenizer)
    model.tokenizer = prepare_tokenizer(loaded.tokenizer, model.cfg, vocab)
    model.speech_vocab = vocab
    model.checkpoint_family = loaded.family
    model.checkpoint_path = loaded.path
    model.checkpoint_metadata = dict(loaded.metadata)
    model.eval()
    return model
