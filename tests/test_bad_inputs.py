"""Bad input never gives a wrong answer or a traceback (issue 11).

One table of bad inputs, each with the package error it must raise and a fragment of the message (what
went wrong and the fix), then the cases where the right answer is a RESULT (inputs that used to be
refused or misread), the non-finite checks end to end, and the command line's one-line errors.
"""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import slm_transformerlens as slt
from slm_transformerlens import Speech, Text, testing
from slm_transformerlens.checks import check_finite_logits
from slm_transformerlens.cli import main
from slm_transformerlens.errors import (
    CheckpointError,
    NonFiniteError,
    OutputError,
    SLMError,
    SpeechInputError,
    UnsupportedArchitectureError,
)
from slm_transformerlens.lens import (
    LensError,
    LogitLens,
    lens_table,
    read_many,
    read_vectors,
    transcription_table,
    vocab_views,
)
from slm_transformerlens.report import prepare_output_folder
from slm_transformerlens.speech.alignment import read_alignment, read_slamkit_json
from slm_transformerlens.speech.audio import prepare_audio
from slm_transformerlens.speech.dataset import expand_inputs, load_speech_dataset, read_unit_file
from slm_transformerlens.speech.quantizers import KMeansQuantizer, load_quantizer
from slm_transformerlens.summary import describe_checkpoint

SPIRIT_ST = "spiritlm-expressive-safetensors"
SPIRIT_BIN = "spiritlm-base-bin"
SIMS = "sims-qwen2-tied"


@dataclass
class Context:
    """What a case may use: a scratch folder, the checkpoint layouts, the tiny SpiritLM model."""

    tmp: Path
    request: pytest.FixtureRequest

    def copy(self, layout: str) -> tuple[Path, dict]:
        source, kwargs = self.request.getfixturevalue("checkpoint_factory")(layout)
        target = self.tmp / layout
        shutil.copytree(source, target)
        return target, kwargs

    @property
    def model(self) -> Any:
        return self.request.getfixturevalue("spiritlm_model")

    def utterance(self) -> list[Any]:
        return [Text(" the girl"), Speech(units=[3, 7, 7, 9], words=[(" red", 0.0, 0.16)])]


def edit_config(path: Path, change: Callable[[dict], Any]) -> None:
    config = json.loads((path / "config.json").read_text())
    change(config)
    (path / "config.json").write_text(json.dumps(config))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def nan_weight(ctx: Context) -> Any:
    path, kwargs = ctx.copy(SPIRIT_ST)
    state = load_file(str(path / "model.safetensors"))
    state["model.layers.1.mlp.down_proj.weight"][3, 5] = float("nan")
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    return slt.load(path, progress=False, **kwargs)


def unsafe_bin(ctx: Context) -> Any:
    path, _ = ctx.copy(SPIRIT_BIN)
    state = torch.load(path / "pytorch_model.bin", weights_only=True)
    state["extra"] = Path("not a tensor")  # any non-tensor global is refused
    torch.save(state, path / "pytorch_model.bin")
    return slt.load(path, progress=False)


def hubert_folder(ctx: Context) -> Path:
    from transformers import HubertModel

    path = ctx.tmp / "hubert"
    HubertModel(testing.tiny_hubert_config(n_layers=2)).save_pretrained(str(path))
    return path


def write(ctx: Context, name: str, content: str | bytes) -> Path:
    path = ctx.tmp / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def view_and_target_case(**kwargs: Any) -> Callable[[Context], Any]:
    return lambda ctx: lens_table(ctx.model, ctx.utterance(), **kwargs)


def read_many_case(ctx: Context) -> Any:
    model = ctx.model
    vocab = model.speech_vocab
    return read_many(
        LogitLens(model),
        {(0, "resid_post"): torch.randn(2, model.cfg.d_model)},
        views=vocab_views(vocab, ["full"]),
        group_labels=vocab.group_labels,
        n_groups=len(vocab.group_names),
        top_k=0,
    )


