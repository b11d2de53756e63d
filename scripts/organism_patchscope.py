"""Per-layer transcription rates of the shipped organisms: the patchscope beside the logit lens.

The evaluation set, read-out and scoring are the organism evaluation's (``organism/evaluate.py``): the
held-out voice speaking the 240 held-out sentences (bare units of each model's kind, batches of 32), every unit position of
every spoken word read at ``resid_post`` of every layer, text-restricted ranks, content words only,
top-10; ``span`` = a hit at any unit of the word, ``last`` = at its last unit. The shuffled-target
control is the evaluation's (:func:`~slm_transformerlens.organism.evaluate.shuffled_words`, seed 0: each
content word scored against the target of another content word), computed from each position's stored
top-10 ids (the same hits as reading the model again with the permuted span table). 95% intervals:
cluster bootstrap over utterances (index draws, seed 0, as the evaluation).

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

import numpy as np
import pandas as pd
import torch

from slm_transformerlens.lens import LogitLens, PatchscopeLens, transcription_table
from slm_transformerlens.organism.build import load_renderings
from slm_transformerlens.organism.evaluate import K, _encode, _mean_interval, _rates, _speech, shuffled_words
from slm_transformerlens.organism.shipped import (
    load_organism,
    shipped_checkpoint,
    shipped_models,
    shipped_root,
)


def control_table(table: pd.DataFrame, spans: pd.DataFrame) -> pd.DataFrame:
    """``table`` scored against the shuffled words: ``rank`` 0 where the partner's target is in the top-10."""
    shuffled = shuffled_words(spans, seed=0).set_index(["utterance", "word_index"])["word"]
    targets = table.drop_duplicates("word").set_index("word")["target_ids"]
    out = table.copy()
    keys = list(zip(out["utterance"], out["word_index"], strict=True))
    out["word"] = [shuffled.get(key) for key in keys]
    hits = []
    for word, top in zip(out["word"], out["top_ids"], strict=True):
        ids = targets.get(word)
        hits.append(np.nan if ids is None or not len(ids) else float(bool(set(ids) & set(top[:K]))))
    hit = np.asarray(hits)
    out["rank"] = pd.array(np.where(np.isnan(hit), None, np.where(hit == 1.0, 0, K)).tolist(), dtype="Int64")
    return out


def curves(name: str, lenses: dict, batch_size: int = 32) -> list[dict]:
    model = load_organism(name, progress=False)
    kind = (
        json.loads((shipped_checkpoint(name) / "config.json").read_text())
        .get("organism", {})
        .get("unit_kind", "kmeans")
    )
    renderings = [r for r in load_renderings(shipped_root() / "eval", kind) if r["split"] == "heldout"]
    heldout = [r for r in renderings if r["words"]]
    items, spans_list = [], []
    for start in range(0, len(heldout), batch_size):
        encoded = _encode(model, [[_speech(r)] for r in heldout[start : start + batch_size]])
        items.append(
            {
                "tokens": encoded.tokens,
                "attention_mask": encoded.attention_mask,
                "word_spans": encoded.word_spans,
            }
        )
        spans_list.append(encoded.word_spans.assign(utterance=encoded.word_spans["utterance"] + start))
    spans = pd.concat(spans_list, ignore_index=True)
    rows = []
    for lens_name, make in lenses.items():
        began = time.perf_counter()
        table = transcription_table(
            model, items, lens=make(model), positions="every", views=("text",), ks=(K,), top_k=K,
            token_strings=False, progress=False,
        )  # fmt: skip
        took = time.perf_counter() - began
        control = control_table(table, spans)
        for metric, last_only in (("span", False), ("last", True)):
            for suffix, t in (("", table), ("_shuffled", control)):
                hits = _rates(t, spans, rank="rank", word="word", last_only=last_only, any_pool=True)
                for layer, g in hits.groupby("layer"):
                    mean, low, high = _mean_interval(g["hit"].to_numpy(), g["utterance"].to_numpy(), seed=0)
                    rows.append(
                        {
                            "model": name, "lens": lens_name, "metric": metric + suffix, "layer": int(layer),
                            "rate": mean, "ci_low": low, "ci_high": high, "n": len(g), "seconds": took,
                        }
                    )  # fmt: skip
        print(f"{name} {lens_name}: {len(table)} rows in {took:.0f} s", flush=True)
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
