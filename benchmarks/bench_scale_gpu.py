"""Benchmark on a GPU: a 7B-shaped bf16 speech LM with random weights - batched analysis vs a plain forward.

Builds (once, in ``--dir``) a SIMS-layout checkpoint with 500 units and random bf16 weights in the shape of
Llama-2-7B (``--config llama2-7b``, default: 32 layers, d_model 4096, MLP 11008, 32 heads; the vocabulary is
that of the offline Llama-3.2 base tokenizer the tests use, 128k + 502, so the unembedding is larger than
Llama-2's 32k) or Qwen2.5-7B (``--config qwen2.5-7b``: 28 layers, d_model 3584, MLP 18944, 28 / 4 heads,
the Qwen2.5 tokenizer + 502). Then, on ``--device`` (default ``cuda``), for ``--n`` utterances of
``--min-tokens``..``--max-tokens`` spoken tokens (3-8 units per word):

- ``analysis``: ``transcription_table(model, utterances, batch_tokens=...)`` (every layer, resid_post, the
  text and full views; fp32 lens read-outs of the bf16 model),
- ``forward``: a plain batched forward (logits) over the same padded batches,

and prints the card, both times, the ratio (goal <= 1.3) and the peak GPU memory of each.

    python benchmarks/bench_scale_gpu.py [--config llama2-7b|qwen2.5-7b] [--dir /scratch/ckpt7b] [--n 64]
    python benchmarks/bench_scale_gpu.py --tiny --device cpu     # a smoke test of the script itself

Needs: a CUDA GPU with >= 40 GB (weights 13.5-15 GB in bf16, plus activations of ``--batch-tokens``),
about 16 GB of free disk in ``--dir`` and about 32 GB of host memory while the checkpoint is written and
loaded, and the package's environment (torch with CUDA, transformers, transformer-lens 4.3).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

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


def build(directory: Path, shape: str, device: str, n_units: int = 500) -> tuple[Path, Path]:
    """A SIMS checkpoint of random bf16 weights (written tensor by tensor, never a full fp32 model)."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from slm_transformerlens.builders import base_tokenizer_dir, tiny_base_config

    base, overrides = SHAPES[shape]
    tokenizer_dir = base_tokenizer_dir(base)
    if (directory / "config.json").is_file():
        return directory, tokenizer_dir
    directory.mkdir(parents=True, exist_ok=True)
    vocab_size = len(AutoTokenizer.from_pretrained(str(tokenizer_dir))) + n_units + 2
    config = tiny_base_config(base, vocab_size, tie=False)
    for key, value in overrides.items():
        setattr(config, key, value)
    config.head_dim = config.hidden_size // config.num_attention_heads
    with torch.device("meta"):
        shapes = {k: (v.shape, k) for k, v in AutoModelForCausalLM.from_config(config).state_dict().items()}
    generator_device = device if device.startswith("cuda") else "cpu"
    torch.manual_seed(0)
    shard: dict[str, torch.Tensor] = {}
    weight_map: dict[str, str] = {}
    size, index, total = 0, 1, 0

    def flush() -> None:
        nonlocal shard, size, index
        name = f"model-{index:05d}.safetensors"
        save_file(shard, str(directory / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in shard})
        shard, size, index = {}, 0, index + 1

    for key, (shape_, _) in shapes.items():
        tensor = torch.randn(shape_, device=generator_device, dtype=torch.bfloat16)
        if key.endswith("norm.weight") or "layernorm" in key:
            tensor = 1.0 + 0.2 * tensor
        elif key.endswith("bias"):
            tensor = 0.02 * tensor
        else:
            tensor = tensor * (1.0 / shape_[-1] ** 0.5)
        shard[f"lm.{key}"] = tensor.cpu().contiguous()
        size += tensor.numel() * 2
        total += tensor.numel() * 2
        if size > 2 * 1024**3:
            flush()
    if shard:
        flush()
    (directory / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map})
    )
    base_config = config.to_dict()
    base_config["torch_dtype"] = "bfloat16"
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
    return directory, tokenizer_dir


def utterances(model, n: int, low: int, high: int, seed: int = 0) -> list:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=["llama2-7b", "qwen2.5-7b"], default="llama2-7b")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model: a smoke test of this script")
    parser.add_argument("--dir", type=Path, help="where the checkpoint is written once (default: a temp dir)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--min-tokens", type=int, default=200)
    parser.add_argument("--max-tokens", type=int, default=600)
    parser.add_argument("--batch-tokens", type=int, default=16384)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import tempfile

    import torch

    import slm_transformerlens as slt
    from slm_transformerlens.lens import length_batches, pad_batches, transcription_table

    shape = "tiny" if args.tiny else args.config
    directory = args.dir or Path(tempfile.mkdtemp(prefix=f"bench-{shape}-"))
    start = time.perf_counter()
    checkpoint, tokenizer = build(directory, shape, args.device)
    print(f"checkpoint {checkpoint} ({shape}) ready in {time.perf_counter() - start:.0f} s")
    start = time.perf_counter()
    model = slt.load(checkpoint, tokenizer=tokenizer, device=args.device, dtype="bfloat16", progress=False)
    print(
        f"loaded in {time.perf_counter() - start:.0f} s: {model.cfg.n_layers} layers, d_model {model.cfg.d_model}"
    )
    data = utterances(model, args.n, args.min_tokens, args.max_tokens)
    groups = length_batches([b.lengths[0] for b in data], args.batch_tokens)
    padded = [pad_batches([data[i] for i in g])[0] for g in groups]
    cuda = args.device.startswith("cuda")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def forward() -> None:
        with torch.no_grad():
            for batch in padded:
                model(batch.tokens.to(args.device), attention_mask=batch.attention_mask.to(args.device))

    def analysis() -> None:
        transcription_table(model, data, batch_tokens=args.batch_tokens, progress=False, token_strings=False)

    results = {}
    for name, fn in (("forward", forward), ("analysis", analysis)):
        fn()  # warm up
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
    card = torch.cuda.get_device_name() if cuda else "cpu"
    tokens = sum(b.lengths[0] for b in data)
    print(
        f"device {card}; {args.n} utterances, {tokens} tokens, {len(groups)} batches of <= {args.batch_tokens}"
    )
    for name, (seconds, peak) in results.items():
        print(f"{name:9} {seconds:8.3f} s  {tokens / seconds:9.0f} tokens/s  peak GPU memory {peak:6.2f} GiB")
    print(f"analysis / forward: {results['analysis'][0] / results['forward'][0]:.2f} (goal <= 1.3)")


if __name__ == "__main__":
    main()
