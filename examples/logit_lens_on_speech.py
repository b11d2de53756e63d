"""Logit lens on spoken words: where does a spoken word's TEXT token appear in the residual stream?

Runs on the embedded default (the real SmolLM2-135M with 500 speech units, built once and cached) and
the packaged real speech, or on your checkpoint:

    python examples/logit_lens_on_speech.py                                  # embedded default
    python examples/logit_lens_on_speech.py CKPT --tokenizer TOK            # your SIMS / SpiritLM model

Writes ``out/examples/heatmap.html`` (layer x position, top token per cell, word boundaries marked).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import slm_transformerlens as slt
from slm_transformerlens.apps.demo import build_demo_assets, demo_utterances
from slm_transformerlens.lens import lens_table, summarize_transcription, transcription_table
from slm_transformerlens.viz.charts import lens_heatmap
from slm_transformerlens.viz.html import save_chart


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", help="checkpoint directory (default: the embedded default)")
    parser.add_argument("--tokenizer", help="SIMS: the base text tokenizer directory")
    parser.add_argument("--out", default="out/examples", type=Path)
    args = parser.parse_args()

    assets = build_demo_assets()
    if args.checkpoint:
        model = slt.load(args.checkpoint, tokenizer=args.tokenizer)
    else:
        model = slt.load(assets.checkpoint, tokenizer=assets.tokenizer)
    utterances = demo_utterances(assets, model.speech_vocab.n_units)
    mixed = utterances[2]  # "The capital of France is Paris." with every other word spoken

    # 1. one utterance: every position, every layer, top-3 tokens in the full / text / speech views
    encoded = model.encode(mixed)
    print(encoded.word_spans[["word", "modality", "start", "stop", "last"]])
    table = lens_table(model, encoded, positions="all", top_k=3)
    print(table.query("view == 'text' and modality == 'speech'")[["word", "layer", "top_tokens"]].tail(10))
    save_chart(lens_heatmap(table, view="full"), args.out / "heatmap.html")

    # 2. the paper's metrics over a dataset: current-word and next-word ranks among text tokens
    metrics = transcription_table(model, utterances, modalities=("speech",))
    summary = summarize_transcription(metrics)
    print(summary.query("k == 10 and view == 'text'").pivot(index="layer", columns="metric", values="rate"))
    print(f"heatmap: {args.out / 'heatmap.html'}")


if __name__ == "__main__":
    main()
