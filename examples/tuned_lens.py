"""Train a tuned lens on your data, compare it with the logit lens, save it, and read speech with it.

    python examples/tuned_lens.py [--steps 100]                  # the main model organism (default)
    python examples/tuned_lens.py --model smollm2                # SmolLM2-135M with untrained unit rows

On the main organism (shipped with the package) the lens is trained on speech: the held-out voice
speaking held-out sentences, the last few kept apart to evaluate it. On SmolLM2 the training data is
English text. For your speech LM, train on interleaved or speech data (a list of token tensors or
Speech/Text utterances).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

import slm_transformerlens as slt
from slm_transformerlens.lens import LogitLens, TunedLens, evaluate_lenses, lens_table, train_tuned_lens


def load_data(model_name: str, n_sentences: int) -> tuple[Any, list[Any], list[Any], Any]:
    """The model, training and held-out sequences, and one utterance of written and spoken words."""
    if model_name == "organism":
        from slm_transformerlens.organism.shipped import MAIN, heldout_utterances, load_organism
        from slm_transformerlens.speech.plans import interleave

        model = load_organism(MAIN)
        spoken = [[s] for s in heldout_utterances("kmeans", limit=n_sentences)]  # all-speech utterances
        fact = heldout_utterances("kmeans", split="fact_true", limit=1)[0]  # "the capital of france is paris"
        mixed = interleave(fact, [i % 2 == 1 for i in range(len(fact.words))])  # every other word spoken
        return model, spoken[:-8], spoken[-8:], mixed
    from slm_transformerlens.apps.demo import build_demo_assets, demo_utterances
    from slm_transformerlens.builders import SAMPLE_TEXT

    assets = build_demo_assets()
    model = slt.load(assets.checkpoint, tokenizer=assets.tokenizer)
    ids = model.tokenizer(SAMPLE_TEXT, add_special_tokens=False).input_ids
    sequences = [torch.tensor([ids[i : i + 32]]) for i in range(0, len(ids) - 32, 16)]
    return model, sequences[:-3], sequences[-3:], demo_utterances(assets, model.speech_vocab.n_units)[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["organism", "smollm2"], default="organism")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--sentences", type=int, default=64, help="organism: spoken sentences (8 held out)")
    parser.add_argument("--out", default="out/examples/tuned_lens", type=Path)
    args = parser.parse_args()
    model, train, held_out, utterance = load_data(args.model, args.sentences)

    tuned = train_tuned_lens(model, train, num_steps=args.steps)  # SGD Nesterov, lr 1.0, wd 1e-3, clip 1.0
    tuned.save(args.out)  # config.json + params.safetensors, with unembedding hash and vocab fingerprint
    tuned = TunedLens.load(args.out, model)

    evaluation = evaluate_lenses(model, held_out, {"logit": LogitLens(model), "tuned": tuned})
    print("KL to the model's output distribution per layer, held-out data (nats):")
    print(evaluation.pivot(index="layer", columns="lens", values="kl").round(3))

    table = lens_table(model, utterance, lens=tuned, views=("text",), top_k=1)
    print(table[["word", "modality", "layer", "top_token"]].tail(12))


if __name__ == "__main__":
    main()
