"""Word-aligned activation patching between two utterances whose spoken words differ in length.

    python examples/word_aligned_patching.py [--layers 0 3 6]            # the main model organism
    python examples/word_aligned_patching.py --model smollm2             # SmolLM2-135M, untrained units

On the main organism (shipped with the package): "the capital of france is" written, then the answer
spoken by the held-out voice, then more text. Clean: "paris" (8 units); corrupted: "madrid" (10 units),
the fact base's counterfactual. On SmolLM2: "... a little [girl, 9 random units] who lived ..." against
"boy" in 5 units. The pair is aligned through the word-span tables, so every position after the spoken
word is matched, and a layers x positions sweep of resid_pre, attn_out and mlp_out runs in batched
forwards. Attribution patching screens the same sweep in one forward + backward. Two metrics: the
log-probability of the first written word after the spoken one, and a lens read-out (the clean spoken
word's text token, among text tokens, at the spoken word's last unit) that asks which layer and position
write what a later layer reads out.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

import slm_transformerlens as slt
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


def organism_pair() -> tuple[Any, list[Any], list[Any], str]:
    """The main organism, and a written fact prompt with its true / counterfactual answer spoken."""
    from slm_transformerlens.organism.shipped import MAIN, heldout_utterances, load_organism
    from slm_transformerlens.speech.plans import interleave

    def answer_spoken(split: str) -> list[Any]:
        fact = heldout_utterances("kmeans", split=split, limit=1)[0]  # "the capital of france is paris"
        return interleave(fact, [False] * (len(fact.words) - 1) + [True])  # the prompt written, answer spoken

    suffix = Text(" and the old man was quiet")
    clean, corrupted = [*answer_spoken("fact_true"), suffix], [*answer_spoken("fact_false"), suffix]
    return load_organism(MAIN), clean, corrupted, clean[1].words[0].word


def smollm2_pair() -> tuple[Any, list[Any], list[Any], str]:
    """SmolLM2-135M with untrained unit rows, and a written sentence with one word in random units."""
    from slm_transformerlens.apps.demo import build_demo_assets

    assets = build_demo_assets()
    model = slt.load(assets.checkpoint, tokenizer=assets.tokenizer)
    g = torch.Generator().manual_seed(0)

    def spoken(word: str, n_units: int) -> Speech:
        units = torch.randint(0, 100, (n_units,), generator=g).tolist()
        return Speech(units=units, words=[(word, 0.0, 0.04 * n_units)])

    prefix, suffix = Text(" once upon a time there was a little"), Text(" who lived near the forest")
    return model, [prefix, spoken("girl", 9), suffix], [prefix, spoken("boy", 5), suffix], "girl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["organism", "smollm2"], default="organism")
    parser.add_argument("--layers", type=int, nargs="+", help="layers to sweep (default: all)")
    args = parser.parse_args()
    model, clean, corrupted, word = organism_pair() if args.model == "organism" else smollm2_pair()

    pair = PatchPair.from_inputs(model, clean, corrupted, span_mode="resample")
    spoken_word = pair.diff_words[0]
    after = spoken_word + 1  # the first written word after the spoken one
    before = {run: pair.word_position(after, run, "before") for run in ("clean", "corrupted")}
    last_unit = {run: pair.word_position(spoken_word, run, "last") for run in ("clean", "corrupted")}
    layer = model.cfg.n_layers * 3 // 4  # a late-middle layer (the organism's transcription peaks at 6 of 8)
    metrics = [
        TokenLogProb(pair.word_tokens(after, "clean")[0], before, name="logprob_next"),
        LensMetric(
            model,
            layer,
            text_token_id(model, word),
            last_unit,
            kind="logprob",
            vocab=model.speech_vocab.text_token_ids,
            name=f"lens{layer}_{word}",
        ),
    ]
    result = activation_patch_sweep(
        model, pair, metrics, components=("resid_pre", "attn_out", "mlp_out"), layers=args.layers
    )
    shown = ["method", "component", "layer", "position", "token", "metric", "value", "normalized"]
    print(result.frame[shown].head())
    screen = attribution_patch_sweep(model, pair, metrics[0], components="resid_pre", layers=args.layers)
    print(screen.frame.sort_values("value", key=abs, ascending=False)[shown].head())
    out = Path("out/examples")
    save_chart(patching_heatmap(result, metric="logprob_next"), out / "patching.html")
    print(f"heatmap: {out / 'patching.html'}")


if __name__ == "__main__":
    main()