# (item of issue 11, case, error class, message fragment, fragment that must NOT appear)
CASES: list[tuple[str, Callable[[Context], Any], type[SLMError], str, str | None]] = [
    # 1. non-finite values
    ("1 nan weight", nan_weight, NonFiniteError, "model.layers.1.mlp.down_proj.weight holds NaN", None),
    (
        "1 nan residual",
        lambda ctx: read_vectors(
            LogitLens(ctx.model),
            torch.full((3, ctx.model.cfg.d_model), float("nan")),
            2,
            views=vocab_views(ctx.model.speech_vocab, ["text"]),
            group_labels=ctx.model.speech_vocab.group_labels,
            n_groups=len(ctx.model.speech_vocab.group_names),
        ),
        NonFiniteError,
        "lens logits at layer 2 resid_post, row 0 hold NaN",
        None,
    ),
    # 2. argument validation, with the valid choices
    (
        "2 top_k > marker view",
        view_and_target_case(views=("full", "marker")),
        LensError,
        "view 'marker' has 2",
        None,
    ),
    ("2 top_k=600", view_and_target_case(top_k=600), LensError, "top_k=600", None),
    ("2 top_k=0", view_and_target_case(top_k=0), LensError, "must be an int from 1 to", None),
    ("2 top_k=0 read_many", read_many_case, LensError, "top_k=0", None),
    (
        "2 layers=[]",
        view_and_target_case(layers=[]),
        LensError,
        "layers is empty: pass block indices 0..2",
        None,
    ),
    ("2 sites=()", view_and_target_case(sites=()), LensError, "sites is empty: pass at least one of", None),
    (
        "2 modality",
        view_and_target_case(modalities=("speach",)),
        LensError,
        "unknown ['speach']; choose from",
        None,
    ),
    (
        "2 modality transcription",
        lambda ctx: transcription_table(ctx.model, [ctx.utterance()], modalities=("speach",), progress=False),
        LensError,
        "unknown ['speach']",
        None,
    ),
    (
        "2 top_k transcription",
        lambda ctx: transcription_table(ctx.model, [ctx.utterance()], top_k=-1, progress=False),
        LensError,
        "top_k=-1",
        None,
    ),
    ("2 negative target", view_and_target_case(targets={"t": -3}), LensError, "needs ids >= 0", None),
    (
        "2 target -1 shared",
        view_and_target_case(targets={"t": [-1]}),
        LensError,
        "-1 pads only per-row",
        None,
    ),
    (
        "2 out-of-vocab target",
        view_and_target_case(targets={"t": 10**6}),
        LensError,
        "valid ids are 0..",
        None,
    ),
    # 3. raw exceptions -> package errors naming the file and the fix
    (
        "3 truncated config.json",
        lambda ctx: slt.load(write_config(ctx, '{"vocab_size": 10, '), progress=False),
        CheckpointError,
        "config.json is not valid JSON",
        None,
    ),
    (
        "3 config.json list",
        lambda ctx: slt.load(write_config(ctx, "[1, 2]"), progress=False),
        CheckpointError,
        "must hold a JSON object",
        None,
    ),
    (
        "3 truncated safetensors load",
        lambda ctx: slt.load(truncated_safetensors(ctx), progress=False),
        CheckpointError,
        "model.safetensors is not a readable safetensors file",
        None,
    ),
    (
        "3 truncated safetensors inspect",
        lambda ctx: describe_checkpoint(truncated_safetensors(ctx)),
        CheckpointError,
        "truncated or corrupt",
        None,
    ),
    (
        "3 sims base_config without num_hidden_layers",
        lambda ctx: slt.load(
            sims_without_layers(ctx), tokenizer=testing.base_tokenizer_dir("qwen2"), progress=False
        ),
        CheckpointError,
        "base_config lacks ['num_hidden_layers']",
        None,
    ),
    (
        "3 corrupt alignment",
        lambda ctx: read_alignment(write(ctx, "utt.json", '{"aligned_text": [["a", 0')),
        SpeechInputError,
        "utt.json is not valid JSON",
        None,
    ),
    (
        "3 corrupt unit file",
        lambda ctx: read_unit_file(write(ctx, "units.json", "{units: [1, 2]}")),
        SpeechInputError,
        "units.json is not valid JSON",
        None,
    ),
    (
        "3 OS error on out",
        lambda ctx: prepare_output_folder(write(ctx, "a-file", "x") / "report"),
        OutputError,
        "cannot write to the output folder",
        None,
    ),
    (
        "3 inspect a HuBERT folder",
        lambda ctx: describe_checkpoint(hubert_folder(ctx)),
        UnsupportedArchitectureError,
        "not a causal language model",
        None,
    ),
    # 4. misleading messages
    (
        "4 (samples, channels) audio",
        lambda ctx: prepare_audio(np.zeros((1600, 2), dtype=np.float32), 16_000),
        SpeechInputError,
        "looks like (samples, channels)",
        None,
    ),
    (
        "4 empty input directory",
        lambda ctx: load_speech_dataset([ctx.tmp], ctx.model.speech_vocab),
        SpeechInputError,
        "holds no input",
        None,
    ),
    (
        "4 unsafe pickle advice",
        unsafe_bin,
        CheckpointError,
        "safetensors.torch.save_file",
        "weights_only=False",
    ),
    (
        "4 spiritlm without vocab_size",
        lambda ctx: slt.load(spirit_without_vocab_size(ctx), progress=False),
        CheckpointError,
        "has no 'vocab_size'",
        "tokenizer",
    ),
    (
        "4 empty aligned word",
        lambda ctx: Speech(units=[1, 2, 3], words=[(" a", 0.0, 0.04), ("  ", 0.04, 0.08)]),
        SpeechInputError,
        "an aligned word is empty",
        None,
    ),
    # 5. --trust-pickle only unpickles pickle files
    (
        "5 trust_pickle on a non-pickle",
        lambda ctx: load_quantizer(write(ctx, "km.bin", b"\x00garbage, not a pickle" * 4), trust_pickle=True),
        SpeechInputError,
        "is not a quantizer file this package reads",
        None,
    ),
    (
        "5 trust_pickle on an unsafe torch file",
        lambda ctx: load_quantizer(unsafe_torch_quantizer(ctx), trust_pickle=True),
        SpeechInputError,
        "Unsupported global",
        "weights_only=False",
    ),
]


