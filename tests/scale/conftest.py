"""Fixtures for the scaling tests: folders of small unit files of mixed lengths."""

from __future__ import annotations

from pathlib import Path

from slm_transformerlens.builders import write_unit_files

__all__ = ["speech_utterances", "write_unit_files"]


def speech_utterances(model, paths: list[Path]) -> list:
    """The unit files as all-speech utterances (as ``slm-lens analyze`` reads them)."""
    from slm_transformerlens.speech.dataset import load_speech_dataset

    return load_speech_dataset(paths, model.speech_vocab, progress=False)
