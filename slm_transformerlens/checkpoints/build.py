"""Building a Hugging Face causal LM from a config on the meta device and streaming weights in.

Peak memory stays near the size of the weights: parameters are created on the meta device
(no storage), and each tensor read from disk is assigned into the model as it is (one shard
in memory at a time), converted to the requested dtype on the way.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from slm_transformerlens.checkpoints.dtypes import check_dtype_supported, resolve_dtype
from slm_transformerlens.checkpoints.files import WeightFiles, iter_checkpoint_tensors
from slm_transformerlens.checks import check_finite_weight
from slm_transformerlens.errors import CheckpointError, UnsupportedArchitectureError

__all__ = [
    "build_causal_lm",
    "check_dtype_supported",
    "directory_of",
    "rebuild_meta_buffers",
    "resolve_architecture",
    "resolve_dtype",
    "supported_architectures",
]


def supported_architectures() -> list[str]:
    """HF architecture names TransformerLens' bridge has an adapter for."""
    from transformer_lens.factories.architecture_adapter_factory import ArchitectureAdapterFactory

    return sorted(ArchitectureAdapterFactory._adapters)


def resolve_architecture(hf_config: Any) -> str:
    """The bridge architecture key of an HF config (e.g. ``"LlamaForCausalLM"``).

    Raises:
        UnsupportedArchitectureError: the config names no architecture TransformerLens supports.
    """
    names = list(getattr(hf_config, "architectures", None) or [])
    model_type = getattr(hf_config, "model_type", None)
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    mapped = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type) if model_type else None
    if mapped:
        names.append(mapped)
    causal = bool(mapped) or any(name.endswith(("ForCausalLM", "LMHeadModel")) for name in names)
    supported = _supported_now()
    for name in names:
        if name in supported:
            if not causal:  # TransformerLens wraps some encoders too (HuBERT): not a language model
                raise UnsupportedArchitectureError(
                    f"this config describes a {model_type!r} model ({name}), not a causal language model; "
                    "pass a speech LM checkpoint (SIMS, SpiritLM, or a causal LM whose tokenizer has unit "
                    "tokens). A HuBERT folder is the speech encoder: pass it as --hubert to slm-lens analyze "
                    "(HubertFeatureExtractor in Python)."
                )
            return name
    supported = supported_architectures()
    raise UnsupportedArchitectureError(
        f"architecture {names or model_type!r} is not supported by TransformerLens "
        f"{_tl_version()}: its bridge has adapters for {len(supported)} architectures, e.g. "
        "LlamaForCausalLM, Qwen2ForCausalLM, MistralForCausalLM. Register an ArchitectureAdapter "
        "for it (transformer_lens ArchitectureAdapterFactory.register_adapter) and try again."
    )


_FACTORY = "transformer_lens.factories.architecture_adapter_factory"


@functools.cache
def _built_in_adapter_names() -> frozenset[str]:
    """The keys of TransformerLens' ``SUPPORTED_ARCHITECTURES``, read from its source without importing it.

    Importing the factory imports every adapter (seconds); ``slm-lens inspect`` only needs the names.
    Empty when the source cannot be read that way (then the factory is imported).
    """
    try:  # find_spec of the dotted name would import transformer_lens itself: locate the file instead
        spec = importlib.util.find_spec("transformer_lens")
        roots = list(spec.submodule_search_locations or []) if spec else []
        source = Path(roots[0], *_FACTORY.split(".")[1:]).with_suffix(".py") if roots else None
        tree = ast.parse(source.read_text(encoding="utf-8")) if source and source.is_file() else None
    except (ImportError, OSError, SyntaxError, ValueError):
        return frozenset()
    for node in tree.body if tree is not None else []:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if any(getattr(t, "id", None) == "SUPPORTED_ARCHITECTURES" for t in targets) and isinstance(
            node.value, ast.Dict
        ):
            keys = node.value.keys
            return frozenset(
                k.value for k in keys if isinstance(k, ast.Constant) and isinstance(k.value, str)
            )
    return frozenset()


def _supported_now() -> frozenset[str]:
    """What :func:`supported_architectures` would return now, without importing the factory when it is
    not imported yet: a fresh import holds exactly ``SUPPORTED_ARCHITECTURES`` (adapters registered at run
    time, or plugins, exist only once the factory is imported, and then it is asked)."""
    built_in = _built_in_adapter_names()
    if _FACTORY not in sys.modules and built_in:
        return built_in
    return frozenset(supported_architectures())


def _tl_version() -> str:
    from importlib.metadata import version

    return version("transformer-lens")


