"""Word-aligned activation patching for speech LMs, on TransformerLens' standard hook points.

Pair a clean and a corrupted utterance whose words differ (spoken, written, or a spoken word replaced by
another of a different length), align their positions through the word-span tables
(:class:`PatchPair`), and sweep layers x aligned positions (x heads) in batched forwards
(:func:`activation_patch_sweep`) or screen the same sweep with attribution patching
(:func:`attribution_patch_sweep`). Results are tidy DataFrames;
:func:`slm_transformerlens.viz.patching.patching_heatmap` draws them.
"""

from slm_transformerlens._deprecation import deprecated_attributes
from slm_transformerlens.patching.alignment import (
    SPAN_MODES,
    Direction,
    PatchingError,
    PatchPair,
    Slot,
    SpanMode,
)
from slm_transformerlens.patching.attribution import attribution_patch_sweep
from slm_transformerlens.patching.components import COMPONENTS, Component
from slm_transformerlens.patching.metrics import (
    LensMetric,
    LogitDiff,
    PatchMetric,
    TokenLogProb,
    text_token_id,
)
from slm_transformerlens.patching.spec import SweepSpec
from slm_transformerlens.patching.sweep import PatchJob, SweepResult, activation_patch_sweep

__all__ = [
    "COMPONENTS",
    "SPAN_MODES",
    "Component",
    "Direction",
    "LensMetric",
    "LogitDiff",
    "PatchJob",
    "PatchMetric",
    "PatchPair",
    "PatchingError",
    "Slot",
    "SpanMode",
    "SweepResult",
    "SweepSpec",
    "TokenLogProb",
    "activation_patch_sweep",
    "attribution_patch_sweep",
    "text_token_id",
]

#: Deprecated here: charts live in :mod:`slm_transformerlens.viz`; the lens is :class:`~slm_transformerlens.lens.Lens`.
__getattr__ = deprecated_attributes(
    __name__,
    {
        "patching_heatmap": "slm_transformerlens.viz.patching:patching_heatmap",
        "FinalNormLens": "slm_transformerlens.lens:LogitLens",
        "LensLike": "slm_transformerlens.lens:Lens",
    },
)
