"""Per-layer transcription rates of the shipped organisms: the patchscope beside the logit lens.

The evaluation set, read-out and scoring are the organism evaluation's (``organism/evaluate.py``): the
held-out voice speaking the 240 held-out sentences (bare units of each model's kind, batches of 32), every unit position of
every spoken word read at ``resid_post`` of every layer, text-restricted ranks, content words only,
top-10; ``span`` = a hit at any unit of the word, ``last`` = at its last unit. The shuffled-target
control is the evaluation's (:func:`~slm_transformerlens.lens.controls.shuffled_control`, the mean over
10 seeded permutations among content words, same read-out). 95% intervals: cluster bootstrap over
utterances (index draws, seed 0, as the evaluation). The logit-lens rows are therefore the shipped
evaluation's ``curves.csv`` rows exactly.

Usage::

    HF_HUB_OFFLINE=1 python scripts/organism_patchscope.py [--models main_kmeans,...] [--out FILE.csv]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd
import torch

from slm_transformerlens.lens import LogitLens, PatchscopeLens
from slm_transformerlens.organism.build import load_renderings
from slm_transformerlens.organism.evaluate import (
    _curve,
    _encode,
    _hits,
    _readout_tables,
    _shuffled_curves,
    _speech,
)
from slm_transformerlens.organism.shipped import (
    load_organism,
    shipped_checkpoint,
    shipped_models,
    shipped_root,
)


def curves(model_name: str, lenses: dict, batch_size: int = 32) -> list[dict]:
    model = load_organism(model_name, progress=False)
    kind = (
        json.loads((shipped_checkpoint(model_name) / "config.json").read_text())
        .get("organism", {})
        .get("unit_kind", "kmeans")
    )
    renderings = [r for r in load_renderings(shipped_root() / "eval", kind) if r["split"] == "heldout"]
    heldout = [r for r in renderings if r["words"]]
    batches = [
        _encode(model, [[_speech(r)] for r in heldout[start : start + batch_size]])
        for start in range(0, len(heldout), batch_size)
    ]
    rows = []
    specs = {"span": ("transcription_span", "any"), "last": ("transcription_last", "last")}
    for lens_name, make in lenses.items():
        began = time.perf_counter()
        tables = _readout_tables(model, batches, lens=make(model))
        took = time.perf_counter() - began
        shuffled = _shuffled_curves(tables, seed=0)
        for metric, (name, positions) in specs.items():
            rates = _curve(_hits(tables[positions], rank="rank", word="word"), metric, seed=0)
            control = [row | {"metric": metric + "_shuffled"} for row in shuffled[name]]
            rows += [
                {"model": model_name, "lens": lens_name, **row, "seconds": took} for row in rates + control
            ]
        print(f"{model_name} {lens_name}: read in {took:.0f} s", flush=True)
    return rows


def markdown(frame: pd.DataFrame) -> str:
    """One table per model: per layer, each lens' span and last-unit rates [95% interval] and controls."""
    out = []
    for model, g in frame.groupby("model", sort=False):
        n = int(g["n"].max())
        out += [f"### {model} (n = {n} content words per layer)", ""]
        out += [
            "| layer | logit span | shuffled | patchscope span | shuffled | logit last | shuffled | patchscope last | shuffled |"
        ]
        out += ["|---|---|---|---|---|---|---|---|---|"]
        for layer, rows in g.groupby("layer"):
            cell = {(r.lens, r.metric): r for r in rows.itertuples()}
            values = []
            for metric in ("span", "last"):
                for lens in ("logit", "patchscope"):
                    r, c = cell[(lens, metric)], cell[(lens, metric + "_shuffled")]
                    values += [f"{r.rate:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]", f"{c.rate:.3f}"]
            out.append(f"| {layer} | " + " | ".join(values) + " |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(shipped_models()))
    parser.add_argument("--out", default="patchscope_curves.csv")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--markdown", help="only write the tables of an existing --out csv to this file")
    args = parser.parse_args()
    if args.markdown:
        Path(args.markdown).write_text(markdown(pd.read_csv(args.out)) + "\n")
        return
    torch.set_num_threads(args.threads)
    lenses = {"logit": LogitLens, "patchscope": lambda m: PatchscopeLens(m, progress=False)}
    rows = []
    for name in args.models.split(","):
        rows += curves(name, lenses)
        pd.DataFrame(rows).to_csv(args.out, index=False)
    print(
        pd.DataFrame(rows)
        .pivot_table(index=["model", "layer"], columns=["lens", "metric"], values="rate")
        .round(3)
    )


if __name__ == "__main__":
    main()