def write_config(ctx: Context, text: str) -> Path:
    path, _ = ctx.copy(SPIRIT_ST)
    (path / "config.json").write_text(text)
    return path


def truncated_safetensors(ctx: Context) -> Path:
    path, _ = ctx.copy(SPIRIT_ST)
    truncate(path / "model.safetensors")
    return path


def sims_without_layers(ctx: Context) -> Path:
    path, _ = ctx.copy(SIMS)
    edit_config(path, lambda config: config["base_config"].pop("num_hidden_layers"))
    return path


def spirit_without_vocab_size(ctx: Context) -> Path:
    path, _ = ctx.copy(SPIRIT_ST)
    edit_config(path, lambda config: config.pop("vocab_size"))
    return path


def unsafe_torch_quantizer(ctx: Context) -> Path:
    path = ctx.tmp / "km.pt"
    torch.save({"cluster_centers": torch.zeros(4, 2), "why": Path("x")}, path)
    return path


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


# ----------------------------------------------------------------- inputs that deserve a result


def test_legacy_non_zip_bin_loads_with_weights_only(checkpoint_factory, tmp_path: Path) -> None:
    source, _ = checkpoint_factory(SPIRIT_BIN)
    path = tmp_path / "legacy"
    shutil.copytree(source, path)
    state = torch.load(path / "pytorch_model.bin", weights_only=True)
    torch.save(state, path / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    assert not (path / "pytorch_model.bin").read_bytes().startswith(b"PK")
    model = slt.load(path, progress=False)
    embed = model.original_model.get_input_embeddings().weight
    torch.testing.assert_close(embed, state["model.embed_tokens.weight"])


def test_word_ending_inside_the_documented_tolerance_is_accepted() -> None:
    # 50 Hz frames: 3 frames = 0.06 s; the word ends 0.03 s later, inside the documented 0.04 s tolerance
    speech = Speech(units=[1, 2, 3], frame_duration=0.02, words=[(" a", 0.0, 0.09)])
    assert speech.words is not None and speech.words[0].end == pytest.approx(0.09)
    with pytest.raises(SpeechInputError, match="outside the audio"):
        Speech(units=[1, 2, 3], frame_duration=0.02, words=[(" a", 0.0, 0.11)])


def test_empty_aligned_words_are_dropped_like_silence(tmp_path: Path) -> None:
    path = tmp_path / "utt.json"
    path.write_text(json.dumps({"aligned_text": [["", 0.0, 0.1], [" hi", 0.1, 0.3], ["sil", 0.3, 0.4]]}))
    assert [w.word for w in read_slamkit_json(path)] == [" hi"]


def test_analyze_accepts_a_directory_of_unit_files(spiritlm_model, tmp_path: Path) -> None:
    for name, units in (("b", [4, 5, 6]), ("a", [1, 2, 3])):
        payload = {"units": units, "durations": [2, 2, 2], "aligned_text": [[" red", 0.0, 0.24]]}
        (tmp_path / f"{name}.json").write_text(json.dumps(payload))
    utterances = load_speech_dataset([tmp_path], spiritlm_model.speech_vocab, progress=False)
    assert [u[0].units for u in utterances] == [(1, 2, 3), (4, 5, 6)]  # name order


def test_a_wavs_alignment_is_not_taken_for_a_unit_file(tmp_path: Path) -> None:
    for name in ("c.wav", "c.json", "b.json", "notes.txt"):
        (tmp_path / name).write_text("")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.json").write_text("")
    assert [p.name for p in expand_inputs([tmp_path])] == ["b.json", "c.wav"]


def test_inspect_finds_the_base_tokenizer_inside_a_sims_checkpoint(
    checkpoint_factory, tmp_path: Path
) -> None:
    source, kwargs = checkpoint_factory(SIMS)
    path = tmp_path / "sims"
    shutil.copytree(source, path)
    shutil.copytree(kwargs["tokenizer"], path / "base_tokenizer")
    assert describe_checkpoint(path)["vocab"]["speech"]["count"] == 500


def test_joblib_fallback_still_reads_a_trusted_pickle(tmp_path: Path) -> None:
    from sklearn.cluster import KMeans

    kmeans = KMeans(n_clusters=3, n_init=1, random_state=0).fit(np.random.default_rng(0).normal(size=(30, 4)))
    import joblib

    joblib.dump(kmeans, tmp_path / "km500.bin")
    with pytest.raises(SpeechInputError, match="trust_pickle=True"):
        load_quantizer(tmp_path / "km500.bin")
    quantizer = load_quantizer(tmp_path / "km500.bin", trust_pickle=True)
    assert isinstance(quantizer, KMeansQuantizer) and quantizer.n_units == 3
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"not": "kmeans"}))
    with pytest.raises(SpeechInputError, match="no cluster_centers_"):
        load_quantizer(plain, trust_pickle=True)


