"""Bad input, round two (issue 18): one clear package error naming the problem and the fix.

One table (case, error class, message fragment, fragment that must NOT appear), then the inputs whose
right answer is a result (a word inside the documented end tolerance of the audio) and the report
heading that must follow the knowledge mode.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import slm_transformerlens as slt
from slm_transformerlens import Speech, Text
from slm_transformerlens.apps.compare import knowledge_label
from slm_transformerlens.errors import CheckpointError, LensError, SLMError, SpeechInputError
from slm_transformerlens.interop import InteropError, export_hf
from slm_transformerlens.lens import lens_table, transcription_table
from slm_transformerlens.organism.evaluate import evaluate_all
from slm_transformerlens.organism.inputs import OrganismInputError
from slm_transformerlens.organism.shipped import shipped_root
from slm_transformerlens.speech.alignment import read_alignment

SPIRIT = "spiritlm-base-bin"


@dataclass
class Context:
    """What a case may use: a scratch folder, the checkpoint layouts, the tiny SpiritLM model."""

    tmp: Path
    request: pytest.FixtureRequest

    def copy(self, layout: str) -> Path:
        source, _ = self.request.getfixturevalue("checkpoint_factory")(layout)
        shutil.copytree(source, self.tmp / layout)
        return self.tmp / layout

    @property
    def model(self) -> Any:
        return self.request.getfixturevalue("spiritlm_model")

    @property
    def monkeypatch(self) -> pytest.MonkeyPatch:
        return self.request.getfixturevalue("monkeypatch")

    def utterance(self) -> list[Any]:
        return [Text(" the girl"), Speech(units=[3, 7, 7, 9], words=[(" red", 0.0, 0.16)])]

    def too_long(self) -> list[Any]:
        """One utterance longer than the model's context (2048 tokens)."""
        n = int(self.model.cfg.n_ctx) + 10
        return [Speech(units=[i % 400 for i in range(n)], words=[(" long", 0.0, 0.04 * n)])]


def no_layer_count(ctx: Context) -> Any:
    path = ctx.copy(SPIRIT)
    config = json.loads((path / "config.json").read_text())
    del config["num_hidden_layers"]
    (path / "config.json").write_text(json.dumps(config))
    return slt.load(path, progress=False)


def read_only_out(ctx: Context) -> Any:
    """export_hf into a folder the user cannot write: refused before the (missing) source is read."""
    locked = ctx.tmp / "locked"
    locked.mkdir()
    real_access = os.access
    ctx.monkeypatch.setattr(
        os, "access", lambda p, mode, **kw: False if Path(p) == locked else real_access(p, mode, **kw)
    )
    return export_hf(ctx.tmp / "no-such-checkpoint", locked / "export")


def file_in_the_way(ctx: Context) -> Any:
    (ctx.tmp / "a-file").write_text("the user's")
    return export_hf(ctx.tmp / "no-such-checkpoint", ctx.tmp / "a-file" / "export")


def organism_data_without_units(ctx: Context) -> Any:
    data = ctx.tmp / "data"
    data.mkdir()
    (data / "corpus.json").write_text("{}")
    return evaluate_all(shipped_root(), data, ctx.tmp / "evaluation")


