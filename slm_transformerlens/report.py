"""Deprecated: this module moved to :mod:`slm_transformerlens.apps.report` (alias kept for one release)."""

from slm_transformerlens._deprecation import alias_module

alias_module(__name__, "slm_transformerlens.apps.report")