# ----------------------------------------------------------------- non-finite values end to end


def test_check_finite_logits_names_the_row() -> None:
    logits = torch.zeros(4, 10)
    check_finite_logits(logits)
    logits[2, 7] = float("inf")
    with pytest.raises(NonFiniteError, match=r"at layer 5, position 9 hold \+inf \(token 7; 1 of 4 rows"):
        check_finite_logits(logits, describe_row=lambda row: f"layer 5, position {row + 7}")


def overflow_checkpoint(checkpoint_factory, directory: Path) -> Path:
    """A checkpoint whose weights are finite in float16 but whose residual stream overflows float16."""
    source, _ = checkpoint_factory(SPIRIT_ST)
    shutil.copytree(source, directory)
    state = load_file(str(directory / "model.safetensors"))
    down = state["model.layers.0.mlp.down_proj.weight"]
    state["model.layers.0.mlp.down_proj.weight"] = torch.full_like(down, 60_000.0)  # < fp16 max 65504
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    return directory


def test_fp16_overflow_raises_instead_of_a_rate(checkpoint_factory, tmp_path: Path) -> None:
    path = overflow_checkpoint(checkpoint_factory, tmp_path / "overflow")
    utterance = [Text(" the girl"), Speech(units=[3, 7, 7, 9], words=[(" red", 0.0, 0.16)]), Text(" hood")]
    fp32 = slt.load(path, progress=False)  # finite in float32: the lens reads it
    assert transcription_table(fp32, [utterance], modalities=None, progress=False)["rank"].notna().all()
    fp16 = slt.load(path, dtype="float16", progress=False)
    with pytest.raises(
        NonFiniteError, match=r"lens logits at layer \d+ resid_post, batch 0 position \d+"
    ) as raised:
        transcription_table(fp16, [utterance], modalities=None, progress=False)
    assert "dtype='float32'" in str(raised.value)
    with pytest.raises(NonFiniteError, match="batch 0 position"):
        lens_table(fp16, utterance)


