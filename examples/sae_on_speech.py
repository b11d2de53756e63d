"""Train a small SAE with SAELens on a speech LM's residual stream and read its features at spoken words.

    python examples/sae_on_speech.py [--checkpoint CKPT --tokenizer TOK] [--layer 1] [--tokens 20000]

Needs transformer-lens 3.x and SAELens (``pip install 'transformer-lens<4' sae-lens``; CI's 3.9 job has
both). Without ``--checkpoint`` it builds a tiny random SIMS (Llama-3.2 layout) checkpoint, so the
features are those of a random model: the point is the pipeline, interleaved data -> SAELens ->
features per spoken word.
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from slm_transformerlens import Speech, Text
from slm_transformerlens.interop.saelens import sae_exclude_token_ids, token_dataset
from slm_transformerlens.legacy import to_hooked_transformer
from slm_transformerlens.testing import SAMPLE_TEXT, base_tokenizer_dir, make_sims_checkpoint


def interleaved_utterances(n: int, *, n_units: int, seed: int = 0) -> list[list[Any]]:
    """Utterances of 12 words from SAMPLE_TEXT with about 30% of the words spoken (random units)."""
    rng = random.Random(seed)
    words = SAMPLE_TEXT.replace(".", "").split()
    utterances = []
    for _ in range(n):
        start = rng.randrange(len(words) - 12)
        segments: list[Any] = []
        for word in words[start : start + 12]:
            if rng.random() < 0.3:
                units = [rng.randrange(n_units) for _ in range(rng.randint(3, 6))]
                segments.append(Speech(units=units, words=[(f" {word}", 0.0, 0.04 * len(units))]))
            elif segments and isinstance(segments[-1], Text):
                segments[-1] = Text(f"{segments[-1].text} {word}")
            else:
                segments.append(Text(word))
        utterances.append(segments)
    return utterances


def train_sae(
    model: Any, utterances: list[list[Any]], *, layer: int, training_tokens: int, context_size: int = 32
):
    """A StandardSAE on ``blocks.{layer}.hook_resid_post``, markers and BOS excluded from training."""
    from sae_lens import (
        LanguageModelSAERunnerConfig,
        LanguageModelSAETrainingRunner,
        LoggingConfig,
        StandardTrainingSAEConfig,
    )

    dataset = token_dataset(model, utterances, context_size=context_size, progress=False)
    cfg = LanguageModelSAERunnerConfig(
        sae=StandardTrainingSAEConfig(
            d_in=model.cfg.d_model, d_sae=4 * model.cfg.d_model, l1_coefficient=1.0
        ),
        model_name="speech-lm",
        hook_name=f"blocks.{layer}.hook_resid_post",
        dataset_path="",
        streaming=False,
        is_dataset_tokenized=True,
        context_size=context_size,
        prepend_bos=False,
        training_tokens=training_tokens,
        train_batch_size_tokens=256,
        store_batch_size_prompts=8,
        n_batches_in_buffer=16,
        n_batches_for_norm_estimate=4,
        exclude_special_tokens=sae_exclude_token_ids(model),
        lr=1e-3,
        logger=LoggingConfig(log_to_wandb=False),
        device="cpu",
        n_checkpoints=0,
        output_path=None,
        verbose=False,
    )
    return LanguageModelSAETrainingRunner(cfg, override_model=model, override_dataset=dataset).run()


def features_at_spoken_words(model: Any, sae: Any, utterance: list[Any], top_k: int = 3) -> pd.DataFrame:
    """The SAE's strongest features at the last unit of every spoken word of ``utterance``."""
    hook = f"{sae.cfg.metadata.hook_name}.hook_sae_acts_post"
    with torch.no_grad():
        _, cache = model.run_with_cache_with_saes(utterance, saes=[sae])
    acts = cache[hook][0]
    spans = model.encode(utterance).word_spans
    rows = []
    for word in spans[spans["modality"] == "speech"].itertuples():
        values, features = acts[word.last].topk(top_k)
        rows.append(
            {
                "word": word.word,
                "position": word.last,
                "features": features.tolist(),
                "activations": [round(v, 3) for v in values.tolist()],
            }
        )
    return pd.DataFrame(rows)


SAELENS_HINT = (
    "examples/sae_on_speech.py needs SAELens, which pins transformer-lens < 4, so it is not in the main "
    "environment (transformer-lens {tl}). Run it in the transformer-lens 3.9 environment:\n"
    "    bash .ci/tl39.sh -k saelens                  # creates .venv-tl39 (transformer-lens 3.9 + sae-lens)\n"
    "    .venv-tl39/bin/python examples/sae_on_speech.py\n"
    "or in a venv of your own: pip install -e . 'transformer-lens<4' sae-lens"
)


def require_saelens() -> None:
    """Exit with a hint (which environment, what to install) when SAELens is not importable."""
    import importlib.util
    from importlib.metadata import PackageNotFoundError, version

    if importlib.util.find_spec("sae_lens") is not None:
        return
    try:
        tl = version("transformer-lens")
    except PackageNotFoundError:
        tl = "not installed"
    raise SystemExit(SAELENS_HINT.format(tl=tl))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint", type=Path, help="a speech LM checkpoint (default: a tiny random SIMS)"
    )
    parser.add_argument("--tokenizer", type=Path, help="for SIMS: the base text tokenizer directory")
    parser.add_argument("--layer", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=20_000, help="SAE training tokens")
    args = parser.parse_args()
    require_saelens()

    from sae_lens import HookedSAETransformer

    checkpoint, tokenizer = args.checkpoint, args.tokenizer
    if checkpoint is None:
        checkpoint = make_sims_checkpoint(Path(tempfile.mkdtemp()) / "sims", base="llama3", n_layers=2)
        tokenizer = base_tokenizer_dir("llama3")
    model = to_hooked_transformer(checkpoint, tokenizer=tokenizer, model_class=HookedSAETransformer)
    utterances = interleaved_utterances(200, n_units=model.speech_vocab.n_units)
    sae = train_sae(model, utterances, layer=args.layer, training_tokens=args.tokens)
    print(features_at_spoken_words(model, sae, utterances[0]).to_string(index=False))


if __name__ == "__main__":
    main()
