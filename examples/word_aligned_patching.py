"""Word-aligned activation patching between two utterances whose spoken words differ in length.

    python examples/word_aligned_patching.py

Clean: "... a little [girl, spoken: 9 units] who lived ..."; corrupted: the same with a different spoken
word of 5 units. The pair is aligned through the word-span tables, so every position after the spoken
word is matched, and a layers x positions resid_pre sweep runs in batched forwards. Attribution patching
screens the same sweep in one forward + backward. A lens metric asks which layer writes what a later
layer reads out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import slm_transformerlens as slt
from slm_transformerlens.apps.demo import build_demo_assets
from slm_transformerlens.patching import (
    LensMetric,
    PatchPair,
    TokenLogProb,
    activation_patch_sweep,
    attribution_patch_sweep,
    text_token_id,
)
from slm_transformerlens.speech import Speech, Text
from slm_transformerlens.viz.html import save_chart
from slm_transformerlens.viz.patching import patching_heatmap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", help="layers to sweep (default: all)")
    args = parser.parse_args()
    assets = build_demo_assets()
    model = slt.load(assets.checkpoint, tokenizer=assets.tokenizer)
    g = torch.Generator().manual_seed(0)

    def spoken(word: str, n_units: int) -> Speech:
        units = torch.randint(0, 100, (n_units,), generator=g).tolist()
        return Speech(units=units, words=[(word, 0.0, 0.04 * n_units)])

    prefix, suffix = Text(" once upon a time there was a little"), Text(" who lived near the forest")
    clean, corrupted = [prefix, spoken("girl", 9), suffix], [prefix, spoken("boy", 5), suffix]
    pair = PatchPair.from_inputs(model, clean, corrupted, span_mode="resample")
    spoken_word = pair.diff_words[0]
    who = spoken_word + 1  # the first written word after the spoken one
    at = {run: pair.word_position(who, run, "before") for run in ("clean", "corrupted")}
    metrics = [
        TokenLogProb(pair.word_tokens(who, "clean")[0], at, name="logprob_who"),
        LensMetric(model, 15, text_token_id(model, "girl"), at, kind="logprob", name="lens15_girl"),
    ]
    result = activation_patch_sweep(
        model, pair, metrics, components=("resid_pre", "attn_out", "mlp_out"), layers=args.layers
    )
    shown = ["method", "component", "layer", "position", "token", "metric", "value", "normalized"]
    print(result.frame[shown].head())
    screen = attribution_patch_sweep(model, pair, metrics[0], components="resid_pre", layers=args.layers)
    print(screen.frame.sort_values("value", key=abs, ascending=False)[shown].head())
    out = Path("out/examples")
    save_chart(patching_heatmap(result, metric="logprob_who"), out / "patching.html")
    print(f"heatmap: {out / 'patching.html'}")


if __name__ == "__main__":
    main()