# (case name, case, error class, message fragment, fragment that must NOT appear)
CASES: list[tuple[str, Callable[[Context], Any], type[SLMError], str, str | None]] = [
    (
        "organism evaluate: no models folder",
        lambda ctx: evaluate_all(ctx.tmp / "models", ctx.tmp / "data", ctx.tmp / "out"),
        OrganismInputError,
        "does not exist; pass --models the folder `slm-lens organism train` wrote",
        "No objects to concatenate",
    ),
    (
        "organism evaluate: a models folder without checkpoints",
        lambda ctx: evaluate_all(ctx.tmp, ctx.tmp / "data", ctx.tmp / "out"),
        OrganismInputError,
        "no checkpoint under",
        "No objects to concatenate",
    ),
    (
        "organism evaluate: no data folder",
        lambda ctx: evaluate_all(shipped_root(), ctx.tmp / "data", ctx.tmp / "out"),
        OrganismInputError,
        "data folder",
        "No such file",
    ),
    (
        "organism evaluate: data without the units",
        organism_data_without_units,
        OrganismInputError,
        "lacks ['units_kmeans.npz', 'units_kmeans.json']",
        "No such file",
    ),
    ("export_hf into a read-only folder", read_only_out, InteropError, "permission denied", "Errno"),
    ("export_hf under a file", file_in_the_way, InteropError, "is a file, not a folder", "Errno"),
    (
        "read_alignment of a missing file",
        lambda ctx: read_alignment(ctx.tmp / "missing.json"),
        SpeechInputError,
        "alignment file",
        "Errno",
    ),
    (
        "read_alignment of a missing TextGrid",
        lambda ctx: read_alignment(ctx.tmp / "missing.TextGrid"),
        SpeechInputError,
        "does not exist; pass the path of a word alignment",
        "Errno",
    ),
    (
        "SpiritLM config without num_hidden_layers",
        no_layer_count,
        CheckpointError,
        "has no ['num_hidden_layers']",
        "weights are missing",
    ),
    (
        "a long second item of a dataset",
        lambda ctx: transcription_table(ctx.model, [[*ctx.utterance()], ctx.too_long()], progress=False),
        SpeechInputError,
        "dataset item 1: the utterance is 2060 tokens long but the model's context is 2048",
        "utterance 0",
    ),
    (
        "a long second item, batched",
        lambda ctx: transcription_table(
            ctx.model, [ctx.utterance(), ctx.too_long()], progress=False, batch_tokens=4096
        ),
        SpeechInputError,
        "dataset item 1: the utterance is",
        "utterance 0",
    ),
    (
        "a long second utterance of one batch",
        lambda ctx: lens_table(ctx.model, [ctx.utterance(), ctx.too_long()]),
        SpeechInputError,
        "utterance 1 is 2060 tokens long",
        "utterance 0",
    ),
    (
        "a word as a target",
        lambda ctx: lens_table(ctx.model, ctx.utterance(), targets={"t": "girl"}),
        LensError,
        "targets are token ids; get a word's ids with WordTargetResolver(model.tokenizer)('girl').ids",
        "per-row targets need",
    ),
    (
        "words as per-row targets",
        lambda ctx: lens_table(ctx.model, ctx.utterance(), targets={"t": [["girl"], ["red"], ["the"]]}),
        LensError,
        "holds words, but targets are token ids",
        "per-row targets need",
    ),
    (
        "an empty utterance in a batch",
        lambda ctx: lens_table(ctx.model, [ctx.utterance(), []]),
        SpeechInputError,
        "utterance 1 is empty (a list with no Speech or Text segment)",
        "got list",
    ),
    (
        "an empty input",
        lambda ctx: ctx.model.encode([]),
        SpeechInputError,
        "the speech input is empty",
        "got list",
    ),
    (
        "an empty dataset item",
        lambda ctx: transcription_table(ctx.model, [ctx.utterance(), []], progress=False),
        SpeechInputError,
        "dataset item 1: the speech input is empty",
        "got list",
    ),
]


