"""The dtype a checkpoint is loaded in, and whether a device can compute in it."""

from __future__ import annotations

from typing import Any

import torch

from slm_transformerlens.errors import CheckpointError

__all__ = ["check_dtype_supported", "resolve_dtype"]


def resolve_dtype(dtype: torch.dtype | str | None, hf_config: Any) -> torch.dtype:
    """The dtype to load in: the argument, else float32.

    Float32 is the default (not the checkpoint's stored dtype) because interpretability
    read-outs are compared at fp32 precision; pass ``dtype=torch.bfloat16`` to halve memory.
    """
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str):
        name = dtype.removeprefix("torch.")
        if name == "auto":
            stored = getattr(hf_config, "dtype", None) or getattr(hf_config, "torch_dtype", None)
            return resolve_dtype(stored, hf_config) if stored not in (None, "auto") else torch.float32
        resolved = getattr(torch, name, None)
        if not isinstance(resolved, torch.dtype):
            raise CheckpointError(f"unknown dtype {dtype!r}; use float32, bfloat16, float16 or 'auto'")
        return resolved
    return dtype


def check_dtype_supported(dtype: torch.dtype, device: torch.device) -> None:
    """Fail early and clearly when ``device`` cannot compute in ``dtype``.

    Raises:
        CheckpointError: e.g. bfloat16 on a CUDA GPU older than Ampere, or a device that is absent.
    """
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CheckpointError(f"device {device} was requested but CUDA is not available on this machine")
        if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            raise CheckpointError(
                f"dtype bfloat16 is not supported on {torch.cuda.get_device_name(device)} "
                "(needs compute capability >= 8.0). Load with dtype=torch.float16 or torch.float32."
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise CheckpointError(f"device {device} was requested but MPS is not available on this machine")
    try:
        probe = torch.ones(2, 2, dtype=dtype, device=device)
        (probe @ probe).sum().item()
    except (RuntimeError, TypeError) as error:
        raise CheckpointError(
            f"device {device} cannot compute in {dtype} ({error}); choose another dtype"
        ) from error
