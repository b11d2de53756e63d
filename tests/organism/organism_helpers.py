"""Shared checks of the organism tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch


def assert_hf_parity(model: Any, checkpoint: Path, tokens: torch.Tensor) -> None:
    """Log-probs of ``model`` (``slt.load``) equal those of a plain HF Llama built from the same files."""
    from safetensors.torch import load_file
    from transformers import LlamaConfig, LlamaForCausalLM

    config = json.loads((checkpoint / "config.json").read_text())
    hf = LlamaForCausalLM(
        LlamaConfig(**{k: v for k, v in config["base_config"].items() if k != "model_type"})
    )
    state = {k.removeprefix("lm."): v.float() for k, v in load_file(checkpoint / "model.safetensors").items()}
    hf.load_state_dict(state, strict=False)
    hf.tie_weights()
    with torch.no_grad():
        expected = torch.log_softmax(hf.eval()(tokens).logits.float(), -1)
        got = torch.log_softmax(model(tokens).float(), -1)
    assert torch.allclose(expected, got, atol=1e-4), float((expected - got).abs().max())
