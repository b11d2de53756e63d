"""Deprecated aliases: old names and module paths that keep working for one release, with a warning."""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["alias_module", "deprecated_attributes", "warn_deprecated"]


def warn_deprecated(old: str, new: str, *, stacklevel: int = 3) -> None:
    """Emit the package's one deprecation message: ``old`` is deprecated, use ``new``."""
    warnings.warn(
        f"{old} is deprecated and will be removed in the next release; use {new}",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


def deprecated_attributes(module: str, moved: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` serving moved names: ``{old_name: "new.module:new_name"}``.

    Each access warns once per call site (``DeprecationWarning``) and returns the object from its new home.
    """

    def __getattr__(name: str) -> Any:
        if name not in moved:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        target_module, _, target_name = moved[name].partition(":")
        warn_deprecated(f"{module}.{name}", f"{target_module}.{target_name}")
        return getattr(importlib.import_module(target_module), target_name)

    return __getattr__


def alias_module(old: str, new: str) -> None:
    """Make the module ``old`` (being imported) the module ``new``, with a deprecation warning.

    Used by the one-line shims left at moved module paths: ``import old`` returns the very same module
    object as ``import new`` (so monkeypatching either affects both).
    """
    warn_deprecated(f"module {old}", f"module {new}", stacklevel=4)
    sys.modules[old] = importlib.import_module(new)
