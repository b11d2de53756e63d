"""Placing a model too large for one device: a device map, resolved and applied while the weights stream in.

A *device map* says where each part of the Hugging Face model lives: a dict from module names of the HF
model (``"model.embed_tokens"``, ``"model.layers.0"``, ``"lm_head"``; ``""`` is the whole model) to devices
(``"cuda:0"``, ``"cpu"``, or a GPU index), or one of accelerate's strategies ``"auto"``, ``"balanced"``,
``"balanced_low_0"``, ``"sequential"``. ``n_devices=N`` is TransformerLens' shorthand: ``"balanced"`` over
the first ``N`` GPUs.

Every module COMPUTES where its weights are: a ``"cpu"`` entry runs on the CPU, it is not offloaded to a
GPU (so a read of ``model.W_U`` or any weight is a real tensor, never a meta placeholder). Accelerate's
device hooks move each module's inputs to its device, so activations cross devices between blocks; the
whole model's inputs go to the device of the input embedding (``model.cfg.device``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from slm_transformerlens.checkpoints.dtypes import check_dtype_supported
from slm_transformerlens.errors import DevicePlacementError

__all__ = [
    "DEVICE_MAP_STRATEGIES",
    "DeviceMap",
    "DevicePlacementError",
    "check_placement",
    "check_placement_request",
    "device_of",
    "dispatch",
    "input_device",
    "parse_device_map",
    "resolve_device_map",
]

#: accelerate's strategies, resolved from the free memory of each device.
DEVICE_MAP_STRATEGIES: tuple[str, ...] = ("auto", "balanced", "balanced_low_0", "sequential")

#: A device map as given: a strategy name, or module name -> device (``"cuda:0"``, ``"cpu"``, GPU index).
DeviceMap = str | Mapping[str, "str | int | torch.device"]


def parse_device_map(text: str) -> DeviceMap:
    """A device map from the command line: a strategy name (``auto``...) or a JSON object.

    Raises:
        DevicePlacementError: neither a strategy nor a JSON object of module name -> device.
    """
    text = text.strip()
    if text in DEVICE_MAP_STRATEGIES:
        return text
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise DevicePlacementError(
            f"device_map {text!r} is neither one of {list(DEVICE_MAP_STRATEGIES)} nor a JSON object of "
            'module name -> device, e.g. \'{"model.embed_tokens": "cuda:0", "model.layers.0": "cuda:0", '
            '"model.layers.1": "cpu", "model.norm": "cpu", "lm_head": "cpu"}\''
        )
    return value


def _require_accelerate() -> None:
    import importlib.util

    if importlib.util.find_spec("accelerate") is None:
        raise DevicePlacementError(
            "device_map / n_devices need the accelerate package: pip install 'accelerate>=0.30' "
            "(or load on one device with device=...)"
        )


def check_placement_request(device: Any, device_map: DeviceMap | None, n_devices: int | None) -> bool:
    """Whether a split was asked for; fails before anything is read when the request is contradictory.

    Raises:
        DevicePlacementError: ``device`` with ``device_map`` / ``n_devices``, both of these, ``n_devices``
            below 1, or a split without accelerate installed.
    """
    if n_devices is not None and (
        isinstance(n_devices, bool) or not isinstance(n_devices, int) or n_devices < 1
    ):
        raise DevicePlacementError(
            f"n_devices={n_devices!r}: a split needs a whole number of GPUs >= 1 (e.g. n_devices=2); "
            "leave it out to load on one device"
        )
    split = device_map is not None or n_devices is not None
    if split and device is not None:
        raise DevicePlacementError(
            f"device={str(device)!r} puts the whole model on one device and "
            f"{'device_map' if device_map is not None else 'n_devices'} splits it: pass one of them"
        )
    if device_map is not None and n_devices is not None:
        raise DevicePlacementError(
            "pass device_map or n_devices, not both (n_devices=N means 'balanced' on N GPUs)"
        )
    if split:
        _require_accelerate()
    return split


def _canonical(device: Any, where: str) -> str:
    """``"cpu"`` / ``"cuda:N"`` / ``"mps"`` for a device given as a string, an index or a torch.device.

    Raises:
        DevicePlacementError: an unknown device, an offload target, or a device absent on this machine.
    """
    if isinstance(device, bool):
        device = str(device)
    if isinstance(device, int):
        device = f"cuda:{device}"
    if isinstance(device, str) and device.strip().lower() in ("disk", "meta"):
        raise DevicePlacementError(
            f"{where} is {device!r}: disk and meta offload are not supported (every module computes where "
            "its weights are); use 'cpu' for the parts that do not fit on the GPUs"
        )
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise DevicePlacementError(
            f"{where} is {device!r}, which is not a device; use 'cpu', 'cuda:N' (or a GPU index N) or 'mps'"
        ) from None
    if parsed.type == "cpu":
        return "cpu"
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = parsed.index if parsed.index is not None else (torch.cuda.current_device() if count else 0)
        if index >= count:
            present = f"GPUs 0..{count - 1}" if count else "no CUDA GPU"
            raise DevicePlacementError(f"{where} is {device!r}, but this machine has {present}")
        return f"cuda:{index}"
    if parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise DevicePlacementError(f"{where} is {device!r}, but MPS is not available on this machine")
        return "mps"
    raise DevicePlacementError(f"{where} is {device!r}: only 'cpu', 'cuda:N' and 'mps' are supported")


def device_of(name: str, device_map: Mapping[str, str]) -> str | None:
    """The device of parameter / module ``name`` under ``device_map`` (its longest matching prefix)."""
    best: str | None = None
    for key in device_map:
        if (key == "" or name == key or name.startswith(key + ".")) and (
            best is None or len(key) > len(best)
        ):
            best = key
    return None if best is None else device_map[best]


def _input_embedding_key(model: nn.Module) -> str | None:
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    for name, module in model.named_modules():
        if module is embed:
            return name
    return None


def _output_embedding_key(model: nn.Module) -> str | None:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        return None
    for name, module in model.named_modules():
        if module is head:
            return name
    return None


def resolve_device_map(
    model: nn.Module,
    device_map: DeviceMap | None = None,
    *,
    n_devices: int | None = None,
    dtype: torch.dtype = torch.float32,
    tied: bool = False,
) -> dict[str, str]:
    """A complete module name -> device map for ``model`` (built on the meta device, weights not read).

    Args:
        model: the Hugging Face causal LM, on the meta device.
        device_map: a strategy (``"auto"``, ``"balanced"``, ``"balanced_low_0"``, ``"sequential"``) or a
            dict of module name -> device; ``None`` with ``n_devices``.
        n_devices: ``"balanced"`` over the first ``n_devices`` GPUs (TransformerLens' shorthand).
        dtype: the dtype the weights are loaded in (sizes for the strategies).
        tied: the input and output embeddings share one tensor (they must be on one device).

    Returns:
        Every parameter covered; devices as ``"cpu"`` / ``"cuda:N"`` / ``"mps"``; modules holding only
        computed buffers (rotary frequencies) placed on the input device when the map leaves them out.

    Raises:
        DevicePlacementError: accelerate is missing, a device is unknown or absent, a key names no module,
            a parameter is not covered, tied embeddings are mapped apart, or the model does not fit.
    """
    if not check_placement_request(None, device_map, n_devices):
        raise DevicePlacementError("resolve_device_map needs a device_map or n_devices")
    max_memory: dict[Any, Any] | None = None
    if n_devices is not None:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n_devices < 1 or n_devices > count:
            raise DevicePlacementError(
                f"n_devices={n_devices} needs {n_devices} CUDA GPUs, and this machine has {count}; "
                "pass a device_map (e.g. 'auto') or device=..."
            )
        max_memory = {i: torch.cuda.mem_get_info(i)[0] for i in range(n_devices)}
        device_map = "balanced"
    if isinstance(device_map, str):
        resolved = _strategy(model, device_map, dtype, max_memory)
        from_strategy = True
    elif isinstance(device_map, Mapping):
        if not device_map:
            raise DevicePlacementError("device_map is empty: map module names to devices, or pass 'auto'")
        resolved = {str(key): _canonical(value, f"device_map[{key!r}]") for key, value in device_map.items()}
        from_strategy = False
    else:
        raise DevicePlacementError(
            f"device_map must be one of {list(DEVICE_MAP_STRATEGIES)} or a dict of module name -> device, "
            f"got {type(device_map).__name__}"
        )
    modules = dict(model.named_modules())
    unknown = [key for key in resolved if key and key not in modules]
    if unknown:
        examples = [name for name in modules if name.count(".") <= 2 and name][:6]
        raise DevicePlacementError(
            f"device_map names modules this model does not have: {unknown[:4]}; keys are module names of "
            f"the Hugging Face model, e.g. {examples}"
        )
    uncovered = [name for name, _ in model.named_parameters() if device_of(name, resolved) is None]
    if uncovered:
        raise DevicePlacementError(
            f"device_map gives no device for {len(uncovered)} weights, e.g. {uncovered[:3]}; map their "
            "modules too (or add '' for everything else)"
        )
    embed, head = _input_embedding_key(model), _output_embedding_key(model)
    if embed is None:
        raise DevicePlacementError("this model has no input embedding to send the inputs to")
    first = device_of(f"{embed}.weight", resolved)
    assert first is not None
    if tied and head is not None and device_of(f"{head}.weight", resolved) != first:
        if not from_strategy:
            raise DevicePlacementError(
                f"this checkpoint ties its input and output embeddings (one tensor), but device_map puts "
                f"{embed!r} on {first} and {head!r} on {device_of(f'{head}.weight', resolved)}; map both to "
                "the same device"
            )
        resolved[head] = first
    resolved = _partition(model, resolved)
    for name, module in modules.items():  # computed buffers only (rotary inv_freq): the input device
        weightless = next(module.parameters(), None) is None
        buffers = next(module.buffers(recurse=False), None) is not None
        if name and weightless and buffers and device_of(name, resolved) is None:
            resolved[name] = first
    return resolved


def _partition(model: nn.Module, device_map: dict[str, str]) -> dict[str, str]:
    """The map with no key inside another: a coarse key holding finer keys is replaced by its children
    (each hooked module then gets its inputs on its device, whatever ran before it)."""
    out: dict[str, str] = {}

    def visit(name: str, module: nn.Module, inherited: str | None) -> None:
        device = device_map.get(name, inherited)
        finer = [key for key in device_map if key != name and (name == "" or key.startswith(name + "."))]
        if not finer:
            if device is not None:
                out[name] = device
            return
        if device is not None and any(True for _ in module.parameters(recurse=False)):
            raise DevicePlacementError(
                f"device_map splits module {name or '(the whole model)'!r}, which holds weights of its own; "
                "map it whole, or map each of its children"
            )
        for child, submodule in module.named_children():
            visit(f"{name}.{child}" if name else child, submodule, device)

    visit("", model, None)
    return out


def _strategy(model: nn.Module, strategy: str, dtype: torch.dtype, max_memory: Any) -> dict[str, str]:
    """accelerate's map for a strategy, as Hugging Face's ``from_pretrained(device_map=...)`` computes it."""
    if strategy not in DEVICE_MAP_STRATEGIES:
        raise DevicePlacementError(
            f"device_map={strategy!r}: choose one of {list(DEVICE_MAP_STRATEGIES)} or pass a dict of module "
            "name -> device"
        )
    from accelerate import infer_auto_device_map
    from accelerate.utils import get_balanced_memory, get_max_memory

    no_split = list(getattr(model, "_no_split_modules", None) or [])
    if strategy == "sequential":
        memory = get_max_memory(max_memory)
    else:
        memory = get_balanced_memory(
            model,
            max_memory=max_memory,
            no_split_module_classes=no_split,
            dtype=dtype,
            low_zero=strategy == "balanced_low_0",
        )
    inferred = infer_auto_device_map(model, max_memory=memory, no_split_module_classes=no_split, dtype=dtype)
    if any(str(device) in ("disk", "meta") for device in inferred.values()):
        raise DevicePlacementError(
            f"the model does not fit in the memory of this machine's devices (device_map={strategy!r} "
            "would offload weights to disk, which is not supported); load in bfloat16, or on a larger machine"
        )
    return {str(key): _canonical(value, f"device_map[{key!r}]") for key, value in inferred.items()}


def check_placement(device_map: Mapping[str, str], dtype: torch.dtype) -> None:
    """Fail early when a device of the map cannot compute in ``dtype`` (e.g. bfloat16 on an old GPU)."""
    for device in sorted(set(device_map.values())):
        check_dtype_supported(dtype, torch.device(device))


def input_device(model: nn.Module) -> torch.device:
    """Where the model's inputs go: the device of its input embedding."""
    return model.get_input_embeddings().weight.device


def dispatch(model: nn.Module, device_map: Mapping[str, str]) -> nn.Module:
    """Attach accelerate's device hooks for ``device_map`` to a model whose weights are already in place.

    Like ``accelerate.dispatch_model`` but without offloading: each mapped module runs on its own device
    (a ``"cpu"`` entry computes on the CPU); the whole model's inputs go to :func:`input_device` and its
    outputs come back there. Sets ``model.hf_device_map`` (read by TransformerLens for ``cfg.n_devices``).
    """
    _require_accelerate()
    from accelerate.hooks import attach_align_device_hook_on_blocks
    from accelerate.utils import find_tied_parameters, retie_parameters

    main = str(input_device(model))
    mapped = dict(device_map)
    execution: dict[str, Any] = {**mapped, "": mapped.get("", main)}
    tied = find_tied_parameters(model)
    attach_align_device_hook_on_blocks(
        model,
        execution_device=execution,
        offload={name: False for name in mapped},  # no offload; "" only when the map is {"": device}
        skip_keys=getattr(model, "_skip_keys_device_placement", None),
    )
    retie_parameters(model, tied)
    model.hf_device_map = mapped
    return model