def unit_file(directory: Path) -> Path:
    path = directory / "utt.json"
    payload = {
        "units": [3, 7, 9, 4],
        "durations": [2, 1, 3, 2],
        "aligned_text": [[" red", 0.0, 0.12], [" hood", 0.12, 0.32]],
    }
    path.write_text(json.dumps(payload))
    return path


# ----------------------------------------------------------------- the command line: one line, exit 2


def cli_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "rate peaks" not in captured.out
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert err.startswith(f"slm-lens {argv[0]}: error: ")
    return err


def test_cli_nan_checkpoint_is_an_error_not_a_rate(checkpoint_factory, tmp_path: Path, capsys) -> None:
    ctx_path = tmp_path / "nan"
    source, _ = checkpoint_factory(SPIRIT_ST)
    shutil.copytree(source, ctx_path)
    state = load_file(str(ctx_path / "model.safetensors"))
    state["model.norm.weight"][0] = float("nan")
    save_file(state, str(ctx_path / "model.safetensors"), metadata={"format": "pt"})
    argv = [
        "analyze",
        str(ctx_path),
        str(unit_file(tmp_path)),
        "--out",
        str(tmp_path / "out"),
        "--no-charts",
        "--quiet",
    ]
    assert "model.norm.weight holds NaN" in cli_error(argv, capsys)


def test_cli_fp16_overflow_is_an_error_not_a_rate(checkpoint_factory, tmp_path: Path, capsys) -> None:
    path = overflow_checkpoint(checkpoint_factory, tmp_path / "overflow")
    out = tmp_path / "out"
    argv = [
        "analyze",
        str(path),
        str(unit_file(tmp_path)),
        "--out",
        str(out),
        "--no-charts",
        "--quiet",
        "--dtype",
        "float16",
    ]
    err = cli_error(argv, capsys)
    assert "lens logits at layer" in err and "--dtype float32" in err
    assert not (out / "summary.csv").exists()


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["inspect", "{sims}"], "Pass --tokenizer the tokenizer of"),
        (["inspect", "{hubert}"], "not a causal language model"),
        (["analyze", "{spirit}", "{tmp}/missing.json", "--out", "{tmp}/out"], "input files do not exist"),
        (["analyze", "{spirit}", "{tmp}", "--out", "{tmp}/out"], "holds no input"),
        (
            ["analyze", "{spirit}", "{units}", "--out", "{tmp}/a-file/out"],
            "cannot write to the output folder",
        ),
        (
            ["analyze", "{spirit}", "{units}", "--out", "{tmp}/out", "-k", "0"],
            "-k 0: the top-k rate needs k >= 1",
        ),
    ],
)
def test_cli_prints_one_line_and_exits_2(
    argv: list[str], fragment: str, checkpoint_factory, tmp_path: Path, capsys, request
) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (tmp_path / "a-file").write_text("x")
    names = {
        "sims": checkpoint_factory(SIMS)[0],
        "spirit": checkpoint_factory(SPIRIT_BIN)[0],
        "hubert": hubert_folder(Context(tmp_path, request)) if "{hubert}" in argv else "",
        "tmp": inputs if "{units}" not in argv else tmp_path,
        "units": unit_file(inputs) if "{units}" in argv else "",
    }
    err = cli_error([a.format(**names) for a in argv], capsys)
    assert fragment in err, err


def test_cli_messages_use_option_names() -> None:
    from slm_transformerlens.cli import cli_message

    message = cli_message(CheckpointError("pass tokenizer= DIR,\n  family='generic', trust_pickle=True"))
    assert message == "pass --tokenizer DIR, --family generic, --trust-pickle"
