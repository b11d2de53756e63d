"""Wall time of ``slm-lens inspect`` on the shipped organism (imports dominate), for one or two checkouts.

    python benchmarks/bench_inspect_time.py [--runs 5] [--before /path/to/other/checkout]

Each run is a fresh interpreter (``python -m slm_transformerlens.cli inspect <organism>``) with the
checkout first on ``PYTHONPATH``; with ``--before`` the two checkouts alternate run by run (so a busy
machine slows both alike) and the ratio of the medians is printed. Also prints whether TransformerLens
was imported (``inspect`` needs only the names of its adapters, read from its source).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
ORGANISM = HERE / "slm_transformerlens" / "data" / "organism" / "main_kmeans"
PROBE = (
    "import sys; sys.argv = ['slm-lens', 'inspect', {path!r}, '--tokenizer', {tok!r}];"
    "import slm_transformerlens.cli as c; c.main(sys.argv[1:]);"
    "print('package:', c.__file__, file=sys.stderr);"
    "print('TL imported:', 'transformer_lens' in sys.modules, file=sys.stderr)"
)


def one_run(root: Path) -> tuple[float, str]:
    """Seconds of one ``inspect`` in a fresh interpreter with ``root`` first on the path."""
    env = {**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    code = PROBE.format(path=str(ORGANISM), tok=str(ORGANISM / "base_tokenizer"))
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, check=True
    )
    seconds = time.perf_counter() - start
    lines = done.stderr.splitlines()
    package = next(line for line in lines if line.startswith("package:")).split()[1]
    assert package.startswith(str(root)), f"{package} is not from {root}"
    return seconds, next(line for line in lines if line.startswith("TL imported"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--before", type=Path, help="another checkout to compare with (e.g. main)")
    args = parser.parse_args()
    roots = {"this": HERE} | ({"before": args.before.resolve()} if args.before else {})
    times: dict[str, list[float]] = {name: [] for name in roots}
    notes: dict[str, str] = {}
    for _ in range(args.runs):
        for name, root in roots.items():
            seconds, notes[name] = one_run(root)
            times[name].append(seconds)
    for name, values in times.items():
        print(
            f"{name:6s} {roots[name]}: median {statistics.median(values):.2f} s "
            f"(min {min(values):.2f}, max {max(values):.2f}, n={len(values)}); {notes[name]}"
        )
    if args.before:
        ratio = statistics.median(times["before"]) / statistics.median(times["this"])
        print(f"before / this (medians): {ratio:.2f}x")


if __name__ == "__main__":
    main()
