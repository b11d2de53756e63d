"""``slm-lens``: the command-line entry point.

Subcommands:
    inspect PATH   describe a checkpoint (family, architecture, vocabulary layout, sizes)
    demo           the embedded default (real SmolLM2-135M + units, packaged real speech) -> lens report
    analyze PATH   the lens report of a checkpoint on your audio + word alignments (or unit files)
    organism       rebuild the model organism (build | train | evaluate)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["build_parser", "main"]


def _inspect(args: argparse.Namespace) -> int:
    from slm_transformerlens.summary import describe_checkpoint, format_description

    description = describe_checkpoint(
        args.path, family=args.family, tokenizer=args.tokenizer, unit_format=args.unit_format
    )
    if args.json:
        print(json.dumps(description, indent=2, default=str))
    else:
        print(format_description(description))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from slm_transformerlens.demo import run_demo

    result = run_demo(
        args.out,
        cache_dir=args.cache,
        charts=not args.no_charts,
        png=not args.no_png,
        progress=not args.quiet,
        model=args.model,
    )
    _print_result(result, 10)
    return 0


def _analyze(args: argparse.Namespace) -> int:
    import slm_transformerlens as slt
    from slm_transformerlens.lens import TunedLens
    from slm_transformerlens.report import write_lens_report
    from slm_transformerlens.speech.dataset import load_speech_dataset

    model = slt.load(
        args.path,
        family=args.family,
        tokenizer=args.tokenizer,
        device=args.device,
        dtype=args.dtype,
        unit_format=args.unit_format,
        progress=not args.quiet,
    )
    utterances = load_speech_dataset(
        args.audio,
        model.speech_vocab,
        hubert=args.hubert,
        layer=args.hubert_layer,
        quantizer=args.quantizer,
        trust_pickle=args.trust_pickle,
        plan=args.plan,
        seed=args.seed,
        resample=not args.no_resample,
        progress=not args.quiet,
    )
    lens = TunedLens.load(args.tuned_lens, model) if args.tuned_lens else None
    result = write_lens_report(
        model,
        utterances,
        args.out,
        lens=lens,
        k=args.k,
        charts=not args.no_charts,
        png=not args.no_png,
        title=f"Lens analysis of {args.path}",
        progress=not args.quiet,
    )
    _print_result(result, args.k)
    return 0


def _print_result(result: Any, k: int) -> None:
    peaks = result.peaks
    shown = peaks[(peaks["k"] == k) & (peaks["view"] == "text")]
    for row in shown.itertuples(index=False):
        print(
            f"{row.modality:>6} words  {row.metric:<13} top-{k} rate peaks at layer {row.peak_layer:>3}: "
            f"{row.peak_rate:.3f} [{row.ci_low:.3f}, {row.ci_high:.3f}] (n={row.n})"
        )
    print(f"report: {result.report}")


def _add_output_options(parser: argparse.ArgumentParser, default_out: str) -> None:
    parser.add_argument("--out", default=default_out, help=f"output folder (default {default_out})")
    parser.add_argument("--no-charts", action="store_true", help="write tables and report only")
    parser.add_argument("--no-png", action="store_true", help="write HTML charts only (no PNG)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``slm-lens``."""
    parser = argparse.ArgumentParser(
        prog="slm-lens", description="TransformerLens tools for interleaved speech-text language models."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    inspect = commands.add_parser(
        "inspect", help="describe a speech LM checkpoint without loading its weights"
    )
    inspect.add_argument("path", help="checkpoint directory")
    inspect.add_argument("--tokenizer", help="tokenizer directory (SIMS: the BASE text tokenizer)")
    inspect.add_argument("--family", choices=["sims", "spiritlm", "generic"], help="force the family")
    inspect.add_argument("--unit-format", help="unit token format for the generic family, e.g. '<Un{}>'")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of text")
    inspect.set_defaults(handler=_inspect)

    demo = commands.add_parser(
        "demo", help="lens report of the embedded default model on packaged real speech (no downloads)"
    )
    _add_output_options(demo, "out/demo")
    demo.add_argument(
        "--cache", help="where the demo model is built once (default ~/.cache/slm_transformerlens)"
    )
    demo.add_argument(
        "--model",
        default="organism",
        choices=["organism", "smollm2"],
        help="organism (default): the packaged model organism; smollm2: real SmolLM2-135M, untrained units",
    )
    demo.set_defaults(handler=_demo)

    analyze = commands.add_parser(
        "analyze",
        help="lens report (transcription / next-word rates per layer) of a checkpoint on your speech",
    )
    analyze.add_argument("path", help="checkpoint directory")
    analyze.add_argument(
        "audio",
        nargs="+",
        help="WAV files, each with an alignment beside it (same stem, .json slamkit / .TextGrid MFA); "
        "or .json unit files holding 'units', 'durations' and 'aligned_text'",
    )
    analyze.add_argument("--tokenizer", help="tokenizer directory (SIMS: the BASE text tokenizer)")
    analyze.add_argument("--family", choices=["sims", "spiritlm", "generic"], help="force the family")
    analyze.add_argument("--unit-format", help="unit token format for the generic family, e.g. '<Un{}>'")
    analyze.add_argument("--hubert", help="local HubertModel directory (needed for WAV input)")
    analyze.add_argument(
        "--hubert-layer", type=int, default=11, help="HuBERT layer (default 11, mHuBERT-25Hz)"
    )
    analyze.add_argument(
        "--quantizer", help="k-means .npy / torch dict / joblib, or SpiritLM linear quantizer"
    )
    analyze.add_argument("--trust-pickle", action="store_true", help="allow unpickling a joblib k-means")
    analyze.add_argument(
        "--plan",
        default="speech",
        choices=["speech", "text", "alternate", "poisson"],
        help="how each utterance is interleaved (default: all speech)",
    )
    analyze.add_argument("--seed", type=int, default=0, help="seed of the poisson plan")
    analyze.add_argument("--no-resample", action="store_true", help="refuse audio that is not 16 kHz")
    analyze.add_argument(
        "--tuned-lens", help="a tuned lens folder saved by TunedLens.save (default: logit lens)"
    )
    analyze.add_argument("--device", help="cpu, cuda, ...")
    analyze.add_argument("--dtype", help="float32 (default), bfloat16, float16 or auto")
    analyze.add_argument("-k", type=int, default=10, help="top-k rate shown in the report (default 10)")
    _add_output_options(analyze, "out/analyze")
    analyze.set_defaults(handler=_analyze)

    from slm_transformerlens.organism.cli import add_organism_parser

    add_organism_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``slm-lens``; errors of this package are printed as one line, not a traceback."""
    from slm_transformerlens.errors import SLMError

    args = build_parser().parse_args(argv)
    if getattr(args, "quiet", False):
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # Hugging Face's own "Loading weights" bars
    try:
        return int(args.handler(args))
    except SLMError as error:
        print(f"slm-lens {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
