"""The :class:`Lens` interface: read a residual-stream vector as a next-token distribution.

A lens maps a residual vector ``h`` taken at ``(layer, site)`` to logits over the whole vocabulary::

    logits = unembed(final_norm(transform_hidden(h, layer, site)))

``LogitLens`` uses the identity for ``transform_hidden``; ``TunedLens`` adds a learned affine
translator. Every read-out is computed in float32 whatever the model's dtype, and the final norm
is the model's own module, applied to each vector afresh (statistics recomputed per vector,
never a cached scale).

Layer indexing follows TransformerLens: ``layer`` is a block index ``0..n_layers-1`` and ``site`` is
one of ``"resid_pre"``, ``"resid_mid"``, ``"resid_post"`` (hook ``blocks.{layer}.hook_{site}``).
``resid_pre`` of block ``l`` is Hugging Face's ``hidden_states[l]``; ``resid_post`` of block ``l``
is ``hidden_states[l + 1]`` (before the final norm for the last block).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from slm_transformerlens import hooks
from slm_transformerlens._deprecation import warn_deprecated
from slm_transformerlens.errors import LensError
from slm_transformerlens.lens.certified import (
    DEFAULT_BLOCK,
    DEFAULT_FORMAT,
    CertifiedLogits,
    CertifiedUnembedding,
    certified_unembedding,
)
from slm_transformerlens.lens.precision import (
    SplitUnembedding,
    check_readout_precision,
    default_readout_precision,
    split_unembedding,
)
from slm_transformerlens.protocols import SpeechLM

__all__ = [
    "SITES",
    "Lens",
    "LensError",
    "Site",
    "check_site",
    "check_sites",
    "hook_name",
    "resolve_layers",
    "stream_index",
]

Site = Literal["resid_pre", "resid_mid", "resid_post"]
#: The residual-stream sites a lens can read.
SITES: tuple[str, ...] = ("resid_pre", "resid_mid", "resid_post")


def check_site(site: str) -> str:
    """Validate a site name and return it."""
    if site not in SITES:
        raise LensError(f"unknown residual site {site!r}; choose one of {list(SITES)}")
    return site


def check_sites(sites: Sequence[str]) -> list[str]:
    """Validate a non-empty selection of sites and return it as a list."""
    if isinstance(sites, str):
        sites = [sites]
    if len(sites) == 0:
        raise LensError(f"sites is empty: pass at least one of {list(SITES)}")
    return [check_site(site) for site in sites]


def hook_name(layer: int, site: str) -> str:
    """Deprecated: :func:`slm_transformerlens.hooks.hook_name` ``(site, layer)``, TransformerLens' order."""
    warn_deprecated("lens.hook_name(layer, site)", "slm_transformerlens.hooks.hook_name(site, layer)")
    return hooks.hook_name(check_site(site), layer)


def stream_index(layer: int, site: str) -> int:
    """Position in the sequence of residual streams ``hidden_states[0..n_layers]``.

    ``resid_pre`` of block ``l`` is stream ``l``; ``resid_post`` of block ``l`` is stream ``l + 1``.
    ``resid_mid`` has no stream index (it lies inside a block) and raises.
    """
    if site == "resid_pre":
        return int(layer)
    if site == "resid_post":
        return int(layer) + 1
    raise LensError("resid_mid lies inside a block and has no hidden_states index")


def resolve_layers(layers: int | Sequence[int] | None, n_layers: int) -> list[int]:
    """Normalise a layer selection (``None`` = all, negatives count from the end)."""
    if layers is None:
        return list(range(n_layers))
    if isinstance(layers, int):
        layers = [layers]
    if len(layers) == 0:
        raise LensError(
            f"layers is empty: pass block indices 0..{n_layers - 1} (negatives count from the end) or None for all"
        )
    out = []
    for layer in layers:
        index = int(layer) + n_layers if int(layer) < 0 else int(layer)
        if not 0 <= index < n_layers:
            raise LensError(
                f"layer {layer} is out of range: the model has {n_layers} layers (0..{n_layers - 1})"
            )
        out.append(index)
    return out


