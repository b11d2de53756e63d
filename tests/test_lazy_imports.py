"""``slm-lens inspect`` reads a checkpoint's layout without importing TransformerLens (issue 18).

Importing TransformerLens' adapter factory imports every adapter (3-5 s); describing a checkpoint only
needs the names of the architectures it supports, which are read from the factory's source.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from slm_transformerlens.checkpoints import build

ROOT = Path(__file__).resolve().parents[1]


def test_names_read_from_the_source_are_the_factorys() -> None:
    from transformer_lens.factories.architecture_adapter_factory import SUPPORTED_ARCHITECTURES

    assert build._built_in_adapter_names() == frozenset(SUPPORTED_ARCHITECTURES)
    assert "LlamaForCausalLM" in build._built_in_adapter_names()


def test_inspect_does_not_import_transformer_lens() -> None:
    organism = ROOT / "slm_transformerlens" / "data" / "organism" / "main_kmeans"
    code = (
        "import sys\n"
        "from slm_transformerlens.apps.summary import describe_checkpoint\n"
        f"d = describe_checkpoint({str(organism)!r}, tokenizer={str(organism / 'base_tokenizer')!r})\n"
        "print(d['architecture'], 'transformer_lens' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["LlamaForCausalLM", "False"], done.stdout


def test_a_registered_adapter_is_still_seen(monkeypatch) -> None:
    """Once the factory is imported (a user registered an adapter), it is asked, not the source."""
    from transformer_lens.factories.architecture_adapter_factory import ArchitectureAdapterFactory

    monkeypatch.setitem(ArchitectureAdapterFactory._adapters, "MySpeechLMForCausalLM", object)

    class Config:
        architectures = ("MySpeechLMForCausalLM",)
        model_type = "my_speech_lm"

    assert build.resolve_architecture(Config()) == "MySpeechLMForCausalLM"
