"""Fixtures of the organism tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from slm_transformerlens.organism.build import build_data
from slm_transformerlens.organism.recipe import Recipe


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An organism data directory of the ``toy`` recipe (espeak speech, units, streams), built once."""
    return build_data(tmp_path_factory.mktemp("organism-data") / "data", Recipe.preset("toy"), progress=False)
