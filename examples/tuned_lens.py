"""Train a tuned lens on your data, compare it with the logit lens, save it, and read speech with it.

    python examples/tuned_lens.py [--steps 100]

On the embedded default (real SmolLM2-135M + units) the training data is English text; for a real
speech LM, train on interleaved or speech data (a list of token tensors or Speech/Text utterances).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import slm_transformerlens as slt
from slm_transformerlens.apps.demo import build_demo_assets, demo_utterances
from slm_transformerlens.builders import SAMPLE_TEXT
from slm_transformerlens.lens import LogitLens, TunedLens, evaluate_lenses, lens_table, train_tuned_lens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--out", default="out/examples/tuned_lens", type=Path)
    args = parser.parse_args()

    assets = build_demo_assets()
    model = slt.load(assets.checkpoint, tokenizer=assets.tokenizer)
    ids = model.tokenizer(SAMPLE_TEXT, add_special_tokens=False).input_ids
    sequences = [torch.tensor([ids[i : i + 32]]) for i in range(0, len(ids) - 32, 16)]
    train, held_out = sequences[:-3], sequences[-3:]

    tuned = train_tuned_lens(model, train, num_steps=args.steps)  # SGD Nesterov, lr 1.0, wd 1e-3, clip 1.0
    tuned.save(args.out)  # config.json + params.safetensors, with unembedding hash and vocab fingerprint
    tuned = TunedLens.load(args.out, model)

    evaluation = evaluate_lenses(model, held_out, {"logit": LogitLens(model), "tuned": tuned})
    print(evaluation.pivot(index="layer", columns="lens", values="kl").round(3))

    utterance = demo_utterances(assets, model.speech_vocab.n_units)[2]
    table = lens_table(model, utterance, lens=tuned, views=("text",), top_k=1)
    print(table[["word", "modality", "layer", "top_token"]].tail(12))


if __name__ == "__main__":
    main()
