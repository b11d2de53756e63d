"""``slm-lens``: the command-line entry point.

Subcommands:
    inspect PATH   describe a checkpoint (family, architecture, vocabulary layout, sizes)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``slm-lens``."""
    parser = argparse.ArgumentParser(
        prog="slm-lens", description="TransformerLens tools for interleaved speech-text language models."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    inspect = commands.add_parser("inspect", help="describe a speech LM checkpoint without loading its weights")
    inspect.add_argument("path", help="checkpoint directory")
    inspect.add_argument("--tokenizer", help="tokenizer directory (SIMS: the BASE text tokenizer)")
    inspect.add_argument("--family", choices=["sims", "spiritlm", "generic"], help="force the family")
    inspect.add_argument("--unit-format", help="unit token format for the generic family, e.g. '<Un{}>'")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of text")
    inspect.set_defaults(handler=_inspect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``slm-lens``; errors of this package are printed as one line, not a traceback."""
    from slm_transformerlens.errors import SLMError

    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except SLMError as error:
        print(f"slm-lens {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