@pytest.mark.parametrize(
    ("case", "error", "fragment", "absent"),
    [pytest.param(case, error, fragment, absent, id=name) for name, case, error, fragment, absent in CASES],
)
def test_bad_input_raises_a_package_error(
    case: Callable[[Context], Any],
    error: type[SLMError],
    fragment: str,
    absent: str | None,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    with pytest.raises(error) as raised:
        case(Context(tmp_path, request))
    message = str(raised.value)
    assert isinstance(raised.value, SLMError)
    assert fragment in message, message
    assert absent is None or absent not in message, message


def test_export_hf_refuses_before_reading_the_weights(
    checkpoint_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real checkpoint into a read-only folder: refused, and no weight file was opened."""
    from slm_transformerlens.interop import hf_export

    source, _ = checkpoint_factory(SPIRIT)
    locked = tmp_path / "locked"
    locked.mkdir()
    read: list[Any] = []
    monkeypatch.setattr(hf_export, "_source", lambda *args: read.append(args))
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode, **kw: False if Path(p) == locked else real_access(p, mode, **kw)
    )
    with pytest.raises(InteropError, match="permission denied"):
        export_hf(source, locked / "out")
    assert read == [] and not (locked / "out").exists()


# ------------------------------------------------------------ inputs whose right answer is a result


@pytest.fixture(scope="module")
def audio_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A random 25 Hz HuBERT (2 layers) and 8 random k-means centres: the frame grid is what matters."""
    import torch
    from transformers import HubertModel

    from slm_transformerlens import testing
    from slm_transformerlens.speech.features import HubertFeatureExtractor
    from slm_transformerlens.speech.quantizers import KMeansQuantizer
    from slm_transformerlens.speech.tokenizer import SpeechTokenizer

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("hubert")
    HubertModel(testing.tiny_hubert_config(n_layers=2)).save_pretrained(str(path))
    centres = np.random.default_rng(0).normal(size=(8, 16))
    return SpeechTokenizer(HubertFeatureExtractor(path, layer=2), KMeansQuantizer(centres))


def test_a_word_inside_the_audio_tolerance_is_accepted(audio_tokenizer: Any) -> None:
    """16 600 samples = 1.0375 s of audio; 25 Hz frames cover 1.0 s of it. A word ending 0.06 s after the
    frames (0.0225 s after the audio, inside the 0.04 s tolerance) is valid; one ending at 1.08 s is not,
    and the message gives the audio's length, not the frames'."""
    audio = (np.random.default_rng(1).normal(size=16_600) * 0.1).astype(np.float32)
    assert audio_tokenizer.frames(audio, 16_000).numel() == 25  # 25 frames of 0.04 s = 1.0 s
    speech = audio_tokenizer(audio, 16_000, words=[("a", 0.0, 0.5), ("b", 0.5, 1.06)])
    assert speech.words is not None and [w.end for w in speech.words] == [0.5, 1.06]
    assert speech.n_frames == 25
    with pytest.raises(SpeechInputError) as raised:
        audio_tokenizer(audio, 16_000, words=[("a", 0.0, 0.5), ("b", 0.5, 1.08)])
    assert "outside the audio (1.038 s long)" in str(raised.value)
    assert "1.000 s long" not in str(raised.value)


@pytest.mark.parametrize(
    ("mode", "label", "absent"),
    [
        ("speech", "spoken-knowledge", None),
        ("text", "text-knowledge", "spoken"),
        ("interleaved", "knowledge (spoken prompt, written completion)", None),
        ("text_speech", "knowledge (written prompt, spoken completion)", None),
    ],
)
def test_the_knowledge_heading_follows_the_mode(mode: str, label: str, absent: str | None) -> None:
    assert knowledge_label(mode) == label
    assert absent is None or absent not in knowledge_label(mode)


def test_sae_example_without_saelens_says_which_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """examples/sae_on_speech.py in the main environment: a hint, not ModuleNotFoundError: sae_lens."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "examples" / "sae_on_speech.py"
    spec = importlib.util.spec_from_file_location("sae_on_speech_example", path)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "sae_lens" else real_find_spec(name, *a)
    )
    with pytest.raises(SystemExit) as exited:
        example.require_saelens()
    message = str(exited.value.code)
    assert "needs SAELens" in message and ".venv-tl39/bin/python examples/sae_on_speech.py" in message
    assert "pip install -e . 'transformer-lens<4' sae-lens" in message
