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
    stages = organism.add_subparsers(dest="stage", required=True)
    build = stages.add_parser("build", help="corpus -> espeak speech -> units -> tokenizer -> token streams")
    build.add_argument(
        "--data", default="out/organism/data", help="data directory (default out/organism/data)"
    )
    build.add_argument("--recipe", default="full", choices=["full", "toy"], help="recipe size (default full)")
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
    evaluate = stages.add_parser("evaluate", help="lens curves with chance controls on the held-out voice")
    evaluate.add_argument("--data", default="out/organism/data")
    evaluate.add_argument("--models", default="out/organism/models")
    evaluate.add_argument("--out", default="out/organism/evaluation")
    organism.set_defaults(handler=run_organism)


def run_organism(args: argparse.Namespace) -> int:
    """Run one stage."""
    if args.stage == "build":
        from slm_transformerlens.organism.build import build_data
        from slm_transformerlens.organism.recipe import Recipe

        print(build_data(args.data, Recipe.preset(args.recipe), progress=not args.quiet))
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
        )
    else:
        import json
        from pathlib import Path

        from slm_transformerlens.organism.evaluate import evaluate_all
        from slm_transformerlens.organism.report import format_results

        curves = evaluate_all(args.models, args.data, args.out)
        differences = json.loads((Path(args.out) / "differences.json").read_text())
        knowledge = json.loads((Path(args.out) / "knowledge.json").read_text())
        report = format_results(curves, differences, knowledge)
        (Path(args.out) / "results.md").write_text(report)
        print(report)
    return 0
