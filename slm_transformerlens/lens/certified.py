"""readout_precision="certified": a reduced-precision product whose ranks and top-k are made exact by a proof.

The read-out multiplies float32 normalised vectors ``x`` (``[rows, d]``) by the unembedding ``W``
(``[V, d]``). ``"certified"`` computes approximate logits ``A`` from inputs rounded to bf16 (or TF32,
or ``x`` split into two bf16 pieces) with float32 accumulation, bounds ``|A_v - E_v|`` for every token (``E = x . W_v + b_v``, the exact
logit), and recomputes in float64 every token the bound cannot settle.

The reference. A recomputed logit is ``R_v = fl32(x . W_v + b_v)``: the float64 dot product rounded
once to float32, so ``|R_v - E_v| <= 2**-24 |E_v|`` (plus float64 rounding, ``d * 2**-53`` relative).
The certified ranks and top-k are EXACTLY those of the logits ``R`` over the whole vocabulary: the
correctly rounded float32 logits (up to float64 rounding). The ``"fp32"`` product has its own
accumulation error (about 1e-5 at ``d = 4096``), so the two agree except where the fp32 product itself
misorders tokens whose exact logits lie within that error (then "certified" is the one that agrees with
float64; tests: tests/lens/test_certified_readout.py).

The bound (proof). ``x`` is split into ``p`` pieces of the format (``p = 1``; ``p = 2`` for
``"bfloat16x2"``): ``x^1 = round(x)``, ``x^2 = round(x - x^1)``, ``x^ = x^1 [+ x^2]``, remainder
``r = x - x^`` (every difference exact in float32); ``W^_v`` is ``W_v`` rounded, ``E^ = x^ . W^_v``. Then

    E - E^ = r . W_v + x^ . (W_v - W^_v)
    |E - E^| <= ||r|| ||W_v|| + ||x^|| ||W_v - W^_v||                          (Cauchy-Schwarz)

(``||W_v - W^_v|| = 0`` for a bf16 model's unembedding). Every product ``x^i_j W^_vj`` is exact in
float32 (at most 2 x 8 bits for bf16, 2 x 11 for TF32, float32 holds 24), so ``A`` only adds
float32 accumulation error. The first piece's product is computed in blocks of ``K = min(d, block)``
columns (``block``: :data:`~slm_transformerlens.lens.precision.K_BLOCK` unless chosen), the second
piece's in one product; the ``P`` partial results are added in IEEE float32. Assuming each
accumulation step inside a matmul errs by at most ``u_a = 2**-21`` relative (four times IEEE
round-to-nearest's ``2**-24``: a margin for tensor cores, which align products to the largest one and
truncate, Fasi et al. 2021 -- an assumption about the hardware, checked against float64 by
benchmarks/bench_scale_gpu.py, not a theorem), the standard summation bound gives

    |A - E^| <= g_1 sum_j |x^1_j W^_vj| + g_2 sum_j |x^2_j W^_vj| <= (g_1 ||x^1|| + g_2 ||x^2||) ||W^_v||
    g_1 = gamma_K(u_a) + gamma_{P-1}(2**-24) (1 + gamma_K(u_a)),  g_2 = the same with d for K,

with ``gamma_m(u) = m u / (1 - m u)``. With ``g = g_1 ||x^1|| + g_2 ||x^2||`` and
``||W^_v|| <= ||W_v|| + ||W_v - W^_v||``:

    |A_v - E_v| <= beta_v = (||r|| + g) ||W_v|| + (||x^|| + g) ||W_v - W^_v||,

two per-row coefficients times two per-token norms (precomputed once per vocabulary row). Every norm
is computed in float64 and the float32 evaluation of the bound is inflated by ``2**-20`` relative
(plus ``2**-20 |A_v|``, which also covers the float32 rounding of ``R``, of the bias addition and of
the comparisons), giving ``lo_v <= R_v <= hi_v`` for every token. Every recomputed logit is checked
against its ``[lo, hi]``: one outside (the hardware assumption failed) raises :class:`CertifiedError`.

Which tokens are recomputed (``R`` replaces ``A``), per row:

- every target id (their ``R`` are the rank thresholds ``t``);
- every token with ``lo_v <= t <= hi_v`` for some target threshold ``t``: for the others ``A_v > t``
  iff ``R_v > t`` (``lo_v > t`` puts both above, ``hi_v < t`` both below), so counting ``A`` or ``R``
  above ``t`` gives the same rank;
- per view, every token of the view with ``hi_v >= tau``, ``tau`` the k-th largest ``lo`` of the view:
  ``R``'s k-th largest is ``>= tau``, so a token with ``hi_v < tau`` has k tokens strictly above it
  and is in no top-k, and its ``A_v < tau`` stays below every top-k value of the patched logits.

The patched logits (``R`` where recomputed, ``A`` elsewhere) then have exactly ``R``'s target ranks
and top-k ids (the top-k values are ``R``'s; tokens with exactly equal ``R`` values are ordered as
``torch.topk`` orders them in the patched logits, where they hold those same values). A row with more
than :data:`FULL_ROW_TOKENS` undecided tokens is recomputed whole (``CertifiedStats.rows_full``). Span
max-pooling pools ``A`` and the per-row coefficients (max over the span's members) before the selection
and recomputes a pooled token from all its members.

How many tokens that is. The bound grows like ``u sqrt(d)`` relative to the spread of the logits (``u``
the input format's unit roundoff, or the accumulation's). A top-k alone costs about ``k`` tokens per
row (measured on random rows up to ``d = 256``). A target in the dense middle of the vocabulary costs
every token within the bound of it. Measured on the CPU with random Gaussian rows at ``d = 4096``
(8,000 tokens, 32 rows, a random target each), the fraction of the vocabulary recomputed: one bf16
piece 7.8%, TF32 2.6%, two bf16 pieces 1.9% (products of 1024 columns) and 0.6% (256 columns,
:data:`DEFAULT_FORMAT` / :data:`DEFAULT_BLOCK`): about 770 tokens per row at a 128k vocabulary. A
trained model's logits around a target may be denser. Not measured on a GPU.

Probabilities, masses and entropy are computed from the patched logits: the top-k and target logits
in them are ``R`` (exact), the others are ``A`` with ``|A_v - R_v| <= beta_v``. So ``Z`` is ``R``'s up
to a factor in ``[1 - q (1 - e^-delta), 1 + q (e^delta - 1)]`` (``q``: ``R``'s probability mass of the
tokens not recomputed, ``delta``: their largest ``beta_v``), ``log Z`` within ``q (e^delta - 1)``
(about ``q delta``), and every probability of a recomputed token within that factor. Masses and
entropy mix ``A`` and ``R`` the same way (no separate bound is derived for them). None of these is
exact to float32 rounding as the "fp32" and "fast" read-outs' are; the benchmark reports the measured
differences (within 2e-6 of fp32 in its CPU run with two bf16 pieces).

Costs: the reduced-precision products (``ceil(d / block)`` of the first piece, one of the second, each
added to a float32 accumulator), about six passes over each chunk's logits for the bound, the float64
rechecks (gathered unembedding rows, or whole rows), and one host synchronisation per chunk (the
number of tokens to recompute). Kept per model: the rounded unembedding (the model's own when it is
already bf16) and two float32 norms per token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from slm_transformerlens.errors import SLMError
from slm_transformerlens.lens.precision import K_BLOCK, native_half_matmul, reduced_float32_matmul

__all__ = [
    "ACCUMULATION_UNIT",
    "CERTIFIED_FORMATS",
    "DEFAULT_BLOCK",
    "DEFAULT_FORMAT",
    "FULL_ROW_TOKENS",
    "CertifiedError",
    "CertifiedLogits",
    "CertifiedStats",
    "CertifiedUnembedding",
    "accumulation_gamma",
    "certified_unembedding",
    "round_to_format",
]

#: Input formats of the approximate product.
CERTIFIED_FORMATS: tuple[str, ...] = ("bfloat16", "tf32", "bfloat16x2")
#: What ``Lens`` read-outs use: ``x`` as two bf16 pieces, the first in products of 256 columns. At
#: ``d = 4096`` this bound is ~17x tighter than one bf16 piece's (random Gaussian rows on the CPU: 0.6%
#: of the vocabulary recomputed around a mid-vocabulary target instead of 7.8%) for 17 products instead
#: of 4; which is faster on a GPU is not measured.
DEFAULT_FORMAT, DEFAULT_BLOCK = "bfloat16x2", 256
#: Assumed relative error of one accumulation step of the matmul (IEEE round-to-nearest is 2**-24).
ACCUMULATION_UNIT = 2.0**-21
#: A row with more undecided tokens than this is recomputed whole: on a GPU, gathering about 1,000 rows of
#: a 4096-wide unembedding for float64 dot products moves about as many bytes as a float64 product of the
#: row with a 128k vocabulary costs time (an estimate, not measured).
FULL_ROW_TOKENS = 1024
_SLACK = 2.0**-20  # relative slack for float32 evaluation of the bound (see the module docstring)
_TINY = 1e-30
_PAIR_BATCH = 1 << 12  # (row, token) pairs per float64 recheck batch
_VOCAB_BLOCK = 1 << 13  # vocabulary rows per float64 block of a whole-row recheck


class CertifiedError(SLMError, ValueError):
    """A certified read-out cannot be computed as asked, or a recomputed logit fell outside its bound."""


def round_to_format(x: Float[Tensor, "..."], fmt: str) -> Float[Tensor, "..."]:
    """``x`` rounded to nearest (ties to even) in ``fmt`` (``"bfloat16"`` or ``"tf32"``), held in float32."""
    x = x.float()
    if fmt in ("bfloat16", "bfloat16x2"):
        return x.to(torch.bfloat16).float()
    if fmt != "tf32":
        raise CertifiedError(f"unknown format {fmt!r}; use one of {CERTIFIED_FORMATS}")
    bits = x.contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    finite = torch.isfinite(x)
    bits = (bits + 0xFFF + ((bits >> 13) & 1)) & 0xFFFFE000  # drop 13 of 23 mantissa bits, ties to even
    bits = torch.where(bits >= 1 << 31, bits - (1 << 32), bits)
    return torch.where(finite, bits.to(torch.int32).view(torch.float32), x)


def accumulation_gamma(d_model: int, block: int = K_BLOCK, pieces: int = 1) -> tuple[float, float]:
    """``(g_1, g_2)`` of the module docstring: float32 accumulation error per unit of ``sum_j |x^i_j W^_vj|``
    for the first piece (in blocks of ``block`` columns) and the second (one product)."""

    def gamma(m: int, u: float) -> float:
        return m * u / (1 - m * u)

    k = max(1, min(d_model, block))
    partials = math.ceil(d_model / k) + (pieces - 1)
    g_sum = gamma(partials - 1, 2.0**-24)
    g_k, g_d = gamma(k, ACCUMULATION_UNIT), gamma(max(d_model, 1), ACCUMULATION_UNIT)
    return g_k + g_sum * (1 + g_k), g_d + g_sum * (1 + g_d)


@dataclass
class CertifiedStats:
    """How much the certified read-outs recomputed (accumulated until :meth:`reset`).

    Attributes:
        rows: rows read (after span pooling).
        tokens: logits read (rows x vocabulary).
        rechecked: logits recomputed in float64 (targets and whole rows included).
        rows_rechecked: rows that recomputed more than the unavoidable ``k`` per view plus their targets.
        rows_full: rows recomputed whole (more than :data:`FULL_ROW_TOKENS` undecided).
    """

    rows: int = 0
    tokens: int = 0
    rechecked: int = 0
    rows_rechecked: int = 0
    rows_full: int = 0

    def reset(self) -> None:
        """Zero every counter."""
        self.rows = self.tokens = self.rechecked = self.rows_rechecked = self.rows_full = 0


@dataclass(frozen=True)
class CertifiedUnembedding:
    """The unembedding rounded to a reduced format, its per-token bound factors and the float32 original.

    Attributes:
        weight: ``[V, d]`` unembedding of the recheck (``rounded`` itself when that holds it exactly).
        rounded: ``W^``: bf16 where products run natively, else float32 holding the rounded values.
        fmt: ``"bfloat16"``, ``"tf32"`` or ``"bfloat16x2"`` (two bf16 pieces of ``x``).
        bias: float32 bias or ``None``.
        w_norm: ``[V]`` ``||W_v||``; ``w_coef``: ``[V]`` ``||W_v - W^_v||`` (both rounded up).
        block: columns per product of the first piece; ``gammas``: ``(g_1, g_2)`` of the module docstring.
        native: bf16 products with float32 output run natively (CUDA); else float32 products of the
            rounded values (TF32 runs at TF32 speed only where torch's float32 matmul setting allows it).
        stats: the recheck counters.
    """

    weight: Tensor
    rounded: Tensor
    fmt: str
    bias: Tensor | None
    w_norm: Tensor
    w_coef: Tensor
    native: bool
    block: int = K_BLOCK
    gammas: tuple[float, float] = (0.0, 0.0)
    stats: CertifiedStats = field(default_factory=CertifiedStats, compare=False)

    def __call__(self, x: Float[Tensor, "rows d_model"]) -> CertifiedLogits:
        """Approximate logits of normalised vectors with their per-row bound coefficients."""
        x = x.float()
        first = round_to_format(x, self.fmt)
        second = round_to_format(x - first, self.fmt) if self.fmt == "bfloat16x2" else None
        xr = first if second is None else first + second  # exact: the pieces do not overlap
        g_1, g_2 = self.gammas
        g = g_1 * torch.linalg.vector_norm(first.double(), dim=-1)
        if second is not None:
            g = g + g_2 * torch.linalg.vector_norm(second.double(), dim=-1)
        a = _up(torch.linalg.vector_norm((x - xr).double(), dim=-1) + g)
        b = _up(torch.linalg.vector_norm(xr.double(), dim=-1) + g)
        reason = reduced_float32_matmul() if self.fmt == "tf32" else None
        if reason and ("bf16" in reason or "medium" in reason):
            raise CertifiedError(
                f"{reason}: float32 products may round their inputs to bf16, which the TF32 certified bound "
                "does not cover; use the bf16 format or torch.set_float32_matmul_precision('high')"
            )
        weight_t = self.rounded.T
        values: Tensor | None = None
        for start in range(0, x.shape[-1], self.block):
            values = self._accumulate(
                values, first[:, start : start + self.block], weight_t[start : start + self.block]
            )
        if second is not None:
            values = self._accumulate(values, second, weight_t)
        assert values is not None
        if self.bias is not None:
            values.add_(self.bias)
        return CertifiedLogits(values=values, x=x, coef=torch.stack([a, b], -1), source=self)

    def _accumulate(self, out: Tensor | None, a: Tensor, b: Tensor) -> Tensor:
        """``out + a @ b`` in float32 (``a``: format-exact values held in float32)."""
        if self.native:
            product = torch.mm(a.to(torch.bfloat16), b, out_dtype=torch.float32)  # type: ignore[call-arg]
        else:
            product = torch.mm(a, b)
        return product if out is None else out.add_(product)

    def exact(
        self, x: Float[Tensor, "m d_model"], rows: Int[Tensor, " p"], tokens: Int[Tensor, " p"]
    ) -> Float[Tensor, " p"]:
        """``fl32(x[rows_i] . W_{tokens_i} + b)`` per pair, computed in float64 (in batches of pairs)."""
        out = torch.empty(len(tokens), device=x.device, dtype=torch.float32)
        for s in range(0, len(tokens), _PAIR_BATCH):
            ids = tokens[s : s + _PAIR_BATCH]
            dot = torch.linalg.vecdot(x[rows[s : s + _PAIR_BATCH]].double(), self.weight[ids].double())
            out[s : s + _PAIR_BATCH] = dot if self.bias is None else dot + self.bias[ids].double()
        return out

    def exact_rows(self, x: Float[Tensor, "r d_model"]) -> Float[Tensor, "r vocab"]:
        """``fl32(x . W^T + b)`` for whole rows, computed in float64 by vocabulary blocks."""
        x64 = x.double()
        out = torch.empty(x.shape[0], self.weight.shape[0], device=x.device, dtype=torch.float32)
        for s in range(0, self.weight.shape[0], _VOCAB_BLOCK):
            bias = None if self.bias is None else self.bias[s : s + _VOCAB_BLOCK].double()
            out[:, s : s + _VOCAB_BLOCK] = F.linear(x64, self.weight[s : s + _VOCAB_BLOCK].double(), bias)
        return out


def _up(norm: Tensor) -> Tensor:
    """A float64 norm as float32, rounded up (the slack covers float32 rounding)."""
    return (norm * (1 + 2.0**-22)).float()


@dataclass(frozen=True)
class CertifiedLogits:
    """Approximate logits of a chunk, what bounds them, and how to recompute any of them exactly.

    Attributes:
        values: ``[n, V]`` approximate float32 logits (span-pooled rows after :meth:`max_pool`).
        x: ``[m, d]`` the normalised member vectors.
        coef: ``[n, 2]`` per row ``(||r|| + g, ||x^|| + g)`` (the max over a pooled row's members).
        source: the :class:`CertifiedUnembedding` that made them.
        local: ``[m]`` the row of each member after :meth:`max_pool` (``None``: rows are members).
    """

    values: Tensor
    x: Tensor
    coef: Tensor
    source: CertifiedUnembedding
    local: Tensor | None = None

    def max_pool(self, local: Int[Tensor, " m"], n: int) -> CertifiedLogits:
        """Per-token max over the members of each row (``local[i]``: the row of member ``i``)."""
        values = torch.empty(n, self.values.shape[1], device=self.values.device)
        values.scatter_reduce_(
            0, local.unsqueeze(-1).expand_as(self.values), self.values, "amax", include_self=False
        )
        coef = torch.zeros(n, 2, device=self.coef.device)
        coef.scatter_reduce_(
            0, local.unsqueeze(-1).expand_as(self.coef), self.coef, "amax", include_self=False
        )
        return replace(self, values=values, coef=coef, local=local)

    def bounds(self) -> tuple[Float[Tensor, "n vocab"], Float[Tensor, "n vocab"]]:
        """``(lo, hi)`` with ``lo_v <= R_v <= hi_v`` for every row and token (module docstring)."""
        a, b = self.coef[:, :1], self.coef[:, 1:]
        beta = a * self.source.w_norm + b * self.source.w_coef
        beta.mul_(1 + _SLACK).add_(self.values.abs(), alpha=_SLACK).add_(_TINY)
        return self.values - beta, beta.add_(self.values)

    def exact(self, rows: Int[Tensor, " p"], tokens: Int[Tensor, " p"]) -> Float[Tensor, " p"]:
        """The reference logits ``R`` of ``(row, token)`` pairs (pooled rows: max over members)."""
        if self.local is None:
            return self.source.exact(self.x, rows, tokens)
        members, pair = self._members(rows)
        out = torch.empty(len(rows), device=self.values.device)
        values = self.source.exact(self.x, members, tokens[pair])
        return out.scatter_reduce_(0, pair, values, "amax", include_self=False)

    def exact_rows(self, rows: Int[Tensor, " r"]) -> Float[Tensor, "r vocab"]:
        """The reference logits ``R`` of whole rows."""
        if self.local is None:
            return self.source.exact_rows(self.x[rows])
        members, pair = self._members(rows)
        values = self.source.exact_rows(self.x[members])
        out = torch.empty(len(rows), values.shape[1], device=values.device)
        return out.scatter_reduce_(
            0, pair.unsqueeze(-1).expand_as(values), values, "amax", include_self=False
        )

    def _members(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """Members of each listed row (``local`` is non-decreasing) and the listed row each belongs to."""
        assert self.local is not None
        n = self.values.shape[0]
        counts = torch.bincount(self.local, minlength=n)
        first = torch.cumsum(counts, 0) - counts
        pair = torch.repeat_interleave(torch.arange(len(rows), device=rows.device), counts[rows])
        offset = (
            torch.arange(len(pair), device=rows.device) - (torch.cumsum(counts[rows], 0) - counts[rows])[pair]
        )
        return first[rows][pair] + offset, pair

    def certify(
        self,
        *,
        k: int,
        masks: list[Tensor | None],
        targets: list[Int[Tensor, "n m"]],
    ) -> Float[Tensor, "n vocab"]:
        """The patched logits: ``R`` wherever the bound cannot settle a top-k or a target rank, else ``A``.

        Patches :attr:`values` in place (and returns them): call it once.

        Args:
            k: top-k size of every view.
            masks: the views (``None`` = whole vocabulary; ``k`` must not exceed a view's size).
            targets: ``[n, m]`` target ids per row (-1 pads).
        """
        n, vocab = self.values.shape
        lo, hi = self.bounds()
        ids = torch.cat(targets, 1) if targets else torch.zeros(n, 0, dtype=torch.long, device=lo.device)
        valid = ids >= 0
        t_rows, t_cols = torch.nonzero(valid, as_tuple=True)
        t_ids = ids[t_rows, t_cols]
        thresholds = torch.full(ids.shape, float("nan"), device=lo.device)
        thresholds[t_rows, t_cols] = self.exact(t_rows, t_ids)
        undecided = torch.zeros(n, vocab, dtype=torch.bool, device=lo.device)
        for j in range(ids.shape[1]):
            t = thresholds[:, j : j + 1]  # NaN (padding) compares false
            undecided |= (lo <= t) & (t <= hi)
        for mask in masks:
            view_lo = lo if mask is None else lo.masked_fill(~mask, float("-inf"))
            tau = torch.topk(view_lo, k, dim=-1).values[:, -1:]
            undecided |= hi >= tau if mask is None else (hi >= tau) & mask
        undecided[t_rows, t_ids] = True
        counts = undecided.sum(-1)
        full = counts > FULL_ROW_TOKENS
        rows, tokens = torch.nonzero(undecided & ~full.unsqueeze(-1), as_tuple=True)
        out = self.values  # patched in place: the approximate values are not needed afterwards
        exact = self.exact(rows, tokens)
        outside = int(((exact < lo[rows, tokens]) | (exact > hi[rows, tokens])).sum())
        out[rows, tokens] = exact
        full_rows = torch.nonzero(full).flatten()
        if len(full_rows):
            exact = self.exact_rows(full_rows)
            outside += int(((exact < lo[full_rows]) | (exact > hi[full_rows])).sum())
            out[full_rows] = exact
        if outside:  # a sample of the bound's promise, checked on every recomputed logit
            raise CertifiedError(
                f"{outside} recomputed logits fell outside their proven bound: this device's matmul "
                f"accumulates less accurately than the bound assumes (ACCUMULATION_UNIT = 2**-21 relative "
                f"per step). Use readout_precision='fp32' (or 'fast') here, and please report the device"
            )
        stats = self.source.stats
        stats.rows += n
        stats.tokens += n * vocab
        stats.rechecked += len(rows) + len(full_rows) * vocab
        stats.rows_rechecked += int((counts > k * len(masks) + valid.sum(-1)).sum())
        stats.rows_full += len(full_rows)
        return out


def certified_unembedding(
    weight: Float[Tensor, "d_vocab d_model"],
    bias: Float[Tensor, " d_vocab"] | None,
    *,
    fmt: str = "bfloat16",
    block: int = K_BLOCK,
) -> CertifiedUnembedding:
    """The certified read-out's unembedding: ``weight`` (any dtype) rounded to ``fmt``, with its bound factors.

    ``block``: columns per product of the first piece of ``x`` (smaller blocks: a tighter bound, more
    float32 partial results to add).
    """
    if fmt not in CERTIFIED_FORMATS:
        raise CertifiedError(f"unknown format {fmt!r}; use one of {CERTIFIED_FORMATS}")
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise CertifiedError(f"block={block!r}: pass the number of columns per product, an int >= 1")
    w = weight.detach().float()
    rounded = round_to_format(w, fmt)
    w_norm = torch.empty(w.shape[0], dtype=torch.float64, device=w.device)
    coef = torch.empty_like(w_norm)
    for s in range(0, w.shape[0], _VOCAB_BLOCK):  # float64 norms, a block of the vocabulary at a time
        w64, r64 = w[s : s + _VOCAB_BLOCK].double(), rounded[s : s + _VOCAB_BLOCK].double()
        w_norm[s : s + _VOCAB_BLOCK] = torch.linalg.vector_norm(w64, dim=-1)
        coef[s : s + _VOCAB_BLOCK] = torch.linalg.vector_norm(w64 - r64, dim=-1)
    exact = bool(torch.equal(rounded, w))  # W^ == W (a bf16 model's unembedding): keep one copy
    native = fmt != "tf32" and native_half_matmul(w.device.type)
    rounded = (rounded.to(torch.bfloat16) if native else rounded).contiguous()
    return CertifiedUnembedding(
        weight=rounded if exact else w.contiguous(),
        rounded=rounded,
        fmt=fmt,
        bias=None if bias is None else bias.detach().float(),
        w_norm=_up(w_norm),
        w_coef=_up(coef),
        native=native,
        block=block,
        gammas=accumulation_gamma(w.shape[1], block, 2 if fmt == "bfloat16x2" else 1),
    )
