"""The error raised when a hand-over to another interpretability tool cannot be done faithfully."""

from __future__ import annotations

from slm_transformerlens.errors import SLMError

__all__ = ["InteropError"]


class InteropError(SLMError, ValueError):
    """A model or input cannot be handed to another tool without a silently wrong result."""
