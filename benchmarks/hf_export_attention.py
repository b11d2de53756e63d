"""How close an exported checkpoint's logits are to ours under each HF attention implementation.

    python benchmarks/hf_export_attention.py [--model main_kmeans] [--utterances 8]

Exports a shipped organism checkpoint with ``export_hf``, opens it with ``AutoModelForCausalLM`` under
``attn_implementation="eager"`` and ``"sdpa"``, and prints the largest absolute logit difference to
``slt.load``'s model over held-out utterances (CPU, float32). The README's "bit-identical" claim is the
eager row.
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from transformers import AutoModelForCausalLM

import slm_transformerlens as slt
from slm_transformerlens.interop import export_hf
from slm_transformerlens.organism.shipped import heldout_utterances, shipped_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="main_kmeans")
    parser.add_argument("--utterances", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    checkpoint = shipped_checkpoint(args.model)
    model = slt.load(checkpoint, tokenizer=checkpoint / "base_tokenizer", progress=False)
    encoded = model.encode([[speech] for speech in heldout_utterances(limit=args.utterances)])
    with torch.no_grad():
        ours = model(encoded.tokens, attention_mask=encoded.attention_mask)
    mask = encoded.attention_mask.bool()
    with tempfile.TemporaryDirectory() as tmp:
        out = export_hf(checkpoint, f"{tmp}/hf", tokenizer=checkpoint / "base_tokenizer", progress=False)
        for implementation in ("eager", "sdpa"):
            hf = AutoModelForCausalLM.from_pretrained(str(out), attn_implementation=implementation).eval()
            with torch.no_grad():
                theirs = hf(encoded.tokens, attention_mask=encoded.attention_mask).logits
            diff = (ours - theirs).abs()[mask]
            print(
                f"{args.model} {implementation:5s}: max |logit difference| = {diff.max().item():.3g} "
                f"over {int(mask.sum())} positions, {int((diff > 0).any(-1).sum())} positions differ at all"
            )


if __name__ == "__main__":
    main()
