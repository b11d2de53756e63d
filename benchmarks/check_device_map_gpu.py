"""Check a model split over two devices (``slt.load(..., device_map=...)``) against one device.

Builds a small random SIMS checkpoint (4 layers, hidden 256, untied embeddings, a byte-level BPE base
tokenizer made here) in a temporary folder, loads it split between two devices, in both orders (the
input embedding and the first half of the blocks on one device, the second half, the final norm and the
unembedding on the other), and checks in float32:

- log-probs equal plain Hugging Face's (the same weights, on the first device) within 1e-4;
- the last-layer logit lens (``LogitLens`` on ``blocks.{L-1}.hook_resid_post`` and
  ``cache.accumulated_resid(apply_ln=True) @ W_U``) equals the output;
- a hook on a block of the second device edits the run as on one device;
- the speech forward (``Speech`` utterances, right-padded) and the batched ``transcription_table`` (a
  ``batch_tokens`` budget, every word of 16 utterances) equal the single-device ones.

Prints one PASS / FAIL line per check and exits 1 on any failure. Needs only torch, transformers,
accelerate, transformer_lens and this package; runs in well under a minute::

    python benchmarks/check_device_map_gpu.py                      # --devices cuda:0,cpu
    python benchmarks/check_device_map_gpu.py --devices cpu,cpu    # the same code path, no GPU
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import slm_transformerlens as slt  # noqa: E402
from slm_transformerlens.builders import (  # noqa: E402
    make_sims_checkpoint,
    make_text_tokenizer,
    reference_hf_model,
    write_unit_files,
)
from slm_transformerlens.lens import LogitLens, transcription_table  # noqa: E402
from slm_transformerlens.speech.dataset import load_speech_dataset  # noqa: E402

N_LAYERS = 4
TOLERANCE = 1e-4
FAILURES: list[str] = []


def report(name: str, ok: bool, detail: str = "") -> None:
    """One PASS / FAIL line."""
    print(f"{'PASS' if ok else 'FAIL'} {name}" + (f": {detail}" if detail else ""), flush=True)
    if not ok:
        FAILURES.append(name)


def split_map(first: str, second: str) -> dict[str, str]:
    """Input embedding and the first half of the blocks on ``first``; the rest on ``second``."""
    half = N_LAYERS // 2
    placement = {"model.embed_tokens": first, "model.rotary_emb": first}
    placement.update({f"model.layers.{i}": first if i < half else second for i in range(N_LAYERS)})
    placement.update({"model.norm": second, "lm_head": second})
    return placement


def max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().float().cpu() - b.detach().float().cpu()).abs().max())


def check_split(path: Path, first: str, second: str, single: slt.HookedSLM, utterances: list) -> None:
    """Every check for the model split ``first`` -> ``second``."""
    label = f"[{first} -> {second}]"
    placement = split_map(first, second)
    model = slt.load(path, progress=False, device_map=placement)
    devices = {str(p.device) for p in model.original_model.parameters()}
    expected = {str(torch.device(first)), str(torch.device(second))}
    report(f"{label} weights placed on {sorted(expected)}", devices == expected, f"found {sorted(devices)}")
    report(
        f"{label} inputs go to the input embedding's device",
        str(model.cfg.device) == str(torch.device(first)),
    )

    reference = reference_hf_model(path).to(first)
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, model.speech_vocab.vocab_size, (3, 48), generator=generator)
    with torch.no_grad():
        expected_lp = reference(tokens.to(first)).logits.log_softmax(-1)
        logits, cache = model.run_with_cache(tokens.to(model.cfg.device))
    got_lp = logits.log_softmax(-1)
    diff = max_difference(got_lp, expected_lp)
    report(f"{label} log-probs equal Hugging Face's (fp32)", diff <= TOLERANCE, f"max |diff| {diff:.2e}")

    last = N_LAYERS - 1
    resid = cache[f"blocks.{last}.hook_resid_post"]
    report(
        f"{label} cache holds each block's activation on its own device",
        str(cache["blocks.0.hook_resid_post"].device) == str(torch.device(first))
        and str(resid.device) == str(torch.device(second)),
    )
    lens = LogitLens(model)
    with torch.no_grad():
        lens_lp = lens.logits(resid, last).log_softmax(-1)
        stacked = cache.accumulated_resid(apply_ln=True)[-1] @ model.W_U
    diff = max_difference(lens_lp, got_lp)
    report(f"{label} last-layer logit lens equals the output", diff <= TOLERANCE, f"max |diff| {diff:.2e}")
    report(
        f"{label} lens read-outs run on the unembedding's device",
        str(lens_lp.device) == str(torch.device(second)),
    )
    diff = max_difference(stacked.log_softmax(-1), got_lp)
    report(
        f"{label} accumulated_resid(apply_ln=True) @ W_U equals the output", diff <= TOLERANCE, f"{diff:.2e}"
    )

    def ablate(activation: torch.Tensor, hook: object) -> torch.Tensor:
        return activation * 0.5

    name = f"blocks.{last}.hook_resid_mid"
    with torch.no_grad():
        split_hooked = model.run_with_hooks(tokens.to(model.cfg.device), fwd_hooks=[(name, ablate)])
        single_hooked = single.run_with_hooks(tokens.to(single.cfg.device), fwd_hooks=[(name, ablate)])
    diff = max_difference(split_hooked.log_softmax(-1), single_hooked.log_softmax(-1))
    report(
        f"{label} a hook on the second device edits the run as on one device",
        diff <= TOLERANCE,
        f"{diff:.2e}",
    )

    with torch.no_grad():
        speech_split = model(utterances[:4]).log_softmax(-1)
        speech_single = single(utterances[:4]).log_softmax(-1)
    mask = single.encode(utterances[:4]).attention_mask.bool()
    diff = max_difference(speech_split.cpu()[mask], speech_single.cpu()[mask])
    report(f"{label} speech forward (padded batch) equals one device's", diff <= TOLERANCE, f"{diff:.2e}")

    kwargs = {"batch_tokens": 256, "progress": False, "views": ("text", "full")}
    split_table = transcription_table(model, utterances, **kwargs)
    single_table = transcription_table(single, utterances, **kwargs)
    problem = compare_tables(split_table, single_table)
    report(
        f"{label} batched transcription_table equals one device's ({len(single_table)} rows)",
        problem is None,
        problem or "",
    )


def _is_float_list(value: object) -> bool:
    return isinstance(value, (list, tuple, np.ndarray)) and len(value) > 0 and isinstance(value[0], float)


def compare_tables(got: pd.DataFrame, expected: pd.DataFrame) -> str | None:
    """``None`` when equal (floats within the tolerance, everything else exactly), else what differs."""
    if list(got.columns) != list(expected.columns) or len(got) != len(expected):
        return f"shape {got.shape} vs {expected.shape}"
    for column in expected.columns:
        a, b = got[column], expected[column]
        if pd.api.types.is_float_dtype(b):
            delta = (a.astype(float) - b.astype(float)).abs().max()
            if not (delta <= TOLERANCE or ((a.isna() == b.isna()).all() and a.notna().sum() == 0)):
                return f"column {column}: max |diff| {delta:.2e}"
        elif b.map(_is_float_list).any():  # top_probs: floats per row, within the tolerance
            if a.map(len).tolist() != b.map(len).tolist():
                return f"column {column}: list lengths differ"
            pairs = [(np.asarray(x, float), np.asarray(y, float)) for x, y in zip(a, b, strict=True)]
            delta = max((float(np.abs(x - y).max(initial=0.0)) for x, y in pairs), default=0.0)
            if delta > TOLERANCE:
                return f"column {column}: max |diff| {delta:.2e}"
        elif not a.astype(object).where(a.notna(), None).equals(b.astype(object).where(b.notna(), None)):
            return f"column {column}: {int((a.astype(str) != b.astype(str)).sum())} rows differ"
    return None


def main(argv: list[str] | None = None) -> int:
    """Run every check; 0 when all pass."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="cuda:0,cpu", help="two devices, e.g. cuda:0,cpu (default)")
    args = parser.parse_args(argv)
    devices = [d.strip() for d in args.devices.split(",")]
    if len(devices) != 2:
        parser.error("--devices takes two devices, e.g. cuda:0,cpu")
    if any(d.startswith("cuda") for d in devices) and not torch.cuda.is_available():
        print("FAIL CUDA is not available (pass --devices cpu,cpu to check the code path on CPU)")
        return 1
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 parity
    torch.backends.cudnn.allow_tf32 = False
    start = time.perf_counter()
    print(
        f"torch {torch.__version__}, devices {devices}"
        + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""),
        flush=True,
    )
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        tokenizer = make_text_tokenizer(root / "tokenizer")
        path = make_sims_checkpoint(
            root / "sims",
            base="qwen2",
            tie=False,
            n_layers=N_LAYERS,
            d_model=256,
            n_heads=4,
            n_kv_heads=2,
            n_units=100,
            tokenizer=tokenizer,
        )
        single = slt.load(path, progress=False, device=devices[0])
        files = write_unit_files(root / "units", 16, seed=3)
        utterances = load_speech_dataset(files, single.speech_vocab, progress=False)
        for first, second in (devices, devices[::-1]):
            try:
                check_split(path, first, second, single, utterances)
            except Exception as error:
                import traceback

                traceback.print_exc()
                report(f"[{first} -> {second}] ran without error", False, f"{type(error).__name__}: {error}")
    seconds = time.perf_counter() - start
    verdict = "PASS" if not FAILURES else f"FAIL ({len(FAILURES)} checks)"
    print(f"{verdict} check_device_map_gpu in {seconds:.1f} s", flush=True)
    return 1 if FAILURES else 0


if __name__ == "__main__":
    raise SystemExit(main())
