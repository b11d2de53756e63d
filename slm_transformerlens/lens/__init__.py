"""Lens analyses for speech LMs: a modality-aware logit lens, a tuned lens, the paper's metrics.

The stable entry point for reading a residual vector is :meth:`Lens.logits`::

    lens = LogitLens(model)            # or TunedLens.load(path, model)
    logits = lens.logits(resid, layer) # resid [..., d_model] from blocks.{layer}.hook_resid_post; fp32 [..., d_vocab]
"""

from slm_transformerlens._deprecation import deprecated_attributes
from slm_transformerlens.lens.analysis import lens_table, read_plan, readout_frame
from slm_transformerlens.lens.base import (
    SITES,
    Lens,
    LensError,
    Site,
    hook_name,
    resolve_layers,
    stream_index,
)
from slm_transformerlens.lens.batching import length_batches, pad_batches
from slm_transformerlens.lens.controls import (
    DEFAULT_STOP_WORDS,
    POOLED_READOUTS,
    WordFilter,
    chance_controls,
    cluster_bootstrap,
    cluster_intervals,
    frequency_prior_hits,
    shuffled_control,
    shuffled_partners,
    shuffled_target_hits,
)
from slm_transformerlens.lens.heard import heard_headline, heard_peak, heard_rates
from slm_transformerlens.lens.logit_lens import LogitLens
from slm_transformerlens.lens.metrics import (
    peak_layers,
    summarize_transcription,
    transcription_table,
    wilson_interval,
)
from slm_transformerlens.lens.positions import (
    POOLED_MODES,
    POSITION_MODES,
    ReadoutPlan,
    capture_residuals,
    plan_readouts,
)
from slm_transformerlens.lens.protocol import POSITION_FORMULAS, LensProtocol
from slm_transformerlens.lens.readout import (
    VIEWS,
    TokenNamer,
    ViewReadout,
    read_many,
    read_vectors,
    target_tensor,
    vocab_views,
)
from slm_transformerlens.lens.swap import SwappedDataset, swap_audio, swapped_audio_table
from slm_transformerlens.lens.targets import TargetConfig, WordTargetResolver, WordTargets
from slm_transformerlens.lens.training import evaluate_lenses, frozen, train_tuned_lens
from slm_transformerlens.lens.tuned_lens import TunedLens, TunedLensConfig, unembedding_hash

__all__ = [
    "DEFAULT_STOP_WORDS",
    "POOLED_MODES",
    "POOLED_READOUTS",
    "POSITION_FORMULAS",
    "POSITION_MODES",
    "SITES",
    "VIEWS",
    "Lens",
    "LensError",
    "LensProtocol",
    "LogitLens",
    "ReadoutPlan",
    "Site",
    "SwappedDataset",
    "TargetConfig",
    "TokenNamer",
    "TunedLens",
    "TunedLensConfig",
    "ViewReadout",
    "WordFilter",
    "WordTargetResolver",
    "WordTargets",
    "capture_residuals",
    "chance_controls",
    "cluster_bootstrap",
    "cluster_intervals",
    "evaluate_lenses",
    "frequency_prior_hits",
    "frozen",
    "heard_headline",
    "heard_peak",
    "heard_rates",
    "hook_name",
    "length_batches",
    "lens_table",
    "pad_batches",
    "peak_layers",
    "plan_readouts",
    "read_many",
    "read_plan",
    "read_vectors",
    "readout_frame",
    "resolve_layers",
    "shuffled_control",
    "shuffled_partners",
    "shuffled_target_hits",
    "stream_index",
    "summarize_transcription",
    "swap_audio",
    "swapped_audio_table",
    "target_tensor",
    "train_tuned_lens",
    "transcription_table",
    "unembedding_hash",
    "vocab_views",
    "wilson_interval",
]

#: Deprecated: analyses take an :class:`~slm_transformerlens.spans.EncodedBatch` (``model.encode(x)``).
__getattr__ = deprecated_attributes(
    __name__,
    {
        "LensInputs": "slm_transformerlens.spans:EncodedBatch",
        "as_lens_inputs": "slm_transformerlens.spans:as_encoded_batch",
    },
)
