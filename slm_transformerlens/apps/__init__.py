"""Applications built on the core: the demo, the lens report, checkpoint summaries (``slm-lens`` subcommands).

The command-line entry point itself is :mod:`slm_transformerlens.cli` (it imports these lazily).
"""
