"""Benchmark: the streamed transcription analysis vs a plain forward pass and vs the naive full-cache route.

Real SmolLM2-135M extended with 500 units (SIMS layout, CPU, fp32), utterances of ~200-600 tokens made
of spoken words (3-8 units each). Each route runs in its own subprocess so that its peak RSS is its own.

    python benchmarks/bench_lens.py [--lengths 200 600] [--repeats 2]

Prints the time ratios (goal: analysis / forward <= 1.5, naive / analysis >= 3) and peak memory, and
the floor of any exact read-out: a plain forward plus the bare fp32 matmul of (words x layers) residual
vectors with the unembedding (on CPU that matmul alone costs about as much as the forward pass).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def build(directory: Path) -> None:
    from slm_transformerlens.builders import make_smollm2_checkpoint

    make_smollm2_checkpoint(directory, layout="sims")


def utterance(model, n_tokens: int, seed: int):
    import pandas as pd
    import torch

    from slm_transformerlens.builders import SAMPLE_TEXT

    g = torch.Generator().manual_seed(seed)
    vocab = model.speech_vocab
    words = SAMPLE_TEXT.replace(".", "").split()
    ids, rows, pos, w = [vocab.markers["speech"]], [], 1, 0
    while pos < n_tokens:
        n = int(torch.randint(3, 9, (1,), generator=g))
        ids += vocab.unit_token_ids(torch.randint(0, vocab.n_units, (n,), generator=g)).tolist()
        rows.append((0, w, words[w % len(words)], "speech", pos, pos + n))
        pos, w = pos + n, w + 1
    spans = pd.DataFrame(rows, columns=["utterance", "word_index", "word", "modality", "start", "stop"])
    return torch.tensor([ids]), spans


def naive(model, tokens, spans):
    """run_with_cache + accumulated_resid(apply_ln=True) @ W_U over ALL positions, then ranks at word ends."""
    import torch

    from slm_transformerlens.lens import TargetConfig, WordTargetResolver

    vocab = model.speech_vocab
    resolver = WordTargetResolver(model.tokenizer, TargetConfig())
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
        stack = cache.accumulated_resid(apply_ln=True)  # [layers+1, batch, pos, d]
        logits = stack[1:] @ model.W_U + model.b_U  # [layers, batch, pos, vocab]
        last = torch.as_tensor(spans["stop"].to_numpy() - 1)
        target = torch.as_tensor([resolver(w).first_id for w in spans["word"]])
        at = logits[:, 0, last]  # [layers, words, vocab]
        t_logit = at.gather(-1, target.expand(at.shape[0], -1).unsqueeze(-1))
        full_rank = (at > t_logit).sum(-1)
        text = at.masked_fill(~vocab.group_mask("text"), float("-inf"))
        text_rank = (text > t_logit).sum(-1)
        probs = at.softmax(-1)
        masses = torch.stack([(probs * vocab.group_mask(g)).sum(-1) for g in vocab.group_names], -1)
    return full_rank, text_rank, masses


def run_route(route: str, checkpoint: Path, length: int, repeats: int) -> dict:
    import torch

    import slm_transformerlens as slt
    from slm_transformerlens.lens import transcription_table

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    model = slt.load(checkpoint, tokenizer=checkpoint / "base_tokenizer", family="sims", progress=False)
    tokens, spans = utterance(model, length, seed=length)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        if route == "forward":
            with torch.no_grad():
                model(tokens)
        elif route == "unembed":
            # the arithmetic floor of any exact full-vocabulary read-out: one fp32 unembedding per (word, layer)
            rows = torch.randn(len(spans) * model.cfg.n_layers, model.cfg.d_model)
            weight = model.W_U.detach()
            with torch.no_grad():
                for i in range(0, rows.shape[0], 128):
                    rows[i : i + 128] @ weight
        elif route == "analysis":
            transcription_table(
                model, [(tokens, spans)], views=("full", "text"), top_k=5, progress=False, token_strings=True
            )
        else:
            naive(model, tokens, spans)
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "route": route,
        "length": int(tokens.shape[1]),
        "words": len(spans),
        "seconds": min(times),
        "peak_rss_mb": peak / 1024,
        "extra_rss_mb": (peak - base_rss) / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lengths", type=int, nargs="+", default=[200, 600])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--route", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.route:
        print(json.dumps(run_route(args.route, args.checkpoint, args.lengths[0], args.repeats)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or Path(tmp) / "smollm2-sims"
        if args.checkpoint is None:
            print("building the SmolLM2-135M + units checkpoint ...", flush=True)
            build(checkpoint)
        for length in args.lengths:
            results = {}
            for route in ("forward", "unembed", "analysis", "naive"):
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--route",
                        route,
                        "--checkpoint",
                        str(checkpoint),
                        "--lengths",
                        str(length),
                        "--repeats",
                        str(args.repeats),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                results[route] = json.loads(out.stdout.strip().splitlines()[-1])
            f, a, n = results["forward"], results["analysis"], results["naive"]
            print(
                f"{a['length']} tokens, {a['words']} spoken words, 30 layers: forward {f['seconds']:.2f} s, "
                f"analysis {a['seconds']:.2f} s, naive {n['seconds']:.2f} s"
            )
            print(f"  analysis / forward = {a['seconds'] / f['seconds']:.2f}  (goal <= 1.5)")
            floor = (f["seconds"] + results["unembed"]["seconds"]) / f["seconds"]
            print(
                f"  floor: (forward + the bare fp32 unembedding of {a['words']} words x 30 layers) / forward "
                f"= {floor:.2f}; analysis / floor = {a['seconds'] / f['seconds'] / floor:.2f}"
            )
            print(f"  naive / analysis   = {n['seconds'] / a['seconds']:.2f}  (goal >= 3)")
            print(
                f"  peak RSS above the loaded model: forward {f['extra_rss_mb']:.0f} MB, analysis "
                f"{a['extra_rss_mb']:.0f} MB, naive {n['extra_rss_mb']:.0f} MB "
                f"(naive / analysis = {n['extra_rss_mb'] / max(a['extra_rss_mb'], 1):.1f})"
            )


if __name__ == "__main__":
    main()
