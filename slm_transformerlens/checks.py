"""Finite-value checks: a NaN or infinite weight or logit is an error, never a silently wrong rank.

Ranks count the tokens whose logit is strictly larger than the target's; against NaN that count is 0,
so one NaN would report a perfect top-1 rate. Every read-out therefore checks its logits first
(:func:`check_finite_logits`), and weights are checked as they stream in (:func:`check_finite_weight`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Float
from torch import Tensor

from slm_transformerlens.errors import NonFiniteError

__all__ = ["check_finite_logits", "check_finite_weight", "first_non_finite"]


def _all_finite(tensor: Tensor) -> bool:
    """One fast pass: min and max propagate NaN, and an infinity is the min or the max."""
    low, high = torch.aminmax(tensor)
    return bool(torch.isfinite(low) & torch.isfinite(high))


def first_non_finite(tensor: Tensor) -> tuple[int, ...] | None:
    """The index of the first NaN / infinite element of a floating tensor, or ``None`` if all are finite."""
    if not tensor.is_floating_point() or tensor.numel() == 0:
        return None
    if _all_finite(tensor):
        return None
    bad = ~torch.isfinite(tensor)
    if not bool(bad.any()):
        return None
    return tuple(int(i) for i in torch.nonzero(bad)[0].tolist())


def _kind(tensor: Tensor, index: tuple[int, ...]) -> str:
    value = float(tensor[index])
    return "NaN" if value != value else ("+inf" if value > 0 else "-inf")


def check_finite_weight(tensor: Tensor, *, name: str, source: str, dtype: torch.dtype | None = None) -> None:
    """Raise when a weight read from a checkpoint holds NaN or infinity.

    Args:
        tensor: the weight, as it will be used (after any dtype conversion).
        name: the tensor's key in the checkpoint file.
        source: the file it came from.
        dtype: the load dtype, to explain an overflow (a finite stored value too large for it).

    Raises:
        NonFiniteError: naming the tensor, the element and the fix.
    """
    index = first_non_finite(tensor)
    if index is None:
        return
    cause = "the checkpoint file is corrupt (re-download or re-save it)"
    if dtype is not None and dtype in (torch.float16, torch.bfloat16):
        cause = f"a stored value overflows {dtype} or the file is corrupt: load with dtype='float32'"
    raise NonFiniteError(
        f"{source}: weight {name} holds {_kind(tensor, index)} at index {list(index)}; {cause}"
    )


def check_finite_logits(
    logits: Float[Tensor, "rows vocab"],
    *,
    describe_row: Callable[[int], str] = lambda row: f"row {row}",
    what: str = "lens logits",
) -> None:
    """Raise before any rank, probability or hit is computed from NaN / infinite logits.

    Reusable by every read-out (logit lens, tuned lens, knowledge scoring): call it on each chunk of logits.

    Args:
        logits: ``[rows, vocab]`` logits (or log-probabilities).
        describe_row: where row ``i`` was read, e.g. ``"layer 3 resid_post, batch 0 position 17"``.
        what: what the logits are, for the message.

    Raises:
        NonFiniteError: naming the first bad row, how many rows are bad, and the likely fix.
    """
    if _all_finite(logits):
        return
    bad_rows = ~torch.isfinite(logits).all(dim=-1)
    rows = torch.nonzero(bad_rows).flatten().tolist()
    first = int(rows[0])
    column = int(torch.nonzero(~torch.isfinite(logits[first]))[0])
    raise NonFiniteError(
        f"{what} at {describe_row(first)} hold {_kind(logits[first], (column,))} (token {column}; "
        f"{len(rows)} of {logits.shape[0]} rows are not finite). The residual stream overflowed or the "
        "weights are corrupt: load the model with dtype='float32' (float16 overflows above 65504), or check "
        "the checkpoint; no rank or rate is reported from non-finite logits."
    )