def build_causal_lm(
    hf_config: Any,
    weights: WeightFiles,
    *,
    dtype: torch.dtype,
    device: torch.device,
    rename: Callable[[str], str | None] = lambda key: key,
    progress: bool = True,
    device_map: Any = None,
    n_devices: int | None = None,
) -> nn.Module:
    """Instantiate ``AutoModelForCausalLM`` from ``hf_config`` and load the weights into it.

    Args:
        hf_config: the base model's HF config.
        weights: the checkpoint's weight files.
        dtype: parameter dtype.
        device: where the parameters live (without ``device_map`` / ``n_devices``).
        rename: maps a key on disk to the model's key (e.g. strips SIMS' ``lm.`` prefix); a key
            mapped to ``None`` is skipped.
        progress: show a progress bar over the weight files.
        device_map: a split over several devices (:mod:`slm_transformerlens.checkpoints.placement`): each
            tensor is read straight onto its device, then accelerate's device hooks are attached.
        n_devices: ``"balanced"`` over the first ``n_devices`` GPUs.

    Raises:
        CheckpointError: a weight the model needs is missing, a tensor has the wrong shape, or
            the file holds unexpected keys.
        NonFiniteError: a weight holds NaN or infinity (as stored, or after conversion to ``dtype``).
    """
    from transformers import AutoModelForCausalLM

    hf_config._attn_implementation = "eager"
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config, dtype=dtype, attn_implementation="eager")
    expected = dict(model.state_dict())
    tied = bool(getattr(hf_config, "tie_word_embeddings", False))
    placement = None
    if device_map is not None or n_devices is not None:
        from slm_transformerlens.checkpoints.placement import check_placement, resolve_device_map

        placement = resolve_device_map(model, device_map, n_devices=n_devices, dtype=dtype, tied=tied)
        check_placement(placement, dtype)
    target = _placer(device, placement)
    output_key = _output_embedding_key(model) if tied else None
    loaded: set[str] = set()
    unexpected: list[str] = []
    for path, tensors in tqdm(
        iter_checkpoint_tensors(weights),
        total=len(weights.files),
        desc="loading weights",
        disable=not progress,
    ):
        batch: dict[str, torch.Tensor] = {}
        for key in list(tensors):
            tensor = tensors.pop(key)
            name = rename(key)
            if name is None:
                continue
            if name not in expected:
                unexpected.append(key)
                continue
            if name == output_key:
                continue  # tied to the input embedding: HF ignores a saved copy too
            if tuple(tensor.shape) != tuple(expected[name].shape):
                raise CheckpointError(
                    f"{path.name}: tensor {key} has shape {tuple(tensor.shape)}, but the config implies "
                    f"{tuple(expected[name].shape)}; config.json and the weights disagree"
                )
            converted = tensor.to(device=target(name), dtype=dtype)
            check_finite_weight(converted, name=key, source=path.name, dtype=dtype)
            batch[name] = converted
        model.load_state_dict(batch, strict=False, assign=True)
        loaded.update(batch)
        del batch, tensors
    if unexpected:
        raise CheckpointError(
            f"the weights hold {len(unexpected)} tensors the {type(model).__name__} does not have, e.g. "
            f"{unexpected[:3]}; the config does not describe these weights"
        )
    missing = sorted(set(expected) - loaded - ({output_key} if output_key else set()))
    if missing:
        raise CheckpointError(
            f"{len(missing)} weights are missing from the checkpoint, e.g. {missing[:3]}; "
            "the weight files are incomplete or belong to another model"
        )
    if tied:
        model.tie_weights()
    rebuild_meta_buffers(model, device, placement)
    if placement is not None:
        from slm_transformerlens.checkpoints.placement import dispatch

        dispatch(model, placement)
    model.eval()
    return model


def _placer(device: torch.device, placement: dict[str, str] | None) -> Callable[[str], torch.device]:
    """Parameter name -> its device (``device``, or its device under the resolved map)."""
    if placement is None:
        return lambda name: device
    from slm_transformerlens.checkpoints.placement import device_of

    cache: dict[str, torch.device] = {}

    def target(name: str) -> torch.device:
        if name not in cache:
            cache[name] = torch.device(device_of(name, placement) or device)
        return cache[name]

    return target


def _output_embedding_key(model: nn.Module) -> str | None:
    head = model.get_output_embeddings()
    for name, module in model.named_modules():
        if module is head:
            return f"{name}.weight"
    return None


def rebuild_meta_buffers(
    model: nn.Module, device: torch.device, placement: dict[str, str] | None = None
) -> None:
    """Recompute non-persistent buffers (rotary ``inv_freq``) that the meta build left empty (on the
    module's device under ``placement``, else on ``device``)."""
    target = _placer(device, placement)
    for name, module in list(model.named_modules()):
        if not any(b.is_meta for b in module.buffers(recurse=False)):
            continue
        config = getattr(module, "config", None)
        if config is None:
            raise CheckpointError(
                f"module {name} ({type(module).__name__}) has buffers that are not in the checkpoint and "
                "cannot be recomputed; this architecture is not supported by the streaming loader"
            )
        rebuilt = type(module)(config).to(target(name))
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, rebuilt)
    leftover = [n for n, b in model.named_buffers() if b.is_meta]
    leftover += [n for n, p in model.named_parameters() if p.is_meta]
    if leftover:
        raise CheckpointError(f"tensors {leftover[:3]} were never loaded; the checkpoint is incomplete")


def directory_of(path: str | Path) -> Path:
    """A checkpoint directory as a resolved Path, with a clear error when it does not exist."""
    directory = Path(path).expanduser()
    if not directory.is_dir():
        from slm_transformerlens.errors import MissingCheckpointFileError

        raise MissingCheckpointFileError(f"checkpoint directory {directory} does not exist")
    return directory.resolve()
