"""Read a speech dataset from files for ``slm-lens analyze``: WAVs with word alignments, or unit files.

A WAV file needs an alignment beside it with the same stem (``utt.json`` in slamkit's
``aligned_text`` format, or ``utt.TextGrid`` from the Montreal Forced Aligner), a HuBERT directory and
a quantizer. A ``.json`` unit file holds ``units`` (de-duplicated unit ids), optional ``durations``
(run lengths in frames), ``aligned_text`` (``[[word, start_s, end_s], ...]``) and optional
``frame_duration`` (default 0.04 s, 25 Hz).

A directory stands for the inputs directly inside it (not in sub-folders), in name order: every
``.wav`` file, and every ``.json`` file that is not the alignment of one of those WAVs (same stem).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from slm_transformerlens.errors import SpeechInputError
from slm_transformerlens.jsonfile import read_json_object
from slm_transformerlens.speech.alignment import read_alignment, read_slamkit_json
from slm_transformerlens.speech.audio import read_wav
from slm_transformerlens.speech.features import HubertFeatureExtractor
from slm_transformerlens.speech.inputs import Speech
from slm_transformerlens.speech.plans import interleave
from slm_transformerlens.speech.quantizers import load_quantizer
from slm_transformerlens.speech.tokenizer import SpeechTokenizer
from slm_transformerlens.speech.units import FRAME_DURATION_25HZ
from slm_transformerlens.vocab import SpeechVocab

__all__ = [
    "PLANS",
    "alignment_for",
    "expand_inputs",
    "load_speech_dataset",
    "read_unit_file",
    "resolve_plan",
    "speech_file_reader",
]

#: The interleaving plans ``slm-lens analyze --plan`` accepts.
PLANS = ("speech", "text", "alternate", "poisson")


#: What WAV input needs, in the command line's terms.
WAV_NEEDS = (
    "WAV input needs --hubert DIR and --quantizer FILE, or --units organism for the model organism's "
    "MFCC k-means units (or pass .json unit files)"
)


def alignment_for(wav: Path) -> Path:
    """The alignment file beside a WAV: ``{stem}.json`` or ``{stem}.TextGrid``."""
    for suffix in (".json", ".TextGrid", ".textgrid"):
        candidate = wav.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    raise SpeechInputError(
        f"no word alignment for {wav}: put {wav.with_suffix('.json').name} (slamkit aligned_text) or "
        f"{wav.with_suffix('.TextGrid').name} (Montreal Forced Aligner) beside it"
    )


def read_unit_file(path: str | Path) -> Speech:
    """A :class:`Speech` from a JSON file with ``units``, ``durations``, ``aligned_text``."""
    path = Path(path)
    data = read_json_object(
        path,
        what="unit file",
        error=SpeechInputError,
        fix="a unit file holds {'units': [...], 'durations': [...], 'aligned_text': [[word, start_s, end_s], ...]}",
    )
    if "units" not in data:
        raise SpeechInputError(
            f"{path} is not a unit file: expected a JSON object with 'units' (and 'durations', 'aligned_text'); "
            "for audio pass the .wav file"
        )
    if "aligned_text" not in data:
        raise SpeechInputError(
            f"{path} has no 'aligned_text' word alignment; the lens report needs word spans"
        )
    return Speech(
        units=data["units"],
        durations=data.get("durations"),
        words=read_slamkit_json(data),
        frame_duration=float(data.get("frame_duration", FRAME_DURATION_25HZ)),
    )


def expand_inputs(paths: Sequence[str | Path]) -> list[Path]:
    """The input files: files as given, a directory replaced by the inputs inside it.

    A directory contributes, in name order, its ``.wav`` files and its ``.json`` files that are not the
    alignment of one of its WAVs (same stem); sub-folders are not searched.

    Raises:
        SpeechInputError: a path that does not exist, or a directory with no input in it.
    """
    out: list[Path] = []
    missing: list[str] = []
    for item in map(Path, paths):
        if item.is_dir():
            files = sorted(p for p in item.iterdir() if p.is_file())
            wavs = [p for p in files if p.suffix.lower() == ".wav"]
            stems = {p.stem for p in wavs}
            units = [p for p in files if p.suffix.lower() == ".json" and p.stem not in stems]
            found = sorted(wavs + units)
            if not found:
                raise SpeechInputError(
                    f"directory {item} holds no input: expected .wav files (each with its .json / .TextGrid "
                    "alignment beside it) or .json unit files directly inside it"
                )
            out.extend(found)
        elif item.is_file():
            out.append(item)
        else:
            missing.append(str(item))
    if missing:
        raise SpeechInputError(
            f"input files do not exist: {missing}; pass .wav or .json unit files, or a directory of them"
        )
    return out


def resolve_plan(name: str, n_words: int) -> Any:
    """A plan name for :func:`~slm_transformerlens.speech.interleave`: ``"alternate"`` becomes the per-word
    mask text, speech, text, ... (every other word spoken); the other names pass through."""
    if name not in PLANS:
        raise SpeechInputError(f"unknown plan {name!r}; choose one of {list(PLANS)}")
    return [i % 2 == 1 for i in range(n_words)] if name == "alternate" else name


def speech_file_reader(
    paths: Sequence[str | Path],
    vocab: SpeechVocab,
    *,
    hubert: str | Path | None = None,
    layer: int = 11,
    quantizer: str | Path | None = None,
    trust_pickle: bool = False,
    plan: str = "speech",
    seed: int = 0,
    resample: bool = True,
    speech_tokenizer: Callable[..., Speech] | None = None,
) -> Callable[[Path], list[Any]]:
    """A function reading one input file (``.wav`` + alignment, or ``.json`` unit file) into an interleaved
    utterance; the speech tokenizer is built once, only when ``paths`` hold a WAV (arguments as
    :func:`load_speech_dataset`).

    Raises:
        SpeechInputError: WAV input without HuBERT / quantizer, or a quantizer with more units than the model
            (at once); a bad file (when it is read).
    """
    tokenizer: Any = speech_tokenizer
    if speech_tokenizer is not None and (hubert is not None or quantizer is not None):
        raise SpeechInputError(
            "pass either a speech tokenizer (--units organism) or --hubert / --quantizer, not both"
        )
    if tokenizer is None and any(Path(p).suffix.lower() == ".wav" for p in paths):
        if hubert is None or quantizer is None:
            raise SpeechInputError(WAV_NEEDS)
        tokenizer = SpeechTokenizer(
            HubertFeatureExtractor(hubert, layer=layer), load_quantizer(quantizer, trust_pickle=trust_pickle)
        )
    if tokenizer is not None and hasattr(tokenizer, "n_units") and tokenizer.n_units > vocab.n_units:
        raise SpeechInputError(
            f"the quantizer has {tokenizer.n_units} units but the model only {vocab.n_units} unit tokens"
        )

    def read(path: Path) -> list[Any]:
        path = Path(path)
        if path.suffix.lower() == ".wav":
            if tokenizer is None:
                raise SpeechInputError(f"{path}: {WAV_NEEDS}")
            audio, rate = read_wav(path)
            speech = tokenizer(audio, rate, words=read_alignment(alignment_for(path)), resample=resample)
        elif path.suffix.lower() == ".json":
            speech = read_unit_file(path)
        else:
            raise SpeechInputError(f"{path}: expected a .wav audio file or a .json unit file")
        if max(speech.units) >= vocab.n_units:
            raise SpeechInputError(
                f"{path}: unit {max(speech.units)} is out of range; the model has {vocab.n_units} units"
            )
        return interleave(speech, resolve_plan(plan, len(speech.words or ())), seed=seed)

    return read


def load_speech_dataset(
    paths: Sequence[str | Path],
    vocab: SpeechVocab,
    *,
    hubert: str | Path | None = None,
    layer: int = 11,
    quantizer: str | Path | None = None,
    trust_pickle: bool = False,
    plan: str = "speech",
    seed: int = 0,
    resample: bool = True,
    progress: bool = True,
    speech_tokenizer: Callable[..., Speech] | None = None,
) -> list[list[Any]]:
    """Read WAV files (with alignments) or unit files into interleaved utterances.

    Args:
        paths: ``.wav`` files (alignment beside each), ``.json`` unit files, or directories of them
            (see :func:`expand_inputs`).
        vocab: the model's vocabulary (units are checked against its unit range).
        hubert, layer, quantizer, trust_pickle: the speech tokenizer for WAV input.
        speech_tokenizer: a ready one instead (``audio, rate, words=, resample=`` -> Speech), e.g. the
            model organism's :func:`~slm_transformerlens.organism.speech_tokenizer.organism_speech_tokenizer`.
        plan: ``"speech"`` (all words spoken), ``"text"``, ``"alternate"`` (every other word spoken) or
            ``"poisson"`` (slamkit-style spans, seeded).
        resample: allow resampling audio to 16 kHz.

    Raises:
        SpeechInputError: a missing file, alignment, HuBERT or quantizer, or units outside the model's range.
    """
    paths = expand_inputs(paths)
    read = speech_file_reader(
        paths,
        vocab,
        hubert=hubert,
        layer=layer,
        quantizer=quantizer,
        trust_pickle=trust_pickle,
        plan=plan,
        seed=seed,
        resample=resample,
        speech_tokenizer=speech_tokenizer,
    )
    return [read(path) for path in tqdm(paths, desc="speech", disable=not progress, unit="file")]
