"""TransformerLens hook names, in TransformerLens' own argument order (``utils.get_act_name(name, layer)``)."""

from __future__ import annotations

from slm_transformerlens.errors import SLMError

__all__ = ["ATTENTION_ACTIVATIONS", "BLOCK_ACTIVATIONS", "HookNameError", "hook_name"]

#: Activations at the block level: ``blocks.{layer}.hook_{name}``.
BLOCK_ACTIVATIONS: tuple[str, ...] = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")
#: Activations inside the attention module: ``blocks.{layer}.attn.hook_{name}``.
ATTENTION_ACTIVATIONS: tuple[str, ...] = ("q", "k", "v", "z", "result", "attn_scores", "pattern")


class HookNameError(SLMError, ValueError):
    """An activation name this package does not know how to hook."""


def hook_name(name: str, layer: int) -> str:
    """The standard hook name of activation ``name`` in block ``layer``, e.g. ``blocks.3.hook_resid_post``.

    Same argument order and names as TransformerLens' ``utils.get_act_name(name, layer)`` for the
    activations in :data:`BLOCK_ACTIVATIONS` and :data:`ATTENTION_ACTIVATIONS` (``"z"`` ->
    ``blocks.{layer}.attn.hook_z``). (The lens' old ``lens.hook_name(layer, site)`` is a deprecated alias.)

    Raises:
        HookNameError: an unknown activation name.
    """
    if name in BLOCK_ACTIVATIONS:
        return f"blocks.{int(layer)}.hook_{name}"
    if name in ATTENTION_ACTIVATIONS:
        return f"blocks.{int(layer)}.attn.hook_{name}"
    raise HookNameError(
        f"unknown activation {name!r}; choose one of {list(BLOCK_ACTIVATIONS + ATTENTION_ACTIVATIONS)}"
    )
