"""Writing a :class:`~slm_transformerlens.lens.TunedLens` in the tuned-lens package's format.

tuned-lens (AlignmentResearch, PyPI 0.2.0) saves ``layer_translators.state_dict()`` with
``torch.save`` as ``params.pt`` (keys ``{i}.weight`` / ``{i}.bias``, one translator per layer input
``hidden_states[i]``, none for the final stream) and its ``TunedLensConfig`` as ``config.json``
(``base_model_name_or_path``, ``d_model``, ``num_hidden_layers``, ``bias``, ``base_model_revision``,
``unembed_hash``, ``lens_type``; it warns about any other key). Our translators are the same
modules in the same order (``h + W h + b`` on ``hidden_states[i]``), so the file is written as is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from slm_transformerlens.errors import LensError

__all__ = [
    "TUNED_LENS_CONFIG_KEYS",
    "TUNED_LENS_CONFIG_NAME",
    "TUNED_LENS_PARAMS_NAME",
    "save_tuned_lens_format",
]

#: The file names tuned-lens reads and writes (``TunedLens.from_model_and_pretrained`` / ``save``).
TUNED_LENS_CONFIG_NAME = "config.json"
TUNED_LENS_PARAMS_NAME = "params.pt"

#: The fields of tuned-lens' ``TunedLensConfig``.
TUNED_LENS_CONFIG_KEYS = (
    "base_model_name_or_path",
    "d_model",
    "num_hidden_layers",
    "bias",
    "base_model_revision",
    "unembed_hash",
    "lens_type",
)


def save_tuned_lens_format(lens: Any, directory: Path) -> Path:
    """Write ``config.json`` + ``params.pt`` of ``lens`` into ``directory`` (tuned-lens' layout).

    Raises:
        LensError: the lens has ``resid_mid`` translators, which tuned-lens cannot hold.
    """
    if lens.mid_translators is not None:
        raise LensError(
            "the tuned-lens format holds one translator per layer input (resid_pre); this lens also has "
            "resid_mid translators: save it in the default format, or train one with include_mid=False"
        )
    state = {k: v.detach().float().cpu().contiguous() for k, v in lens.layer_translators.state_dict().items()}
    torch.save(state, directory / TUNED_LENS_PARAMS_NAME)
    config = lens.config.to_dict()
    (directory / TUNED_LENS_CONFIG_NAME).write_text(
        json.dumps({key: config[key] for key in TUNED_LENS_CONFIG_KEYS}, indent=2)
    )
    return directory
