"""Correct cache maths on the default (raw) bridge: norm-scaled residual stacks include the norm weight.

TransformerLens' ``ActivationCache.apply_ln_to_stack`` (and so ``logit_attrs``,
``decompose_resid(apply_ln=True)``, ``stack_head_results(apply_ln=True)``) divides a residual stack
by the cached norm scale and assumes the norm's weight was folded into the next weights, which only
``enable_compatibility_mode()`` does. On the raw bridge that :func:`slm_transformerlens.load` returns
(logits bit-identical to Hugging Face) the weight is still in the norm, so those tools are silently
wrong (a final-layer logit difference of 0.195 instead of 0.341 on a tiny SIMS model).

The choice: keep the raw bridge as the default (our lens, the patching sweeps and the parity tests
rely on the checkpoint's own weights) and correct the tools instead. :class:`NormWeightedActivationCache`
multiplies the scaled stack by the EFFECTIVE weight of the norm that reads it (the final norm, or a
block's ``ln1`` / ``ln2``), read from the live norm module: after ``enable_compatibility_mode()`` that
weight is folded away (ones, or an ``RMSNormPre`` without a weight) and nothing changes, so the cache
is right in both modes. ``HookedSLM.run_with_cache`` returns this cache.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.ActivationCache import ActivationCache

__all__ = ["NormWeightedActivationCache", "effective_norm_weight", "with_norm_weights"]

_PROBE = 64.0  # RMSNorm(c * ones) = w * c / sqrt(c^2 + eps) = w (1 - eps / 2c^2): exact in fp32


def _norm_module(model: Any, layer: int | None, mlp_input: bool) -> Any:
    n_layers = int(model.cfg.n_layers)
    if layer is None or layer == -1 or layer == n_layers:
        return getattr(model, "ln_final", None)
    block = model.blocks[layer]
    return getattr(block, "ln2" if mlp_input else "ln1", None)


def effective_norm_weight(model: Any, layer: int | None = None, mlp_input: bool = False) -> Tensor | None:
    """The per-feature factor the norm reading ``layer``'s input multiplies by, or ``None`` (no weight).

    ``layer`` is in ``[0, n_layers]`` (``None`` / ``-1`` / ``n_layers``: the final norm); ``mlp_input``
    picks ``ln2`` over ``ln1``. For RMSNorm the factor is measured by running the Hugging Face norm on
    a constant vector, so conventions such as Gemma's ``(1 + w)`` come out right; for LayerNorm it is
    its ``weight``. Folded norms (compatibility mode) give ``None``.
    """
    module = _norm_module(model, layer, mlp_input)
    if module is None:
        return None
    hf_norm = getattr(module, "original_component", module)
    weight = getattr(hf_norm, "weight", None)
    if not isinstance(weight, Tensor):
        return None
    kind = str(getattr(model.cfg, "normalization_type", "") or "")
    if kind == "LN":
        return weight.detach()
    if kind != "RMS":
        return None
    probe = torch.full((1, 1, weight.shape[-1]), _PROBE, dtype=weight.dtype, device=weight.device)
    with torch.no_grad():
        factor = hf_norm(probe).reshape(-1)
    return None if bool(torch.all(factor == 1)) else factor


#: ``ActivationCache`` methods that stack or combine activations of several layers.
_STACKING = (
    "accumulated_resid",
    "logit_lens",
    "logit_attrs",
    "decompose_resid",
    "stack_head_results",
    "stack_activation",
    "get_neuron_results",
    "stack_neuron_results",
    "get_full_resid_decomposition",
    "apply_ln_to_stack",
)


class NormWeightedActivationCache(ActivationCache):
    """An ``ActivationCache`` whose ``apply_ln_to_stack`` includes the norm's weight where it is not folded.

    Everything else is TransformerLens' ``ActivationCache``. With a raw bridge,
    ``cache.logit_attrs(cache.decompose_resid(), tokens=a, incorrect_tokens=b).sum(0)`` equals the
    model's logit difference; with a bridge in compatibility mode the results equal TransformerLens'.

    On a model split over several devices (``device_map``) each activation stays on its layer's device
    (``cache[name]``), and the stacking methods (``accumulated_resid``, ``decompose_resid``,
    ``apply_ln_to_stack``, ``logit_attrs``, ...) read every activation on :attr:`gather_device`, the
    unembedding's device, so ``cache.accumulated_resid(apply_ln=True) @ model.W_U`` works as on one device.
    """

    #: where the stacking methods gather activations (``None``: where they are, one device).
    gather_device: torch.device | None = None
    _gathering: int = 0

    def __getitem__(self, key: Any) -> Any:
        value = super().__getitem__(key)
        if self._gathering and self.gather_device is not None and isinstance(value, Tensor):
            return value.to(self.gather_device)
        return value

    def apply_ln_to_stack(
        self,
        residual_stack: Float[Tensor, "num_components *batch_and_pos_dims d_model"],
        layer: int | None = None,
        mlp_input: bool = False,
        pos_slice: Any = None,
        batch_slice: Any = None,
        has_batch_dim: bool = True,
        recompute_ln: bool = False,
    ) -> Float[Tensor, "num_components *batch_and_pos_dims_out d_model"]:
        """TransformerLens' ``apply_ln_to_stack``, times the effective norm weight (see the module doc)."""
        scaled = super().apply_ln_to_stack(
            residual_stack,
            layer,
            mlp_input,
            pos_slice=pos_slice,
            batch_slice=batch_slice,
            has_batch_dim=has_batch_dim,
            recompute_ln=recompute_ln,
        )
        final = layer is None or layer == -1 or layer == int(self.model.cfg.n_layers)
        if recompute_ln and final and hasattr(self.model, "ln_final"):
            return scaled  # TransformerLens ran the model's own final norm, weight included
        weight = effective_norm_weight(self.model, layer, mlp_input)
        return scaled if weight is None else scaled * weight.to(device=scaled.device, dtype=scaled.dtype)


def _gathering(method: Any) -> Any:
    """``method`` reading every activation on the cache's ``gather_device`` (when it has one)."""

    @functools.wraps(method)
    def gathered(self: NormWeightedActivationCache, *args: Any, **kwargs: Any) -> Any:
        self._gathering += 1
        try:
            return method(self, *args, **kwargs)
        finally:
            self._gathering -= 1

    return gathered


for _name in _STACKING:
    if hasattr(NormWeightedActivationCache, _name):
        setattr(NormWeightedActivationCache, _name, _gathering(getattr(NormWeightedActivationCache, _name)))


def with_norm_weights(cache: Any) -> Any:
    """``cache`` as a :class:`NormWeightedActivationCache` (same tensors, no copy); other objects unchanged.

    On a model split over several devices its stacking methods gather on the unembedding's device."""
    if type(cache) is ActivationCache:
        out = NormWeightedActivationCache(cache.cache_dict, cache.model, has_batch_dim=cache.has_batch_dim)
        device_map = getattr(getattr(cache.model, "original_model", None), "hf_device_map", None)
        if device_map and len(set(device_map.values())) > 1:
            out.gather_device = cache.model.W_U.device
        return out
    return cache
