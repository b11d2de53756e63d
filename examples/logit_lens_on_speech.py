"""Logit lens on spoken words: where does a spoken word's TEXT token appear in the residual stream?

Runs on the main model organism shipped with the package (a small interleaved speech LM trained with the
SIMS recipe, see slm_transformerlens/data/organism/MODEL_CARD.md) and its held-out voice, or on the
previous embedded default, or on your checkpoint:

    python examples/logit_lens_on_speech.py                          # the main organism (default)
    python examples/logit_lens_on_speech.py --model smollm2          # SmolLM2-135M, untrained unit rows
    python examples/logit_lens_on_speech.py CKPT --tokenizer TOK     # your SIMS / SpiritLM model

Every rate is printed beside its chance level, the shuffled-target control (each word scored against
another word's target, the mean of 10 permutations), for two read-outs of each spoken content word:
``max``, the paper's (logits max-pooled over the word's units), and ``any`` (a hit at any unit of the
span, as the organism's evaluation reads it). Neither is corrected for what context alone gives: the
swapped-audio control (README, "Controls: hearing vs guessing") does that.

Writes ``out/examples/heatmap.html`` (layer x position, top token per cell, word boundaries marked).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pandas as pd

import slm_transformerlens as slt
from slm_transformerlens.lens import LensProtocol, WordFilter, lens_table, peak_layers
from slm_transformerlens.viz.charts import lens_heatmap
from slm_transformerlens.viz.html import save_chart


def load_data(args: argparse.Namespace) -> tuple[Any, Any, list[Any]]:
    """The model, one mixed utterance (written and spoken words) and a dataset of spoken utterances."""
    if args.model == "organism" and not args.checkpoint:
        from slm_transformerlens.organism.shipped import MAIN, heldout_utterances, load_organism
        from slm_transformerlens.speech.plans import interleave

        model = load_organism(MAIN)
        fact = heldout_utterances("kmeans", split="fact_true", limit=1)[0]  # "the capital of france is paris"
        mixed = interleave(fact, [i % 2 == 1 for i in range(len(fact.words))])  # every other word spoken
        spoken = heldout_utterances("kmeans", limit=args.sentences)  # held-out voice, held-out sentences
        return model, mixed, [[s] for s in spoken]
    from slm_transformerlens.apps.demo import build_demo_assets, demo_utterances

    assets = build_demo_assets()
    if args.checkpoint:
        model = slt.load(args.checkpoint, tokenizer=args.tokenizer)
    else:
        model = slt.load(assets.checkpoint, tokenizer=assets.tokenizer)
    utterances = demo_utterances(assets, model.speech_vocab.n_units)
    return model, utterances[2], utterances  # "The capital of France is Paris." every other word spoken


def chance_verdict(peak: pd.Series) -> str:
    """One line: the peak rate with its interval beside its chance level (the shuffled control), and whether
    it clears it. The frequency prior (a single fixed guess) is shown as a reference for single read-outs
    only; it is never the chance level of a pooled read-out, which gets several tries per word."""
    low, high = peak.get("cluster_low", peak["ci_low"]), peak.get("cluster_high", peak["ci_high"])
    line = (
        f"{peak['metric']} peaks at layer {int(peak['peak_layer'])}: top-{int(peak['k'])} rate "
        f"{peak['peak_rate']:.3f} [{low:.3f}, {high:.3f}] (n = {int(peak['n'])} words)"
    )
    shuffled = peak.get("shuffled_rate")
    if shuffled is None or pd.isna(shuffled):
        return line + " vs no chance level (no shuffled control)"
    line += f" vs chance (shuffled control) {shuffled:.3f}: the interval {'clears' if low > shuffled else 'does NOT clear'} it"
    prior = peak.get("prior_rate")
    if prior is not None and pd.notna(prior):
        line += f" (frequency prior, a single guess list, for reference: {prior:.3f})"
    return line + "; context alone is not controlled here (see `slm-lens analyze`: heard above context)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", help="checkpoint directory (default: see --model)")
    parser.add_argument("--tokenizer", help="SIMS: the base text tokenizer directory")
    parser.add_argument("--model", choices=["organism", "smollm2"], default="organism")
    parser.add_argument("--sentences", type=int, default=48, help="organism: held-out sentences analysed")
    parser.add_argument("--positions", choices=["max", "any", "last"], nargs="+", default=["max", "any"])
    parser.add_argument("--out", default="out/examples", type=Path)
    args = parser.parse_args()
    model, mixed, dataset = load_data(args)

    # 1. one utterance: every position, every layer, top-3 tokens in the full / text / speech views
    encoded = model.encode(mixed)
    print(encoded.word_spans[["word", "modality", "start", "stop", "last"]])
    table = lens_table(model, encoded, positions="all", top_k=3)
    print(table.query("view == 'text' and modality == 'speech'")[["word", "layer", "top_tokens"]].tail(10))
    save_chart(lens_heatmap(table, view="full"), args.out / "heatmap.html")

    # 2. the paper's metrics over a dataset: current-word and next-word ranks among text tokens, with the
    #    chance controls and cluster-bootstrap intervals over utterances
    for positions in args.positions:
        protocol = LensProtocol(positions=positions, modalities=("speech",), word_filter=WordFilter())
        summary = protocol.summarize(protocol.transcription_table(model, dataset))
        columns = [
            "metric",
            "layer",
            "rate",
            "cluster_low",
            "cluster_high",
            "shuffled_rate",
            *(["prior_rate"] if positions not in ("max", "any") else []),  # no single-guess prior if pooled
            "n",
        ]
        print(f"\nspoken content words, read-out positions={positions!r}, top-10 among text tokens:")
        print(summary.query("k == 10 and view == 'text'")[columns].round(3).to_string(index=False))
        peaks = (
            peak_layers(summary).query("k == 10 and view == 'text'").sort_values("metric", ascending=False)
        )
        for _, peak in peaks.iterrows():
            print(chance_verdict(peak))
    print(f"heatmap: {args.out / 'heatmap.html'}")


if __name__ == "__main__":
    main()
