"""Builders that production code may use: checkpoints and configs made here, never downloaded.

- :mod:`~slm_transformerlens.builders.smollm2`: the REAL SmolLM2-135M extended with speech units, in the SIMS
  or SpiritLM layout (the embedded default of the demo, examples and benchmarks).
- :mod:`~slm_transformerlens.builders.checkpoints`: tiny random checkpoints in the real on-disk layouts.
- :mod:`~slm_transformerlens.builders.hubert`: a tiny random HuBERT config on mHuBERT-25Hz's frame grid.
- :mod:`~slm_transformerlens.builders.planted`: hook-based planted hearers and guessers (known answers for
  the hearing-vs-guessing controls).

:mod:`slm_transformerlens.testing` re-exports all of them for the test suite.
"""

from slm_transformerlens.builders.checkpoints import (
    SAMPLE_TEXT,
    base_tokenizer_dir,
    make_sims_checkpoint,
    make_spiritlm_checkpoint,
    make_spiritlm_tokenizer,
    make_text_tokenizer,
    reference_hf_model,
    save_safetensors,
    sims_unit_tokens,
    tiny_base_config,
)
from slm_transformerlens.builders.hubert import tiny_hubert_config
from slm_transformerlens.builders.planted import (
    Plant,
    PlantError,
    guesser_lookup,
    hearer_lookup,
    plant_guesser,
    plant_hearer,
)
from slm_transformerlens.builders.smollm2 import (
    SMOLLM2_GGUF,
    RealCheckpoint,
    load_smollm2,
    make_smollm2_checkpoint,
    smollm2_directory,
)
from slm_transformerlens.builders.unit_files import write_unit_files

__all__ = [
    "SAMPLE_TEXT",
    "SMOLLM2_GGUF",
    "Plant",
    "PlantError",
    "RealCheckpoint",
    "base_tokenizer_dir",
    "guesser_lookup",
    "hearer_lookup",
    "load_smollm2",
    "make_sims_checkpoint",
    "make_smollm2_checkpoint",
    "make_spiritlm_checkpoint",
    "make_spiritlm_tokenizer",
    "make_text_tokenizer",
    "plant_guesser",
    "plant_hearer",
    "reference_hf_model",
    "save_safetensors",
    "sims_unit_tokens",
    "smollm2_directory",
    "tiny_base_config",
    "tiny_hubert_config",
    "write_unit_files",
]
