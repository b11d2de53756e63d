"""Fixtures of the patching tests: a tiny SpiritLM checkpoint (real on-disk layout, ~1.1k vocab)."""

from __future__ import annotations

import pytest
from patching_helpers import PREFIX, SUFFIX, spoken

import slm_transformerlens as slt
from slm_transformerlens.patching import PatchPair
from slm_transformerlens.testing import make_spiritlm_checkpoint


@pytest.fixture(scope="session")
def model(tmp_path_factory: pytest.TempPathFactory):
    directory = make_spiritlm_checkpoint(tmp_path_factory.mktemp("spiritlm-patching"), n_layers=3, seed=1)
    return slt.load(directory, progress=False)


@pytest.fixture(scope="session")
def equal_pair(model) -> PatchPair:
    """A spoken word replaced by another spoken word with the same number of units."""
    clean = [PREFIX, spoken("girl", [3, 5, 7, 9]), SUFFIX]
    corrupted = [PREFIX, spoken("fox", [11, 12, 13, 14]), SUFFIX]
    return PatchPair.from_inputs(model, clean, corrupted, span_mode="resample")