class Lens(nn.Module, abc.ABC):
    """Abstract lens over a TransformerLens bridge (``HookedSLM`` or any ``TransformerBridge``).

    Subclasses implement :meth:`transform_hidden`. The model is referenced, not registered as a
    submodule, so ``state_dict()`` holds only the lens' own parameters.

    The stable entry point is :meth:`logits`::

        lens.logits(resid, layer)                 # resid [..., d_model] from blocks.{layer}.hook_resid_post
        lens.logits(resid, layer, "resid_pre")    # from blocks.{layer}.hook_resid_pre

    ``readout_precision`` is how the analyses (:func:`~slm_transformerlens.lens.lens_table`,
    :func:`~slm_transformerlens.lens.transcription_table`) unembed: ``"fp32"`` (one float32 product),
    ``"fast"`` (the same float32 logits from exact split fp16/bf16 tensor-core products, for a bf16 or
    fp16 model; :mod:`~slm_transformerlens.lens.precision` says what is exact), ``"certified"`` (bf16
    products whose undecided tokens are recomputed: exact ranks and top-k, see
    :mod:`~slm_transformerlens.lens.certified`) or ``None`` (default: ``"fp32"``; the others are opt-in;
    see :meth:`resolved_readout_precision`).
    :meth:`logits` is always one float32 product.
    """

    def __init__(self, model: SpeechLM, *, readout_precision: str | None = None) -> None:
        super().__init__()
        object.__setattr__(self, "_model", model)
        self._readout_precision = check_readout_precision(readout_precision)
        self._split_cache: tuple[Any, SplitUnembedding | None] | None = None
        self._certified_cache: tuple[Any, CertifiedUnembedding] | None = None
        ln_final = getattr(model, "ln_final", None)
        if not isinstance(ln_final, nn.Module):
            raise LensError(
                f"{type(model).__name__} exposes no `ln_final` module, so the final norm cannot be applied "
                "exactly; a lens needs a TransformerBridge (e.g. slt.load(...)) with a final norm"
            )
        self._w_cache: tuple[Any, Tensor] | None = None
        self._b_cache: tuple[Any, Tensor | None] | None = None

    # ------------------------------------------------------------------ model facts
    @property
    def model(self) -> Any:
        """The bridge this lens reads (not a registered submodule)."""
        return self._model

    @property
    def readout_precision(self) -> str | None:
        """``"fp32"``, ``"fast"``, ``"certified"`` or ``None`` (:meth:`resolved_readout_precision`); settable."""
        return self._readout_precision

    @readout_precision.setter
    def readout_precision(self, value: str | None) -> None:
        self._readout_precision = check_readout_precision(value)

    def resolved_readout_precision(self, precision: str | None = None) -> str:
        """The precision a read-out uses: ``precision`` if given, else :attr:`readout_precision`, else the
        device's default (:func:`~slm_transformerlens.lens.precision.default_readout_precision`:
        ``"fp32"``; ``"fast"`` is opt-in).

        ``"fast"`` resolves to ``"fp32"`` when this model cannot use it: no 16-bit format holds its
        unembedding (a float32 model's, usually). Asked for explicitly on the CPU, ``"fast"`` is emulated
        in float32: the same numbers as on a GPU, slower than ``"fp32"``. ``"certified"`` resolves to
        ``"fp32"`` when the model transforms its logits after the unembedding (a soft cap, a scale): its
        bound covers the product only.

        Raises:
            LensError: an unknown precision.
        """
        chosen = (
            check_readout_precision(precision)
            or self._readout_precision
            or default_readout_precision(self.device)
        )
        if chosen == "fast" and self.split_unembedding() is None:
            return "fp32"
        if chosen == "certified" and not self._identity_output():
            return "fp32"
        return chosen

    @property
    def n_layers(self) -> int:
        """Number of transformer blocks of the model."""
        return int(self._model.cfg.n_layers)

    @property
    def d_model(self) -> int:
        """Residual-stream width."""
        return int(self._model.cfg.d_model)

    @property
    def d_vocab(self) -> int:
        """Rows of the unembedding (the extended vocabulary)."""
        return int(self._model.W_U.shape[1])

    # ------------------------------------------------------------------ pieces
    @abc.abstractmethod
    def transform_hidden(
        self, h: Float[Tensor, "... d_model"], layer: int, site: str = "resid_post"
    ) -> Float[Tensor, "... d_model"]:
        """Map a residual vector at ``(layer, site)`` to the final residual space (float32)."""

    @property
    def device(self) -> torch.device:
        """Where read-outs are computed: the unembedding's device (on a split model, not ``cfg.device``)."""
        return self._model.W_U.device

    def final_norm(self, h: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        """The model's own final norm module applied to float32 vectors, statistics per vector (computed
        on the norm's device, returned on :attr:`device`)."""
        x = h.float()
        lead = x.shape[:-1]
        flat = x.reshape(1, -1, x.shape[-1])  # norm components expect [batch, pos, d_model]
        weight = next(self._model.ln_final.parameters(), None)
        out = self._model.ln_final(flat if weight is None else flat.to(weight.device))
        return out.float().reshape(*lead, out.shape[-1]).to(self.device)

    def unembedding(self) -> tuple[Float[Tensor, "d_vocab d_model"], Float[Tensor, " d_vocab"] | None]:
        """``(W, b)`` in float32 with ``W`` as ``[d_vocab, d_model]``; ``b`` is ``None`` when all-zero."""
        w_tl = self._model.W_U  # [d_model, d_vocab], a view of the HF weight
        key = (w_tl.data_ptr(), w_tl._version, w_tl.dtype, tuple(w_tl.shape))
        if self._w_cache is None or self._w_cache[0] != key:
            weight = w_tl.detach().T
            self._w_cache = (key, weight if weight.dtype == torch.float32 else weight.float())
        return self._w_cache[1], self._unembedding_bias()

    def _unembedding_bias(self) -> Tensor | None:
        b = getattr(self._model, "b_U", None)
        bkey = None if b is None else (b.data_ptr(), b._version)
        if self._b_cache is None or self._b_cache[0] != bkey:
            bias = None if b is None or not bool(b.detach().any()) else b.detach().float()
            self._b_cache = (bkey, bias)
        return self._b_cache[1]

    def split_unembedding(self) -> SplitUnembedding | None:
        """The unembedding held exactly in fp16 or bf16 for ``"fast"`` read-outs (cached), or ``None``.

        ``None`` when neither format holds it exactly (a float32 model's unembedding usually).
        """
        w_tl = self._model.W_U
        b = getattr(self._model, "b_U", None)
        key = (w_tl.data_ptr(), w_tl._version, w_tl.dtype, tuple(w_tl.shape), w_tl.device)
        key = (*key, None if b is None else (b.data_ptr(), b._version))
        if self._split_cache is None or self._split_cache[0] != key:
            self._split_cache = None  # free the previous copy first
            self._split_cache = (key, split_unembedding(w_tl.detach().T, self._unembedding_bias()))
        return self._split_cache[1]

    def certified_unembedding(
        self, fmt: str = DEFAULT_FORMAT, block: int = DEFAULT_BLOCK
    ) -> CertifiedUnembedding:
        """The unembedding rounded to ``fmt`` with its bound factors, for ``"certified"`` read-outs (cached;
        the read-outs use the defaults, see :mod:`~slm_transformerlens.lens.certified`).

        Its ``stats`` count what the certified read-outs recomputed (:class:`~.certified.CertifiedStats`).
        """
        w_tl = self._model.W_U
        b = getattr(self._model, "b_U", None)
        key = (w_tl.data_ptr(), w_tl._version, w_tl.dtype, tuple(w_tl.shape), w_tl.device, fmt, block)
        key = (*key, None if b is None else (b.data_ptr(), b._version))
        if self._certified_cache is None or self._certified_cache[0] != key:
            self._certified_cache = None  # free the previous copy first
            bias = self._unembedding_bias()
            self._certified_cache = (key, certified_unembedding(w_tl.detach().T, bias, fmt=fmt, block=block))
        return self._certified_cache[1]

    def certified_logits(self, x: Float[Tensor, "rows d_model"]) -> CertifiedLogits:
        """Approximate logits of normalised vectors with what bounds them (:meth:`CertifiedLogits.certify`
        turns them into logits with exact ranks and top-k)."""
        return self.certified_unembedding()(x.reshape(-1, x.shape[-1]).to(self.device))

    def _identity_output(self) -> bool:
        """Whether the adapter's logit transform leaves logits unchanged (checked on probe values)."""
        transform = self._output_transform()
        if not callable(transform):
            return True
        probe = torch.tensor([-3.0e4, -2.5, 0.0, 1.0 / 3.0, 7.0, 5.0e4], device=self.device)
        return bool(torch.equal(transform(probe.clone()).float(), probe))

    def unembed(
        self, x: Float[Tensor, "... d_model"], *, precision: str = "fp32"
    ) -> Float[Tensor, "... d_vocab"]:
        """Normalised vectors -> float32 logits (with the adapter's output transform, e.g. softcap).

        ``precision="fp32"``: one float32 product (it follows torch's float32 matmul setting; see
        :func:`~slm_transformerlens.lens.precision.reduced_float32_matmul`); ``"fast"``: the same logits
        from exact split half-precision products where :meth:`split_unembedding` allows it (else float32),
        see :mod:`~slm_transformerlens.lens.precision`.
        """
        lead = x.shape[:-1]
        if check_readout_precision(precision) == "certified":
            raise LensError(
                "unembed() returns logits; a certified read-out is a reduction (exact ranks and top-k): use "
                "read_vectors(..., readout_precision='certified') or lens.certified_logits(x).certify(...)"
            )
        split = self.split_unembedding() if check_readout_precision(precision) == "fast" else None
        if split is not None:
            logits = split(x.reshape(-1, x.shape[-1]).to(self.device)).reshape(*lead, -1)
        else:
            weight, bias = self.unembedding()
            logits = F.linear(x.float().to(weight.device), weight, bias)
        transform = self._output_transform()
        return transform(logits).float() if callable(transform) else logits

    def _output_transform(self) -> Any:
        return getattr(getattr(self._model, "adapter", None), "apply_output_logits_transform", None)

    def normalized(self, h: Float[Tensor, "... d_model"], layer: int, site: str = "resid_post") -> Tensor:
        """``final_norm(transform_hidden(h))`` in float32 on :attr:`device` (what :meth:`unembed` consumes)."""
        self._check(h, layer, site)
        return self.final_norm(self.transform_hidden(h.float().to(self.device), layer, site))

    def logits(
        self, h: Float[Tensor, "... d_model"], layer: int, site: str = "resid_post"
    ) -> Float[Tensor, "... d_vocab"]:
        """Float32 logits over the whole vocabulary for residual vectors read at ``(layer, site)``.

        Args:
            h: residual vectors of any leading shape, last dim ``d_model`` (any dtype).
            layer: the block index ``0..n_layers-1`` whose hook they were read at.
            site: ``"resid_post"`` (default), ``"resid_pre"`` or ``"resid_mid"``.
        """
        return self.unembed(self.normalized(h, layer, site))

    def forward(self, h: Float[Tensor, "... d_model"], layer: int, site: str = "resid_post") -> Tensor:
        """Same as :meth:`logits` (so a lens is callable like tuned-lens' ``lens(h, idx)``)."""
        return self.logits(h, layer, site)

    def _check(self, h: Tensor, layer: int, site: str) -> None:
        check_site(site)
        if not 0 <= int(layer) < self.n_layers:
            raise LensError(f"layer {layer} is out of range: the model has {self.n_layers} layers")
        if h.shape[-1] != self.d_model:
            raise LensError(
                f"residual vectors must end in d_model={self.d_model}, got shape {tuple(h.shape)}"
            )
