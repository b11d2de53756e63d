"""Benchmark: the batched PatchscopeLens vs a hand-written patchscope (one patch per forward), CPU.

Model: the shipped organism (``load_organism``, 8 layers) or ``--checkpoint DIR``. The vectors are the
``resid_post`` residuals of every position of the first held-out utterances, read at every layer. Three
read-outs, all in this process, on this machine:

- the reference: ``model.run_with_hooks`` of the whole target prompt, one patch per forward;
- ``PatchscopeLens(prefix_cache="none")``: many patches per forward, the whole prompt each;
- ``PatchscopeLens()`` (default ``prefix_cache="kv"``): many patches per forward, the prefix's keys and
  values computed once, only the placeholder run per patch.

Prints the time of each, the ratios to the reference and the largest difference of the log-probabilities.
Not a timed test. Usage::

    HF_HUB_OFFLINE=1 python benchmarks/bench_patchscope.py [--utterances 4] [--threads 1] [--checkpoint DIR]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from slm_transformerlens.lens import PatchscopeLens


def reference(model, prompt, vectors: torch.Tensor, layer: int) -> torch.Tensor:
    """One ``run_with_hooks`` of the whole target prompt per vector (log-probs at the read position)."""
    tokens = torch.tensor([prompt.tokens])
    out = []
    for vector in vectors:

        def write(act, hook, vector=vector):
            act = act.clone()
            act[0, prompt.position] = vector
            return act

        logits = model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.hook_resid_post", write)])
        out.append(logits[0, prompt.read_position].float().log_softmax(-1))
    return torch.stack(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--utterances", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--checkpoint", default=None, help="a SIMS checkpoint dir (default: the organism)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import slm_transformerlens as slt
    from slm_transformerlens.organism.shipped import heldout_utterances, load_organism

    model = slt.load(args.checkpoint, progress=False) if args.checkpoint else load_organism(progress=False)
    batch = model.encode(heldout_utterances(limit=args.utterances))
    with torch.no_grad():
        _, cache = model.run_with_cache(batch.tokens, attention_mask=batch.attention_mask)
    keep = batch.attention_mask.bool()
    vectors = {layer: cache[f"blocks.{layer}.hook_resid_post"][keep] for layer in range(model.cfg.n_layers)}
    n = sum(len(v) for v in vectors.values())
    print(f"{n} patches ({len(vectors)} layers x {n // len(vectors)} positions), {args.threads} thread(s)")

    lenses = {
        "batched, whole prompt": PatchscopeLens(model, prefix_cache="none", progress=False),
        "batched, prefix kv cache": PatchscopeLens(model, progress=False),
    }
    prompt = lenses["batched, whole prompt"].prompt
    print(f"target prompt: {len(prompt.tokens)} tokens, placeholder at {prompt.position}")
    with torch.no_grad():
        start = time.perf_counter()
        expected = {layer: reference(model, prompt, v, layer) for layer, v in vectors.items()}
        base = time.perf_counter() - start
        print(f"one patch per forward (run_with_hooks): {base:8.2f} s")
        for name, lens in lenses.items():
            start = time.perf_counter()
            got = {layer: lens.logits(v, layer).log_softmax(-1) for layer, v in vectors.items()}
            took = time.perf_counter() - start
            diff = max((got[layer] - expected[layer]).abs().max().item() for layer in vectors)
            same = all(torch.equal(got[layer], expected[layer]) for layer in vectors)
            print(
                f"{name:>37}: {took:8.2f} s  speed-up {base / took:6.1f}x  "
                f"max |dlogp| {diff:.2e}  bit-identical {same}"
            )


if __name__ == "__main__":
    main()
