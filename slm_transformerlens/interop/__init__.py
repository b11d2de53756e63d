"""Hand-overs to the interpretability tools researchers already use.

- :mod:`~slm_transformerlens.interop.hf_export`: :func:`load_hf` / :func:`export_hf`, speech LMs
  as plain Hugging Face models and directories (nnsight, nnterp, tuned-lens, any HF tool).
"""

from slm_transformerlens.interop.errors import InteropError
from slm_transformerlens.interop.hf_export import HFCheckpoint, export_hf, load_hf, plain_hf_model

__all__ = ["HFCheckpoint", "InteropError", "export_hf", "load_hf", "plain_hf_model"]
