"""Hand-overs to the interpretability tools researchers already use (README: "Using your usual tools").

- :mod:`~slm_transformerlens.interop.hf_export`: :func:`load_hf` / :func:`export_hf`, speech LMs as
  plain Hugging Face models and directories (nnsight, tuned-lens, ``boot_transformers``, any HF tool).
- :mod:`~slm_transformerlens.interop.cache_maths`: exact ``apply_ln_to_stack`` / ``logit_attrs`` on
  the raw bridge (``HookedSLM.run_with_cache`` returns a ``NormWeightedActivationCache``).
- :mod:`~slm_transformerlens.interop.generation`: speech-aware ``to_str_tokens``, ``to_string``,
  ``test_prompt`` and left-padded batched ``generate``.
- :mod:`~slm_transformerlens.interop.tl_patching`: TransformerLens' own patching refuses speech pairs
  whose words sit at different positions (points to ``PatchPair``).
- :mod:`~slm_transformerlens.interop.circuits_vis`: HTML-safe token labels and offline circuitsvis pages.
- :mod:`~slm_transformerlens.interop.tuned_lens_format`: ``TunedLens.save(format="tuned-lens")``.
- :mod:`~slm_transformerlens.interop.saelens`: SAELens on the transformer-lens 3.x route.

Only this package's light entry points are imported here; the client libraries are imported lazily.
"""

from slm_transformerlens.interop.errors import InteropError
from slm_transformerlens.interop.hf_export import HFCheckpoint, export_hf, load_hf, plain_hf_model

__all__ = ["HFCheckpoint", "InteropError", "export_hf", "load_hf", "plain_hf_model"]
