"""Read-out precision: the lens logits from one float32 product, or the same logits from split 16-bit products.

Every lens read-out multiplies float32 normalised vectors ``x`` (``[rows, d_model]``) by the unembedding
``W`` (``[d_vocab, d_model]``). Two ways:

- ``"fp32"``: one float32 matrix product (``F.linear``), as before this option existed.
- ``"fast"``: the same float32 logits from 16-bit tensor-core products with float32 accumulation.
  ``W`` is held in fp16 (times a power of two) or bf16 (a bf16 model's unembedding is bf16 already; fp16
  holds every bf16 weight above ``2**-31`` of the largest one and rounds smaller ones by at most ``2**-39``
  of it, which changes no logit beyond float32 rounding), ``x`` is split into 16-bit pieces
  ``x = x_1 + x_2 [+ x_3] + r``, and ``logits = sum_i x_i W^T``, the first piece's product summed over
  blocks of :data:`K_BLOCK` columns. Every product of a piece and a weight is exact in float32 (at most
  22 significant bits; float32 holds 24), so nothing is rounded to 16 bits: the logits are the exact dot products of
  the float32 inputs up to float32 accumulation rounding (as the fp32 product's are) and the remainder
  ``r``: zero for three bf16 pieces, and for two fp16 pieces at most ``2**-22`` of each component (or
  ``2**-39`` of the row's largest component, for tiny ones), so ``|r . W_v|`` stays below
  ``2**-22 * sum_i |x_i W_vi|`` (plus that ``2**-39`` term), under float32 accumulation rounding
  (``d_model * 2**-24 * sum_i |x_i W_vi|`` in the worst case).

What is exact. "fast" is the fp32 read-out computed in another order: ranks, top-k ids, probabilities,
masses and entropy are reduced from its logits by the same code. They differ from the "fp32" read-out
only between logits that lie within float32 rounding of each other (about 1e-5 for a 4096-wide model),
which the fp32 product itself does not order reliably: measured on an H200 (8,192 rows, d_model 4096,
128,758 tokens, bf16 weights) against float64 logits, the fp32 product is off by 1.2e-6 rms (2.0e-5 at
most) and ranks 32 of 1,024 mid-vocabulary targets differently from float64; "fast" with fp16 pieces is
off by 1.2e-6 rms (7.8e-6 at most) and misranks 29, in 79 ms instead of 162 ms (bf16 pieces: 1.0e-6,
26, 105 ms). A probability ``p = exp(l - log Z)`` moves by about ``p * |dl|`` for a logit error ``dl``,
so both read-outs' probabilities are within a few ``1e-6`` of exact (and of each other) at these errors.

A plain bf16 product is not exact: its error (up to 1e-2 logit in the measurement above; a rigorous
bound, ``2**-7 * |x| * max_v |W_v|``, is 0.5 logit) is much larger than the spacing of logits in a 128k
vocabulary, about 50,000 tokens per logit unit around a mid-ranked target. It changed 8,083 of the fp32
product's 8,192 mid-vocabulary ranks and 1,542 of its 8,192 top-10 lists. ``"certified"``
(:mod:`~slm_transformerlens.lens.certified`) makes bf16 products exact in ranks and top-k: the vector
in two bf16 pieces, a per-token bound (Cauchy-Schwarz per vocabulary row) and a float64 recheck of
every token it cannot settle; its speed at the 7B shape on a GPU is not measured yet.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from slm_transformerlens.errors import LensError

__all__ = [
    "K_BLOCK",
    "READOUT_PRECISIONS",
    "ReadoutPrecision",
    "SplitUnembedding",
    "check_readout_precision",
    "default_readout_precision",
    "native_half_matmul",
    "reduced_float32_matmul",
    "split_pieces",
    "split_unembedding",
]

ReadoutPrecision = Literal["fp32", "fast", "certified"]
#: The read-out precisions (``None`` / ``"auto"`` pick one for the device, see ``Lens.readout_precision``).
READOUT_PRECISIONS: tuple[str, ...] = ("fp32", "fast", "certified")
#: Columns of ``x`` per float32-accumulated product of the leading piece (tensor cores accumulate a long
#: product less accurately than float32 FMAs; blocks of 1024 summed in float32 match them, measured).
K_BLOCK = 1024


def check_readout_precision(precision: str | None) -> str | None:
    """Validate a read-out precision: ``"fp32"``, ``"fast"``, ``"certified"``, or ``None`` / ``"auto"`` (-> ``None``).

    Raises:
        ValueError: anything else (a :class:`~slm_transformerlens.lens.LensError` where the lens raises it).
    """
    if precision is None or precision == "auto":
        return None
    if precision not in READOUT_PRECISIONS:
        raise LensError(
            f"readout_precision={precision!r}: choose 'fp32' (one float32 product), 'fast' (the same logits "
            "from split bf16/fp16 products), 'certified' (bf16 products, their undecided tokens recomputed: "
            "exact ranks and top-k) or 'auto' / None (the device's default)"
        )
    return str(precision)


def default_readout_precision(device: torch.device | str) -> str:
    """The read-out precision used when none is asked for: ``"fp32"`` on every device, for now.

    ``"fast"`` and ``"certified"`` are opt-in. ``"certified"`` (:mod:`~slm_transformerlens.lens.certified`)
    is exact by construction and tested on the CPU with emulated rounding; its GPU speed is unmeasured. Its products were timed on an H200 by standalone scripts with the same torch
    calls (79 ms instead of 162 ms per 8,192 rows of a 7B model's read-out, as close to float64 as the
    float32 product; module docstring), but the package's fast path has only run emulated on the CPU,
    not yet end to end on a GPU, so it is not the CUDA default. On the CPU the split products are
    emulated in float32 and slower than one float32 product. ``device`` is kept for a per-device choice.
    """
    torch.device(device)  # validates the argument
    return "fp32"


def reduced_float32_matmul() -> str | None:
    """What makes float32 matrix products round their inputs (TF32, bf16), or ``None`` when they are IEEE.

    ``torch.set_float32_matmul_precision("high")`` or ``torch.backends.cuda.matmul.allow_tf32 = True``
    (often set for training) make every float32 product, the ``"fp32"`` read-out's too, round its inputs
    to 10 mantissa bits. The ``"fast"`` read-out's own products are unaffected (their inputs hold at most
    11 significant bits).
    """
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):  # torch >= 2.9: read the new API only (reading the old can raise)
        default = getattr(torch.backends, "fp32_precision", "none")
        for name, value in (
            ("torch.backends.cuda.matmul.fp32_precision", matmul.fp32_precision),
            (
                "torch.backends.mkldnn.matmul.fp32_precision",
                getattr(getattr(torch.backends.mkldnn, "matmul", None), "fp32_precision", "none"),
            ),
        ):
            effective = default if value == "none" else value
            if effective not in ("none", "ieee"):
                return f"{name} is {effective!r}"
        return None
    precision = torch.get_float32_matmul_precision()
    return None if precision == "highest" else f"torch.get_float32_matmul_precision() is {precision!r}"


@functools.cache
def native_half_matmul(device_type: str) -> bool:
    """Whether ``torch.mm(a16, b16, out_dtype=torch.float32)`` runs natively on this device type (CUDA, torch >= 2.8).

    Without it (the CPU, older torch) the split products are emulated in float32: the same numbers,
    several times slower than one float32 product.
    """
    if device_type != "cuda" or not torch.cuda.is_available():
        return False
    try:
        a = torch.ones(16, 16, device="cuda", dtype=torch.bfloat16)
        out = torch.mm(a, a, out_dtype=torch.float32)  # type: ignore[call-arg]
    except (TypeError, RuntimeError, NotImplementedError):
        return False
    return out.dtype == torch.float32


def split_pieces(
    x: Float[Tensor, "rows d"], dtype: torch.dtype, n: int, exponent: int = 0
) -> tuple[list[Tensor], Float[Tensor, "rows d"]]:
    """``x * 2**exponent`` as ``n`` pieces of ``dtype`` (largest first) and the float32 remainder.

    ``x * 2**exponent == sum(pieces) + remainder`` exactly: each piece is the rounding of what is left,
    and the difference of a float32 value and its 16-bit rounding is a float32 value. Three bf16 pieces
    hold every float32 value of normal range (remainder 0); two fp16 pieces leave at most ``2**-22`` of
    each component (and what falls below fp16's range).
    """
    rest = x.float() * (2.0**exponent) if exponent else x.float()
    pieces = []
    for _ in range(n):
        piece = rest.to(dtype)
        pieces.append(piece)
        rest = rest - piece.float()
    return pieces, rest


@dataclass(frozen=True)
class SplitUnembedding:
    """The unembedding held exactly in a 16-bit format, and how to split read-out vectors for it.

    Attributes:
        weight: ``[d_vocab, d_model]``, equal to ``W * 2**w_exponent`` exactly, in ``dtype`` (float32
            holding the same values where the products are emulated).
        dtype: the 16-bit format (``torch.float16`` or ``torch.bfloat16``).
        w_exponent: the power of two that brings ``W`` into fp16's range (0 for bf16).
        pieces: pieces per vector (3 for bf16: exact; 2 for fp16: to within ``2**-22``).
        bias: the float32 bias, or ``None``.
        native: half-precision products with float32 output run natively (else emulated in float32).
    """

    weight: Tensor
    dtype: torch.dtype
    w_exponent: int
    pieces: int
    bias: Tensor | None
    native: bool

    def __call__(self, x: Float[Tensor, "rows d_model"]) -> Float[Tensor, "rows d_vocab"]:
        """Float32 logits of normalised vectors (see the module docstring for what is exact)."""
        x = x.float()
        row_exponent = None
        if self.dtype == torch.float16:
            # each row times a power of two that puts its largest component in [2**14, 2**15) (no host sync)
            top = x.abs().amax(-1, keepdim=True).clamp_min(2.0**-100)  # zero rows: any finite scale
            row_exponent = 14 - torch.floor(torch.log2(top))
            x = x * torch.exp2(row_exponent)
        pieces, _ = split_pieces(x, self.dtype, self.pieces)
        weight_t = self.weight.T
        out: Tensor | None = None
        lead = pieces[0]
        for start in range(0, x.shape[-1], K_BLOCK):
            out = self._accumulate(out, lead[:, start : start + K_BLOCK], weight_t[start : start + K_BLOCK])
        for piece in pieces[1:]:
            out = self._accumulate(out, piece, weight_t)
        assert out is not None
        if row_exponent is not None:
            out.mul_(torch.exp2(-(row_exponent + self.w_exponent)))
        if self.bias is not None:
            out.add_(self.bias)
        return out

    def _accumulate(self, out: Tensor | None, a: Tensor, b: Tensor) -> Tensor:
        if not self.native:  # float32 products of the same 16-bit values: exact, like the tensor cores'
            product = torch.mm(a.float(), b)
            return product if out is None else out.add_(product)
        if out is None:
            return torch.mm(a, b, out_dtype=torch.float32)  # type: ignore[call-arg]
        return torch.addmm(out, a, b, out_dtype=torch.float32)  # type: ignore[call-arg]


def split_unembedding(
    weight: Float[Tensor, "d_vocab d_model"],
    bias: Float[Tensor, " d_vocab"] | None,
    *,
    formats: Sequence[str] = ("float16", "bfloat16"),
) -> SplitUnembedding | None:
    """The unembedding in the first of ``formats`` that holds it, or ``None`` when none does.

    ``weight`` may be of any dtype (a bf16 model's ``W_U`` is bf16). fp16 is tried with a power-of-two
    scale that brings the largest weight into ``[2**14, 2**15)``; it holds ``W`` when every weight converts
    exactly except weights below ``2**-31`` of the largest, which fp16's subnormals round by at most
    ``2**-39`` of the largest (checked, element by element). bf16 must hold ``W`` exactly. A float32
    model's unembedding is usually held by neither: its read-out stays ``"fp32"``.
    """
    native = native_half_matmul(weight.device.type)
    for name in formats:
        dtype = getattr(torch, name)
        exponent = 0
        if dtype == torch.float16:
            top = float(weight.detach().abs().amax().float()) if weight.numel() else 0.0
            if not 0 < top < float("inf"):
                continue
            exponent = 14 - int(torch.tensor(top).log2().floor())
        if weight.dtype == dtype and exponent == 0:
            converted = weight.detach()
        else:
            scaled = weight.detach().float() * (2.0**exponent)
            converted = scaled.to(dtype)
            # exact, but for weights below 2**-17 at this scale (fp16 subnormals: rounded by <= 2**-25)
            error = float((converted.float() - scaled).abs().amax()) if scaled.numel() else 0.0
            del scaled
            if error > (2.0**-24 if dtype == torch.float16 else 0.0):
                continue
        return SplitUnembedding(
            weight=(converted if native else converted.float()).contiguous(),
            dtype=dtype,
            w_exponent=exponent,
            pieces=3 if dtype == torch.bfloat16 else 2,
            bias=None if bias is None else bias.detach().float(),
            native=native,
        )
    return None
