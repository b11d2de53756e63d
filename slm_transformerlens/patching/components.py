"""The patchable components and their standard hook points on a TransformerBridge.

Every patch is written at a standard TransformerLens hook name (``blocks.{l}.hook_resid_pre``,
``blocks.{l}.hook_attn_out``, ``blocks.{l}.hook_mlp_out``, ``blocks.{l}.hook_resid_post``,
``blocks.{l}.attn.hook_z``), so patches compose with ``model.hooks()`` and user hooks.

``resid_mid`` is special: on a TransformerLens 4.3 bridge over a pre-norm HF block,
``blocks.{l}.hook_resid_mid`` is an alias of ``blocks.{l}.ln2.hook_in``: a tensor that feeds ONLY the MLP
branch (the residual addition after the MLP uses HF's own copy). Writing there does not patch the residual
stream. So a ``resid_mid`` patch is written at ``blocks.{l}.hook_attn_out`` as
``attn_out := target_resid_mid - resid_pre`` (with ``resid_pre`` of the same forward, captured at
``blocks.{l}.hook_resid_pre``), which sets ``resid_pre + attn_out`` (the true mid residual) to the target.
"""

from __future__ import annotations

from typing import Literal

from slm_transformerlens._deprecation import deprecated_attributes
from slm_transformerlens.hooks import hook_name as _hook_name
from slm_transformerlens.patching.alignment import PatchingError

__all__ = [
    "COMPONENTS",
    "HEAD_COMPONENTS",
    "Component",
    "check_components",
    "patch_hook_name",
    "source_hooks",
]

Component = Literal[
    "resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "head_out", "head_out_all_pos"
]
COMPONENTS: tuple[str, ...] = (
    "resid_pre",
    "resid_mid",
    "resid_post",
    "attn_out",
    "mlp_out",
    "head_out",
    "head_out_all_pos",
)
HEAD_COMPONENTS: tuple[str, ...] = ("head_out", "head_out_all_pos")

#: The activation (TransformerLens name) each component's patch is written at.
_WRITTEN_AT = {
    "resid_pre": "resid_pre",
    "resid_mid": "attn_out",
    "resid_post": "resid_post",
    "attn_out": "attn_out",
    "mlp_out": "mlp_out",
    "head_out": "z",
    "head_out_all_pos": "z",
}
#: ``components.hook_name(component, layer)`` was this module's own hook-name function (deprecated).
__getattr__ = deprecated_attributes(
    __name__, {"hook_name": "slm_transformerlens.patching.components:patch_hook_name"}
)


def check_components(components: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Validate a component list (a single name is allowed)."""
    names = (components,) if isinstance(components, str) else tuple(components)
    unknown = [c for c in names if c not in COMPONENTS]
    if unknown or not names:
        raise PatchingError(f"unknown components {unknown}; choose from {COMPONENTS}")
    return names


def patch_hook_name(component: str, layer: int) -> str:
    """The standard hook point a component's patch is written at (``resid_mid``: ``hook_attn_out``)."""
    return _hook_name(_WRITTEN_AT[component], layer)


def source_hooks(component: str, layer: int) -> list[str]:
    """The hook points whose source-run activations a component's patch needs."""
    if component == "resid_mid":
        return [_hook_name("resid_pre", layer), _hook_name("attn_out", layer)]
    return [patch_hook_name(component, layer)]
