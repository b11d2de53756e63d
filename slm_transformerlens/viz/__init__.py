"""Output: every chart (lens heatmaps and rates, patching heatmaps) and self-contained HTML / PNG / SVG.

Needs the ``plot`` extra (altair + vl-convert-python). Modules: :mod:`~slm_transformerlens.viz.charts` (lens),
:mod:`~slm_transformerlens.viz.patching` (patching results), :mod:`~slm_transformerlens.viz.organism` (the
organisms' evaluation), :mod:`~slm_transformerlens.viz.html` (saving).
"""
