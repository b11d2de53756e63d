"""Builders for the test suite: a thin re-export of :mod:`slm_transformerlens.builders`.

Production code (the demo, examples, benchmarks) imports :mod:`slm_transformerlens.builders` directly.
"""

from slm_transformerlens.builders import *  # noqa: F403
from slm_transformerlens.builders import __all__ as __all__
