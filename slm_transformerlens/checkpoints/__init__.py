"""Checkpoint families: readers for the on-disk layouts of speech LMs, and their registry.

Importing this package registers the built-in families ``generic``, ``spiritlm`` and ``sims``
(detection tries the most specific first).
"""

from slm_transformerlens.checkpoints import generic as _generic  # noqa: F401  (registers)
from slm_transformerlens.checkpoints import sims as _sims  # noqa: F401  (registers)
from slm_transformerlens.checkpoints import spiritlm as _spiritlm  # noqa: F401  (registers)
from slm_transformerlens.checkpoints.base import (
    CheckpointFamily,
    LoadedCheckpoint,
    LoadOptions,
    detect_family,
    get_family,
    list_families,
    register_family,
)

__all__ = [
    "CheckpointFamily",
    "LoadOptions",
    "LoadedCheckpoint",
    "detect_family",
    "get_family",
    "list_families",
    "read_checkpoint",
    "register_family",
]


def read_checkpoint(directory, options: LoadOptions, family: str | None = None) -> LoadedCheckpoint:
    """Read a checkpoint directory with the named family, or the detected one."""
    from slm_transformerlens.checkpoints.build import directory_of

    path = directory_of(directory)
    reader = get_family(family) if family is not None else detect_family(path)
    return reader.read(path, options)
