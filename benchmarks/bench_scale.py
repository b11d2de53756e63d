"""Benchmark: batched vs one-at-a-time analysis, analysis vs a plain batched forward, one process vs two.

A tiny random SpiritLM checkpoint (CPU, fp32; ``--model smollm2`` for real SmolLM2-135M + 500 units, SIMS
layout) and ``--n`` short all-speech utterances (1-6 words of 1-4 units each, seeded).

    python benchmarks/bench_scale.py [--n 64] [--batch-tokens 4096] [--model tiny|smollm2] [--processes]

Prints:

- ``batched / one-at-a-time``: speed-up of ``transcription_table(..., batch_tokens=...)`` over one
  utterance per forward (goal >= 3 on CPU);
- ``analysis / forward``: the batched analysis time over a plain batched forward pass of the same padded
  batches (the read-out's overhead);
- with ``--processes``: ``slm-lens analyze`` with one process vs ``torchrun --nproc-per-node 2`` (gloo), wall
  times including start-up and model loading, and their ratio.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def build(directory: Path, model: str) -> tuple[Path, dict]:
    """The checkpoint and the ``load`` keyword arguments it needs."""
    from slm_transformerlens import builders

    if model == "smollm2":
        checkpoint = builders.make_smollm2_checkpoint(directory, layout="sims")
        return checkpoint.path, dict(checkpoint.load_kwargs)
    return builders.make_spiritlm_checkpoint(directory, n_layers=3, expressive=False, weights="bin"), {}


def timed(fn, repeats: int) -> float:
    """The best of ``repeats`` wall times of ``fn()``."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def in_process(
    checkpoint: Path, load_kwargs: dict, paths: list[Path], batch_tokens: int, repeats: int
) -> None:
    import torch

    import slm_transformerlens as slt
    from slm_transformerlens.lens import length_batches, pad_batches, transcription_table
    from slm_transformerlens.speech.dataset import load_speech_dataset

    model = slt.load(checkpoint, progress=False, **load_kwargs)
    encoded = [model.encode(u) for u in load_speech_dataset(paths, model.speech_vocab, progress=False)]
    groups = length_batches([b.lengths[0] for b in encoded], batch_tokens)
    padded = [pad_batches([encoded[i] for i in g])[0] for g in groups]

    def forward() -> None:
        with torch.no_grad():
            for batch in padded:
                model(batch.tokens, attention_mask=batch.attention_mask, return_type="logits")

    transcription_table(model, encoded[:4], progress=False, batch_tokens=batch_tokens)  # warm up
    one = timed(lambda: transcription_table(model, encoded, progress=False), repeats)
    batched = timed(
        lambda: transcription_table(model, encoded, progress=False, batch_tokens=batch_tokens), repeats
    )
    plain = timed(forward, repeats)
    print(
        f"{len(encoded)} utterances, {len(groups)} batches (batch_tokens {batch_tokens}), torch threads {torch.get_num_threads()}"
    )
    print(f"one at a time      {one:8.3f} s")
    print(f"batched analysis   {batched:8.3f} s   batched / one-at-a-time speed-up: {one / batched:.2f}x")
    print(f"plain fwd (padded) {plain:8.3f} s   analysis / forward: {batched / plain:.2f}")


def processes(checkpoint: Path, load_kwargs: dict, paths: list[Path], out: Path, batch_tokens: int) -> None:
    common = [
        str(checkpoint),
        *map(str, paths),
        "--no-charts",
        "--quiet",
        "--batch-tokens",
        str(batch_tokens),
    ]
    common += [f"--{key.replace('_', '-')}={value}" for key, value in load_kwargs.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    times = {}
    for label, launcher in (
        ("1 process", [sys.executable, "-m", "slm_transformerlens.cli"]),
        (
            "2 processes",
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc-per-node",
                "2",
                "-m",
                "slm_transformerlens.cli",
            ],
        ),
    ):
        start = time.perf_counter()
        subprocess.run(
            [*launcher, "analyze", *common, "--out", str(out / label.replace(" ", "-"))], check=True, env=env
        )
        times[label] = time.perf_counter() - start
        print(
            f"{label:12} {times[label]:8.2f} s (wall, with start-up and loading; 1 torch thread per process)"
        )
    print(f"1 process / 2 processes: {times['1 process'] / times['2 processes']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--batch-tokens", type=int, default=4096)
    parser.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--processes", action="store_true", help="also time 1 vs 2 processes (torchrun, gloo)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        checkpoint, load_kwargs = build(root / "checkpoint", args.model)
        from slm_transformerlens.builders import write_unit_files

        paths = write_unit_files(root / "data", args.n)
        in_process(checkpoint, load_kwargs, paths, args.batch_tokens, args.repeats)
        if args.processes:
            processes(checkpoint, load_kwargs, paths, root / "out", args.batch_tokens)


if __name__ == "__main__":
    main()
