"""Checkpoint families: readers for the on-disk layouts of speech LMs, and their registry.

Importing this package registers the built-in families ``generic``, ``spiritlm`` and ``sims``
(detection tries the most specific first).
"""

from pathlib import Path

from slm_transformerlens.checkpoints import generic as _generic  # noqa: F401  (registers)
from slm_transformerlens.checkpoints import sims as _sims  # noqa: F401  (registers)
from slm_transformerlens.checkpoints import spiritlm as _spiritlm  # noqa: F401  (registers)
from slm_transformerlens.checkpoints.base import (
    DEFAULT_CONVENTIONS,
    CheckpointFamily,
    CheckpointLayout,
    LoadedCheckpoint,
    LoadOptions,
    StringConventions,
    detect_family,
    get_family,
    list_families,
    read_weights,
    register_family,
)
from slm_transformerlens.checkpoints.build import directory_of
from slm_transformerlens.checkpoints.placement import DEVICE_MAP_STRATEGIES, DeviceMap, parse_device_map

__all__ = [
    "DEFAULT_CONVENTIONS",
    "DEVICE_MAP_STRATEGIES",
    "CheckpointFamily",
    "CheckpointLayout",
    "DeviceMap",
    "LoadOptions",
    "LoadedCheckpoint",
    "StringConventions",
    "conventions_of",
    "detect_family",
    "get_family",
    "list_families",
    "parse_device_map",
    "read_checkpoint",
    "read_layout",
    "read_weights",
    "register_family",
]


def _family_for(path: Path, family: str | None) -> CheckpointFamily:
    return get_family(family) if family is not None else detect_family(path)


def read_layout(
    directory: str | Path, options: LoadOptions, family: str | None = None
) -> tuple[CheckpointFamily, CheckpointLayout]:
    """Config, tokenizer and vocabulary of a checkpoint, without reading its weights."""
    path = directory_of(directory)
    reader = _family_for(path, family)
    return reader, reader.read_layout(path, options)


def read_checkpoint(
    directory: str | Path, options: LoadOptions, family: str | None = None
) -> LoadedCheckpoint:
    """Read a checkpoint directory with the named family, or the detected one."""
    path = directory_of(directory)
    return read_weights(_family_for(path, family), path, options)


def conventions_of(family: str) -> StringConventions:
    """The string conventions of a family by name (:data:`DEFAULT_CONVENTIONS` for an unregistered one)."""
    return get_family(family).conventions if family in list_families() else DEFAULT_CONVENTIONS
