"""Peak memory of ``slt.load`` as a ratio to the size of the weights on disk (goal <= 1.3).

Each measurement runs in a fresh subprocess: the extra resident memory of the load is
``peak RSS during load - RSS just before``, divided by the weight files' size. The baseline
is the plain Hugging Face route (``from_config`` + ``load_state_dict``), measured the same way.

    python benchmarks/bench_load_memory.py [--layers 8] [--d-model 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

MEASURE = r"""
import json, os, sys, torch
os.environ["HF_HUB_OFFLINE"] = "1"
import slm_transformerlens as slt
from transformers import AutoConfig, AutoModelForCausalLM
from safetensors.torch import load_file

def status_kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])

path, route = sys.argv[1], sys.argv[2]
torch.ones(1)  # initialise torch's allocator before the baseline
before = status_kib("VmRSS")
if route == "slt":
    model = slt.load(path, progress=False)
else:
    config = AutoConfig.from_pretrained(path)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    files = sorted(f for f in os.listdir(path) if f.endswith((".safetensors", ".bin")))
    for name in files:
        full = os.path.join(path, name)
        state = load_file(full) if name.endswith(".safetensors") else torch.load(full, weights_only=True)
        model.load_state_dict(state, strict=False)
        del state
loaded_peak = status_kib("VmHWM")
with torch.no_grad():  # touch every weight: memory-mapped pages become resident
    model(torch.arange(8).unsqueeze(0))
peak = status_kib("VmHWM")  # this process's peak RSS (ru_maxrss would include the parent's)
print(json.dumps({"before_kib": before, "loaded_peak_kib": loaded_peak, "peak_kib": peak}))
"""


def measure(path: Path, route: str) -> tuple[float, float]:
    """Extra peak RSS of one load route, in bytes: right after loading, and after a forward pass."""
    result = subprocess.run([sys.executable, "-c", MEASURE, str(path), route], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    numbers = json.loads(result.stdout.strip().splitlines()[-1])
    before = numbers["before_kib"]
    return (numbers["loaded_peak_kib"] - before) * 1024, (numbers["peak_kib"] - before) * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--d-model", type=int, default=1024)
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    from slm_transformerlens.builders import make_spiritlm_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        for weights in ("safetensors", "bin"):
            path = make_spiritlm_checkpoint(
                Path(tmp) / weights,
                weights=weights,
                n_layers=args.layers,
                d_model=args.d_model,
                n_heads=16,
                n_kv_heads=16,
            )
            size = sum(f.stat().st_size for f in path.iterdir() if f.suffix in (".safetensors", ".bin"))
            (ours_loaded, ours), (naive_loaded, naive) = measure(path, "slt"), measure(path, "hf")
            print(
                f"{weights:<12} weights {size / 2**20:7.1f} MiB | extra peak RSS / weights: "
                f"slt.load {ours_loaded / size:.2f} (after a forward pass {ours / size:.2f}) | "
                f"HF from_config+load_state_dict {naive_loaded / size:.2f} ({naive / size:.2f}) | "
                f"slt/HF {ours / naive:.2f}"
            )


if __name__ == "__main__":
    main()
