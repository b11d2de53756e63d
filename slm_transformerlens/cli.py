"""``slm-lens``: the command-line entry point.

Subcommands:
    inspect PATH   describe a checkpoint (family, architecture, vocabulary layout, sizes)
    demo           the embedded default (real SmolLM2-135M + units, packaged real speech) -> lens report
    analyze PATH   the lens report of a checkpoint on your audio + word alignments (or unit files)
    knowledge PATH DATA   spoken-knowledge accuracy (correct vs counterfactual likelihood, slamkit's rules)
    compare PATH... --data ...   the lens analysis and knowledge accuracy of several checkpoints, one report
    organism       rebuild the model organism (build | train | evaluate)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["CONTROLS", "build_parser", "cli_message", "main"]


def _inspect(args: argparse.Namespace) -> int:
    from slm_transformerlens.apps.summary import describe_checkpoint, format_description

    description = describe_checkpoint(
        args.path, family=args.family, tokenizer=args.tokenizer, unit_format=args.unit_format
    )
    if args.json:
        print(json.dumps(description, indent=2, default=str))
    else:
        print(format_description(description))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from slm_transformerlens.apps.demo import run_demo

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
    from functools import partial

    from slm_transformerlens.apps.run import RunItem, checkpoint_fingerprint, run_analysis
    from slm_transformerlens.errors import SpeechInputError
    from slm_transformerlens.lens import LensError, LogitLens, TunedLens
    from slm_transformerlens.speech.dataset import expand_inputs

    if args.k < 1:
        raise LensError(f"-k {args.k}: the top-k rate needs k >= 1 (e.g. -k 10)")
    # bad -k, missing inputs and an unwritable or occupied --out fail before the model loads
    if args.batch_tokens < 1:
        raise LensError(
            f"--batch-tokens {args.batch_tokens}: a forward pass needs at least 1 token (e.g. 4096)"
        )
    _check_device_options(args)
    # an item's id is its resolved path: the same files named relatively or absolutely are the same run
    items = [RunItem(id=str(path.resolve()), path=path.resolve()) for path in expand_inputs(args.audio)]
    wavs = any(item.path.suffix.lower() == ".wav" for item in items)
    if wavs and args.units == "hubert" and not (args.hubert and args.quantizer):
        from slm_transformerlens.speech.dataset import WAV_NEEDS

        raise SpeechInputError(WAV_NEEDS)
    readers: dict[int, Any] = {}

    def read_item(model: Any, path: Any) -> Any:
        if id(model) not in readers:
            readers[id(model)] = _speech_reader(args, [item.path for item in items], model)
        return readers[id(model)](path)

    main_rank = os.environ.get("RANK", "0") == "0"  # only rank 0 checks the manifest: one read of the weights
    settings = {
        "checkpoint": str(args.path),
        "checkpoint_fingerprint": checkpoint_fingerprint(args.path) if main_rank else None,
        "tuned_lens": checkpoint_fingerprint(args.tuned_lens) if args.tuned_lens and main_rank else None,
        "dtype": args.dtype,
        **{key: getattr(args, key) for key in ("family", "tokenizer", "unit_format", "plan", "seed")},
        **{key: getattr(args, key) for key in ("hubert", "hubert_layer", "quantizer", "no_resample")},
        **({"units": "organism"} if args.units == "organism" else {}),  # older manifests have no key
    }
    _check_lens_options(args)
    if args.lens == "patchscope":
        settings |= {"lens": "patchscope", "patchscope_prompt": args.patchscope_prompt}
    result = run_analysis(
        items,
        args.out,
        load_model=lambda device: _load_model(args, args.path, device=device),
        read_item=read_item,
        settings=settings,
        protocol=_protocol(args, modalities=None),
        make_lens=(
            partial(_patchscope_lens, args.patchscope_prompt, args.readout_precision)
            if args.lens == "patchscope"
            else partial(_make_lens, args.tuned_lens, TunedLens, LogitLens, args.readout_precision)
        ),
        device=args.device,
        split=bool(args.device_map or args.n_devices),
        batch_tokens=args.batch_tokens,
        part_size=args.part_size,
        resume=args.resume,
        overwrite=args.overwrite,
        on_error=args.on_error,
        charts=not args.no_charts,
        png=not args.no_png,
        title=f"Lens analysis of {args.path}",
        progress=not args.quiet,
    )
    if result is not None:  # rank 0 reports
        failed = result.files["failed_items"]
        n_failed = max(0, len(failed.read_text(encoding="utf-8").splitlines()) - 1)
        if n_failed:
            print(f"{n_failed} item(s) could not be analysed; see {failed}", file=sys.stderr)
        _print_result(result, args.k)
    return 0


def _check_lens_options(args: argparse.Namespace) -> None:
    """``--lens`` / ``--patchscope-prompt`` (and ``--tuned-lens`` where the command has it) agree."""
    from slm_transformerlens.lens import LensError

    if args.lens == "patchscope" and getattr(args, "tuned_lens", None):
        raise LensError("--lens patchscope and --tuned-lens are two lenses: pass one of them")
    if args.patchscope_prompt and args.lens != "patchscope":
        raise LensError("--patchscope-prompt needs --lens patchscope")


def _patchscope_lens(prompt: str | None, precision: str, model: Any) -> Any:
    """``--lens patchscope``: a :class:`~slm_transformerlens.lens.PatchscopeLens` with ``prompt`` (a name
    or a template with one ``{x}``; default the identity prompt)."""
    from slm_transformerlens.lens import PatchscopeLens

    return PatchscopeLens(
        model, prompt or "identity", readout_precision=None if precision == "auto" else precision
    )


def _tuned_lens(path: str | None, loader: Any, model: Any) -> Any:
    return loader.load(path, model) if path else None


def _make_lens(path: str | None, loader: Any, logit_lens: Any, precision: str, model: Any) -> Any:
    """The tuned lens at ``path`` (or the logit lens) reading at ``precision`` (``auto``: the device's default)."""
    lens = _tuned_lens(path, loader, model)
    if precision == "auto":
        return lens
    lens = lens if lens is not None else logit_lens(model)
    lens.readout_precision = precision
    return lens


def _add_lens_options(parser: argparse.ArgumentParser, logit: str = "logit (default)") -> None:
    """``--lens logit|patchscope`` and ``--patchscope-prompt`` (``logit``: the help of the default)."""
    parser.add_argument(
        "--lens",
        default="logit",
        choices=["logit", "patchscope"],
        help=f"{logit} or patchscope (each residual written into a text prompt at its layer and read as "
        "the prompt's next token, see README 'Patchscope read-out')",
    )
    parser.add_argument(
        "--patchscope-prompt",
        help="the patchscope's target prompt: 'identity' (default: 'cat cat ; dog dog ; hello hello ; {x}') "
        "or a template holding the placeholder {x} once",
    )


def _check_device_options(args: argparse.Namespace) -> None:
    """A bad --device-map / --n-devices fails before the output folder or the model is touched."""
    from slm_transformerlens.checkpoints import parse_device_map
    from slm_transformerlens.checkpoints.placement import check_placement_request

    device_map = getattr(args, "device_map", None)
    check_placement_request(
        args.device, parse_device_map(device_map) if device_map else None, getattr(args, "n_devices", None)
    )


def _columns(text: str | None) -> Any:
    """``--columns`` as :class:`~slm_transformerlens.knowledge.KnowledgeColumns` (``None``: the defaults)."""
    from slm_transformerlens.knowledge import KnowledgeColumns
    from slm_transformerlens.knowledge.scoring import KnowledgeError

    if not text:
        return None
    try:
        mapping = json.loads(text)
    except ValueError as error:
        raise KnowledgeError(
            f"--columns {text!r} is not JSON ({error}); pass a JSON object of field -> parquet column, "
            'e.g. --columns \'{"prompt_text": "prompt"}\''
        ) from None
    if not isinstance(mapping, dict):
        raise KnowledgeError(
            f"--columns {text!r} is not a JSON object; pass field -> parquet column, "
            'e.g. --columns \'{"prompt_text": "prompt"}\''
        )
    return KnowledgeColumns.from_mapping(mapping)


def _check_batching(args: argparse.Namespace) -> None:
    """--batch-size / --batch-tokens below 1 fail before the model loads."""
    from slm_transformerlens.knowledge.scoring import KnowledgeError

    for option, value in (
        ("--batch-size", args.batch_size),
        ("--batch-tokens", getattr(args, "batch_tokens", None)),
    ):
        if value is not None and value < 1:
            raise KnowledgeError(f"{option} {value}: a forward pass needs at least 1 (e.g. {option} 8)")


def _load_model(args: argparse.Namespace, path: str, device: str | None = None) -> Any:
    import slm_transformerlens as slt
    from slm_transformerlens.checkpoints import parse_device_map

    device_map = getattr(args, "device_map", None)
    return slt.load(
        path,
        family=args.family,
        tokenizer=args.tokenizer,
        device=device or args.device,
        dtype=args.dtype,
        unit_format=args.unit_format,
        progress=not args.quiet and os.environ.get("RANK", "0") == "0",  # one set of bars under torchrun
        device_map=parse_device_map(device_map) if device_map else None,
        n_devices=getattr(args, "n_devices", None),
    )


def _speech_options(args: argparse.Namespace) -> dict[str, Any]:
    """The speech-reading options of the command line, as ``load_speech_dataset`` keywords."""
    return {
        "hubert": args.hubert,
        "layer": args.hubert_layer,
        "quantizer": args.quantizer,
        "trust_pickle": args.trust_pickle,
        "plan": args.plan,
        "seed": args.seed,
        "resample": not getattr(args, "no_resample", False),
        "speech_tokenizer": _organism_tokenizer(args),
    }


def _speech_data(args: argparse.Namespace, paths: Any, model: Any) -> Any:
    from slm_transformerlens.speech.dataset import load_speech_dataset

    return load_speech_dataset(paths, model.speech_vocab, progress=not args.quiet, **_speech_options(args))


def _speech_reader(args: argparse.Namespace, paths: Any, model: Any) -> Any:
    from slm_transformerlens.speech.dataset import speech_file_reader

    return speech_file_reader(paths, model.speech_vocab, **_speech_options(args))


def _organism_tokenizer(args: argparse.Namespace) -> Any:
    """The model organism's speech tokenizer under ``--units organism`` (refused beside --hubert)."""
    if getattr(args, "units", "hubert") != "organism":
        return None
    if args.hubert or args.quantizer:
        from slm_transformerlens.errors import SpeechInputError

        raise SpeechInputError(
            "--units organism reads audio with the model organism's MFCC k-means units; drop --hubert / "
            "--quantizer, or drop --units organism to use them"
        )
    from slm_transformerlens.organism.speech_tokenizer import organism_speech_tokenizer

    return organism_speech_tokenizer()


def _speech_tokenizer(args: argparse.Namespace) -> Any:
    organism = _organism_tokenizer(args)
    if organism is not None:
        return organism
    if not args.hubert or not args.quantizer:
        return None
    from slm_transformerlens.speech.features import HubertFeatureExtractor
    from slm_transformerlens.speech.quantizers import load_quantizer
    from slm_transformerlens.speech.tokenizer import SpeechTokenizer

    return SpeechTokenizer(
        HubertFeatureExtractor(args.hubert, layer=args.hubert_layer),
        load_quantizer(args.quantizer, trust_pickle=args.trust_pickle),
    )


def _knowledge(args: argparse.Namespace) -> int:
    from pathlib import Path

    from slm_transformerlens.knowledge import (
        knowledge_accuracy,
        knowledge_table,
        read_knowledge,
    )

    _check_batching(args)
    _check_device_options(args)
    items = read_knowledge(args.data, _columns(args.columns))
    model = _load_model(args, args.path)
    table = knowledge_table(
        model,
        items,
        mode=args.mode,
        speech_tokenizer=_speech_tokenizer(args),
        token_modality=args.token_modality,
        score_tokens=args.score_tokens,
        batch_size=args.batch_size,
        progress=not args.quiet,
        batch_tokens=args.batch_tokens,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "knowledge.csv", index=False)
    accuracy = knowledge_accuracy(table, mean_nll=not args.sum)
    nll = "summed" if args.sum else "length-normalised"
    print(f"knowledge accuracy {accuracy:.3f} (n={len(table)}, mode {args.mode}, {nll} NLL, tie = 0.5)")
    print(f"table: {out / 'knowledge.csv'}")
    return 0


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tokenizer", help="tokenizer directory (SIMS: the BASE text tokenizer)")
    parser.add_argument("--family", choices=["sims", "spiritlm", "generic"], help="force the family")
    parser.add_argument("--unit-format", help="unit token format for the generic family, e.g. '<Un{}>'")
    _add_device_options(parser)


def _add_device_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", help="cpu, cuda, ... (the whole model on one device)")
    parser.add_argument(
        "--device-map",
        help="split a model too large for one device: auto, balanced, balanced_low_0, sequential, or a JSON "
        'object of Hugging Face module name -> device, e.g. \'{"model.embed_tokens": 0, "model.layers.0": 0, '
        '"model.layers.1": 1, "model.norm": 1, "lm_head": 1}\' (needs accelerate)',
    )
    parser.add_argument("--n-devices", type=int, help="split balanced over the first N GPUs")
    parser.add_argument("--dtype", help="float32 (default), bfloat16, float16 or auto")


def _compare(args: argparse.Namespace) -> int:
    from functools import partial

    from slm_transformerlens.apps.compare import compare_models
    from slm_transformerlens.knowledge import read_knowledge

    _check_batching(args)
    _check_device_options(args)
    _check_lens_options(args)
    items = None
    if args.knowledge:
        items = read_knowledge(args.knowledge, _columns(args.columns))
    result = compare_models(
        args.paths,
        partial(_speech_data, args, args.data),
        args.out,
        names=args.names,
        loader=partial(_load_model, args),
        knowledge_items=items,
        knowledge_mode=args.mode,
        speech_tokenizer=_speech_tokenizer(args) if items else None,
        protocol=_protocol(args),
        make_lens=partial(_patchscope_lens, args.patchscope_prompt, "auto")
        if args.lens == "patchscope"
        else None,
        charts=not args.no_charts,
        png=not args.no_png,
        progress=not args.quiet,
    )
    for name, headline in result.headlines.items():
        print(f"{name}: {headline}")
    for row in result.peaks.itertuples(index=False):
        print(
            f"{row.model}: transcription top-{args.k} peaks at layer {row.peak_layer} "
            f"(depth {row.peak_depth:.2f}): {row.peak_rate:.3f}; knowledge accuracy {row.knowledge_accuracy:.3f}"
        )
    print(f"report: {result.report}")
    return 0


def _protocol(args: argparse.Namespace, modalities: Any = ("speech",)) -> Any:
    from slm_transformerlens.lens import DEFAULT_STOP_WORDS, LensProtocol, TargetConfig, WordFilter

    word_filter = None
    if args.content_words or args.most_frequent:
        stop_words = DEFAULT_STOP_WORDS if args.content_words else frozenset()
        word_filter = WordFilter(stop_words=stop_words, most_frequent=args.most_frequent)
    controls = _controls(args.controls)
    if args.n_permutations < 1 or args.max_swap_words < 0:
        from slm_transformerlens.lens import LensError

        raise LensError(
            f"--n-permutations {args.n_permutations} / --max-swap-words {args.max_swap_words}: the shuffled "
            "control needs at least 1 permutation (default 10) and the word limit must be >= 0 (0: no limit)"
        )
    return LensProtocol(
        controls="shuffled" in controls,
        swapped_audio="swapped-audio" in controls,
        n_permutations=args.n_permutations,
        max_swap_words=args.max_swap_words,
        positions=args.positions,
        k=args.k,
        ks=tuple(sorted({1, 5, 10, args.k})),
        view=args.view,
        target_config=TargetConfig(
            case_variants=tuple(args.case_variants), space_variants=args.space_variants
        ),
        word_filter=word_filter,
        seed=args.seed,
        cluster_by=None if args.cluster_by == "none" else args.cluster_by,
        modalities=modalities,
    )


#: The chance and context controls ``--controls`` can name.
CONTROLS: tuple[str, ...] = ("shuffled", "swapped-audio")


def _controls(text: str) -> set[str]:
    """``--controls`` as a set of names (``none``: no control)."""
    from slm_transformerlens.lens import LensError

    names = {name.strip() for name in text.split(",") if name.strip()}
    if names == {"none"}:
        return set()
    unknown = sorted(names - set(CONTROLS))
    if unknown or not names:
        raise LensError(
            f"--controls {text!r}: unknown {unknown or 'empty list'}; pass a comma-separated list of "
            f"{', '.join(CONTROLS)} (default both), or none"
        )
    return names


def _add_protocol_options(parser: argparse.ArgumentParser, *, k_and_seed: bool = True) -> None:
    parser.add_argument(
        "--positions",
        default="last",
        choices=["last", "first", "mean", "max", "any"],
        help="word read-out: last unit (default), first, mean residual, max-pooled logits, any position",
    )
    if k_and_seed:
        parser.add_argument("-k", type=int, default=10, help="top-k of a hit (default 10)")
        parser.add_argument(
            "--seed", type=int, default=0, help="seed of the shuffled control, bootstrap, plan"
        )
    parser.add_argument("--view", default="text", help="vocabulary view of the rates (default text)")
    parser.add_argument(
        "--case-variants", nargs="*", default=[], choices=["lower", "upper", "capitalize", "title"]
    )
    parser.add_argument("--space-variants", action="store_true", help="also accept targets without the space")
    parser.add_argument("--content-words", action="store_true", help="exclude stop words")
    parser.add_argument("--most-frequent", type=int, default=0, help="exclude the N most frequent word types")
    parser.add_argument("--cluster-by", default="utterance", choices=["utterance", "word", "none"])
    parser.add_argument(
        "--controls",
        default="shuffled,swapped-audio",
        help="chance and context controls, comma-separated (default shuffled,swapped-audio; none for none): "
        "shuffled = the read-out scored against other words' targets (the chance level of every read-out); "
        "swapped-audio = each spoken word's units replaced by another word's, context unchanged (a second "
        "forward pass; heard = rate - swapped-audio rate is the report's headline)",
    )
    parser.add_argument(
        "--n-permutations", type=int, default=10, help="permutations of the shuffled control (default 10)"
    )
    parser.add_argument(
        "--max-swap-words",
        type=int,
        default=5000,
        help="skip the swapped-audio control above this many spoken words (default 5000; 0: no limit)",
    )


def _add_knowledge_options(parser: argparse.ArgumentParser, mode_flag: str = "--mode") -> None:
    parser.add_argument(
        mode_flag,
        dest="mode",
        default="speech",
        choices=["speech", "text", "speech_text", "text_speech", "interleaved"],
        help="prompt_continuation modalities (default speech; interleaved = speech_text)",
    )
    parser.add_argument(
        "--token-modality",
        choices=["text", "speech", "all"],
        help="tokens scored (default: the completion's)",
    )
    parser.add_argument("--score-tokens", default="continuation", choices=["continuation", "sequence"])
    parser.add_argument(
        "--sum",
        action="store_true",
        help="summed NLL instead of length-normalised (slamkit's mean_nll=False)",
    )
    parser.add_argument("--columns", help='JSON of parquet column names, e.g. \'{"prompt_text": "prompt"}\'')
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--hubert", help="local HubertModel directory (for spoken parts given as audio)")
    parser.add_argument("--hubert-layer", type=int, default=11, help="HuBERT layer (default 11)")
    parser.add_argument(
        "--quantizer", help="k-means .npy / torch dict / joblib, or SpiritLM linear quantizer"
    )
    parser.add_argument("--trust-pickle", action="store_true", help="allow unpickling a joblib k-means")
    parser.add_argument(
        "--units",
        default="hubert",
        choices=["hubert", "organism"],
        help="how audio becomes units: 'hubert' (--hubert DIR --quantizer FILE) or 'organism' (the model "
        "organism's MFCC k-means units, built in: for the shipped organism)",
    )


def _add_batch_tokens_option(parser: argparse.ArgumentParser, default: int | None) -> None:
    parser.add_argument(
        "--batch-tokens",
        type=int,
        default=default,
        help="utterances grouped by length into forward passes of at most this many padded tokens"
        + (f" (default {default})" if default else " (instead of --batch-size)"),
    )


def _print_result(result: Any, k: int) -> None:
    if getattr(result, "headline", ""):
        print(result.headline)
    peaks = result.peaks
    shown = peaks[(peaks["k"] == k) & (peaks["view"] == "text")]
    for row in shown.itertuples(index=False):
        chance = ""
        if hasattr(row, "shuffled_rate"):  # the chance level of every read-out; a prior only for single ones
            chance = f"; chance (shuffled): {row.shuffled_rate:.3f}"
            chance += f", frequency prior {row.prior_rate:.3f}" if hasattr(row, "prior_rate") else ""
        if hasattr(row, "swapped_rate"):
            chance += f"; swapped audio {row.swapped_rate:.3f}"
        print(
            f"{row.modality:>6} words  {row.metric:<13} top-{k} rate peaks at layer {row.peak_layer:>3}: "
            f"{row.peak_rate:.3f} [{row.ci_low:.3f}, {row.ci_high:.3f}] (n={row.n}){chance}"
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
        ".json unit files holding 'units', 'durations' and 'aligned_text'; or directories: each gives its "
        ".wav files and the .json files that are not a WAV's alignment (not sub-folders)",
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
        "--units",
        default="hubert",
        choices=["hubert", "organism"],
        help="how audio becomes units: 'hubert' (--hubert DIR --quantizer FILE) or 'organism' (the model "
        "organism's MFCC k-means units, built in: for the shipped organism)",
    )
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
    _add_lens_options(analyze, "logit (default; the tuned lens with --tuned-lens)")
    _add_device_options(analyze)
    analyze.add_argument(
        "--readout-precision",
        default="auto",
        choices=["auto", "fp32", "fast", "certified"],
        help="lens read-out logits: fp32 (one float32 product), fast (the same float32 logits from exact "
        "split fp16 tensor-core products; a bf16/fp16 model, ranks equal but for float32 near-ties), "
        "certified (bf16 products; every token its proven error bound cannot settle is recomputed: exact "
        "ranks and top-k, probabilities within the bound) or auto (default: fp32; fast and certified have "
        "not yet run end to end on a GPU)",
    )
    analyze.add_argument("-k", type=int, default=10, help="top-k rate shown in the report (default 10)")
    _add_protocol_options(analyze, k_and_seed=False)
    _add_output_options(analyze, "out/analyze")
    _add_batch_tokens_option(analyze, default=4096)
    analyze.add_argument(
        "--part-size",
        type=int,
        default=64,
        help="items per written part (default 64; a resumed run keeps its own)",
    )
    analyze.add_argument("--resume", action="store_true", help="continue the run in --out (same settings)")
    analyze.add_argument(
        "--overwrite",
        action="store_true",
        help="remove the files the run in --out wrote (its manifest lists them; other files are kept) first",
    )
    analyze.add_argument(
        "--on-error",
        default="stop",
        choices=["stop", "skip"],
        help="a bad item stops the run (default; finished parts are kept) or is skipped; either way it is named",
    )
    analyze.set_defaults(handler=_analyze)

    knowledge = commands.add_parser(
        "knowledge", help="spoken-knowledge accuracy: correct vs counterfactual completion likelihood"
    )
    knowledge.add_argument("path", help="checkpoint directory")
    knowledge.add_argument(
        "data", help="a parquet file / folder (common-sense-facts-audio layout) or our .json"
    )
    _add_model_options(knowledge)
    _add_knowledge_options(knowledge)
    _add_batch_tokens_option(knowledge, default=None)
    knowledge.add_argument("--out", default="out/knowledge", help="output folder (default out/knowledge)")
    knowledge.add_argument("--quiet", action="store_true", help="no progress bars")
    knowledge.set_defaults(handler=_knowledge)

    compare = commands.add_parser(
        "compare", help="the lens analysis (and knowledge accuracy) of several checkpoints in one report"
    )
    compare.add_argument("paths", nargs="+", help="checkpoint directories (loaded one at a time)")
    compare.add_argument("--data", nargs="+", required=True, help="WAVs with alignments, or .json unit files")
    compare.add_argument("--names", nargs="+", help="a label per checkpoint (default: directory names)")
    compare.add_argument("--knowledge", help="knowledge items: parquet file / folder or .json")
    compare.add_argument(
        "--plan", default="speech", choices=["speech", "text", "alternate", "poisson"], help="interleaving"
    )
    _add_model_options(compare)
    _add_knowledge_options(compare, "--knowledge-mode")
    _add_lens_options(compare)
    _add_protocol_options(compare)
    _add_output_options(compare, "out/compare")
    compare.set_defaults(handler=_compare)

    from slm_transformerlens.organism.cli import add_organism_parser

    add_organism_parser(commands)
    return parser


#: Python keyword advice in package messages -> the matching command-line option.
_CLI_WORDING: tuple[tuple[str, str], ...] = (
    (r"\bfamily='(\w+)'", r"--family \1"),
    (r"\bdtype='?(?:torch\.)?(\w+)'?", r"--dtype \1"),
    (r"\btrust_pickle=True\b", "--trust-pickle"),
    (r"\bresample=True\b", "resampling (leave out --no-resample)"),
    (r"\bout_dir=", "--out"),
    (r"\bunit_format=", "--unit-format"),
    (r"\b(tokenizer|family|hubert|quantizer)=", r"--\1"),
    (r"\bdevice='([^']*)'", r"--device \1"),
    (r"\bdevice=", "--device "),
    (r"\bdevice_map\b", "--device-map"),
    (r"\bn_devices=", "--n-devices "),
    (r"\bn_devices\b", "--n-devices"),
    (r"\bbatch_tokens=", "--batch-tokens "),
    (r"\bpart_size=", "--part-size "),
)


def cli_message(error: BaseException) -> str:
    """A package error as one line, with its Python keyword advice (``tokenizer=``) in option form
    (``--tokenizer``)."""
    text = " ".join(str(error).split())
    for pattern, replacement in _CLI_WORDING:
        text = re.sub(pattern, replacement, text)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``slm-lens``; errors of this package (and file-system errors) are printed as one line, not a
    traceback, and the exit status is 2."""
    from slm_transformerlens.errors import SLMError

    args = build_parser().parse_args(argv)
    if getattr(args, "quiet", False):
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # Hugging Face's own "Loading weights" bars
    try:
        return int(args.handler(args))
    except (SLMError, OSError) as error:
        print(f"slm-lens {args.command}: error: {cli_message(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        resume = " (finished parts are kept: run again with --resume)" if args.command == "analyze" else ""
        print(f"slm-lens {args.command}: interrupted{resume}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
