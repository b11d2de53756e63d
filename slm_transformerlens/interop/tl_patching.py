"""A guard for TransformerLens' own activation patching on speech pairs.

``transformer_lens.patching`` (``get_act_patch_resid_pre`` and friends, ``generic_activation_patch``)
copies position ``i`` of the clean run into position ``i`` of the corrupted run. On a speech pair the
two utterances usually differ in length (a spoken word is as many tokens as it has units), so every
position after the first difference holds another word, and TransformerLens patches them by index
without a word. :class:`~slm_transformerlens.patching.PatchPair` aligns the runs by word spans
instead (``PatchPair.from_inputs`` + ``activation_patch_sweep``); on an equal-length pair with the
words at the same positions the two agree exactly.

``HookedSLM.run_with_hooks`` passes its hooks through :func:`guard_patching_hooks`: a TransformerLens
patching hook whose clean activation does not have the corrupted activation's shape raises
:class:`~slm_transformerlens.interop.InteropError` instead of patching by index.
:func:`check_tl_patching_pair` checks a pair of speech inputs before patching (same length AND every
word at the same positions).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from jaxtyping import Int
from torch import Tensor

from slm_transformerlens.interop.errors import InteropError

__all__ = ["check_tl_patching_pair", "guard_patching_hooks"]

_USE_PATCH_PAIR = (
    "use slm_transformerlens.patching.PatchPair.from_inputs(model, clean, corrupted) with "
    "activation_patch_sweep, which aligns the two runs by word spans"
)


def _checked(hook_fn: functools.partial) -> Callable[..., Any]:
    clean = hook_fn.keywords["clean_activation"]

    def hook(activation: Tensor, hook: Any) -> Any:
        if isinstance(clean, Tensor) and tuple(clean.shape) != tuple(activation.shape):
            raise InteropError(
                f"TransformerLens' patching copies position i of the clean run into position i of the corrupted "
                f"run, but at {getattr(hook, 'name', '?')} the clean activation has shape {tuple(clean.shape)} "
                f"and the corrupted one {tuple(activation.shape)}: the runs differ in length, so the words sit "
                f"at different positions. {_USE_PATCH_PAIR[0].upper()}{_USE_PATCH_PAIR[1:]}."
            )
        return hook_fn(activation, hook=hook)

    return hook


def guard_patching_hooks(
    fwd_hooks: Sequence[tuple[Any, Callable[..., Any]]],
) -> list[tuple[Any, Callable[..., Any]]]:
    """The hooks, with TransformerLens patching hooks (partials bound to a ``clean_activation``) shape-checked."""
    guarded = []
    for name, hook_fn in fwd_hooks:
        if isinstance(hook_fn, functools.partial) and "clean_activation" in hook_fn.keywords:
            hook_fn = _checked(hook_fn)
        guarded.append((name, hook_fn))
    return guarded


def check_tl_patching_pair(
    model: Any, clean: Any, corrupted: Any
) -> tuple[Int[Tensor, "1 pos"], Int[Tensor, "1 pos"]]:
    """Tokens of a speech pair that TransformerLens' index-based patching handles correctly.

    Args:
        model: a ``HookedSLM``.
        clean: the clean utterance (``Speech`` / ``Text`` segments).
        corrupted: the corrupted utterance.

    Returns:
        ``(clean_tokens, corrupted_tokens)``, each ``[1, pos]``, for ``transformer_lens.patching``.

    Raises:
        InteropError: the two differ in length, or in where any word sits (patching by index would mix
            different words); the message points to ``PatchPair``.
    """
    encoded = [model.encode(utterance) for utterance in (clean, corrupted)]
    if any(e.tokens.shape[0] != 1 for e in encoded):
        raise InteropError("check_tl_patching_pair takes one utterance per run, not a batch")
    lengths = [e.lengths[0] for e in encoded]
    if lengths[0] != lengths[1]:
        raise InteropError(
            f"the clean run is {lengths[0]} tokens and the corrupted run {lengths[1]}: TransformerLens patches "
            f"by position, so every position after the first difference holds another word; {_USE_PATCH_PAIR}"
        )
    spans = [e.word_spans[["start", "stop"]].to_numpy().tolist() for e in encoded]
    if spans[0] != spans[1]:
        moved = [
            word
            for word, a, b in zip(encoded[0].word_spans["word"], spans[0], spans[1], strict=False)
            if a != b
        ]
        raise InteropError(
            f"the runs are the same length but words sit at different positions (e.g. {moved[:3]}): patching "
            f"by position mixes different words; {_USE_PATCH_PAIR}"
        )
    return encoded[0].tokens, encoded[1].tokens
