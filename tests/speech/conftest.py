"""Fixtures of the speech tests (helpers live in speech_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from slm_transformerlens.testing import tiny_hubert_config


@pytest.fixture(scope="session")
def hubert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import HubertModel

    torch.manual_seed(0)
    model = HubertModel(tiny_hubert_config()).eval()
    directory = tmp_path_factory.mktemp("tiny_hubert")
    model.save_pretrained(str(directory))
    return directory
