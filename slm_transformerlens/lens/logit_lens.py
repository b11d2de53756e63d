"""The logit lens: residual stream -> final norm -> unembedding, nothing learned."""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor

from slm_transformerlens.lens.base import Lens
from slm_transformerlens.protocols import SpeechLM

__all__ = ["LogitLens"]


class LogitLens(Lens):
    """Read residual vectors through the model's own final norm and unembedding.

    Example:
        >>> lens = LogitLens(model)  # doctest: +SKIP
        >>> logits = lens.logits(cache["blocks.5.hook_resid_post"], layer=5)  # doctest: +SKIP

    ``readout_precision`` (``"fp32"``, ``"fast"``, ``None``): see :class:`~slm_transformerlens.lens.Lens`.
    """

    def __init__(self, model: SpeechLM, *, readout_precision: str | None = None) -> None:
        super().__init__(model, readout_precision=readout_precision)

    def transform_hidden(
        self, h: Float[Tensor, "... d_model"], layer: int, site: str = "resid_post"
    ) -> Float[Tensor, "... d_model"]:
        """The identity (in float32)."""
        del layer, site
        return h.float()

    def extra_repr(self) -> str:
        return f"n_layers={self.n_layers}, d_model={self.d_model}, d_vocab={self.d_vocab}"
