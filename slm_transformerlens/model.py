"""HookedSLM: a TransformerLens ``TransformerBridge`` that knows its speech vocabulary.

``HookedSLM`` IS a :class:`transformer_lens.model_bridge.TransformerBridge`, so every
TransformerLens tool accepts it; it adds :attr:`HookedSLM.speech_vocab` and speech-aware
inputs (``Speech`` / ``Text`` segments) to ``to_tokens``, ``forward``, ``run_with_cache``,
``run_with_hooks``, ``to_str_tokens``, ``to_string``, ``test_prompt`` and ``generate``. Its caches do
exact norm maths on the raw bridge, and TransformerLens' own patching refuses unequal-length speech
pairs (:mod:`slm_transformerlens.interop`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Int
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from slm_transformerlens.checkpoints import LoadedCheckpoint, LoadOptions, read_checkpoint
from slm_transformerlens.checkpoints.build import check_dtype_supported, resolve_dtype
from slm_transformerlens.checkpoints.placement import DeviceMap, check_placement_request
from slm_transformerlens.errors import VocabularyError
from slm_transformerlens.vocab import SpeechVocab

if TYPE_CHECKING:
    from slm_transformerlens.spans import EncodedBatch

__all__ = [
    "HookedSLM",
    "attach_checkpoint",
    "bridge_from_checkpoint",
    "load",
    "prepare_tokenizer",
    "read_from_disk",
    "speech_forward_args",
]


class HookedSLM(TransformerBridge):
    """A TransformerBridge over a speech LM, with its :class:`SpeechVocab`.

    Build one with :func:`load`. Integer token tensors are used verbatim (as in
    TransformerLens); ``Speech`` / ``Text`` inputs (and lists and batches of them) are encoded
    with the checkpoint family's conventions, right-padded, with an attention mask.

    Attributes:
        speech_vocab: which ids are text, speech units, markers, and the rest.
        checkpoint_family: ``"sims"``, ``"spiritlm"`` or ``"generic"``.
        checkpoint_path: the directory the model was read from (``None`` if built in memory).
        checkpoint_metadata: family-specific facts (base model name, weight format, ...).
    """

    speech_vocab: SpeechVocab
    checkpoint_family: str
    checkpoint_path: Path | None
    checkpoint_metadata: dict[str, Any]

    # ------------------------------------------------------------------ speech inputs
    def encode(self, speech_input: Any) -> EncodedBatch:
        """Encode ``Speech`` / ``Text`` segments (one utterance or a batch) into tokens + word spans.

        Returns:
            An ``EncodedBatch`` with ``tokens`` [batch, pos], ``attention_mask`` and the
            ``word_spans`` table (one row per word: its modality and token positions).
        """
        from slm_transformerlens.speech.interleave import encode_utterances

        return encode_utterances(
            speech_input,
            self.speech_vocab,
            self.tokenizer,
            n_ctx=getattr(self.cfg, "n_ctx", None),
            pad_id=self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else None,
        )

    def to_tokens(self, input: Any, *args: Any, **kwargs: Any) -> Int[Tensor, "batch pos"]:
        """Tokens of a string (as TransformerLens does) or of ``Speech`` / ``Text`` inputs."""
        if _is_speech_input(input):
            tokens = self.encode(input).tokens
            return tokens.to(self.cfg.device) if kwargs.get("move_to_device", True) else tokens
        return super().to_tokens(input, *args, **kwargs)

    def forward(self, input: Any, *args: Any, **kwargs: Any) -> Any:
        """TransformerBridge's forward, also accepting ``Speech`` / ``Text`` inputs."""
        if _is_speech_input(input):
            input, kwargs = speech_forward_args(self, input, kwargs)
        elif isinstance(input, Tensor) and not input.is_floating_point() and input.numel():
            self._check_token_range(input)
        return super().forward(input, *args, **kwargs)

    def to_str_tokens(self, input: Any, *args: Any, **kwargs: Any) -> Any:
        """TransformerLens' ``to_str_tokens``, also for ``Speech`` / ``Text`` inputs (padding left out)."""
        if _is_speech_input(input):
            from slm_transformerlens.interop import generation

            return generation.to_str_tokens(self, input)
        return super().to_str_tokens(input, *args, **kwargs)

    def to_string(self, tokens: Any) -> Any:
        """TransformerLens' ``to_string``, also for ``Speech`` / ``Text`` inputs (their decoded string, which
        the Hugging Face tokenizer turns back into exactly their tokens: the BOS is not doubled)."""
        if _is_speech_input(tokens):
            from slm_transformerlens.interop import generation

            return generation.to_string(self, tokens)
        return super().to_string(tokens)

    def generate(self, input: Any = "", *args: Any, **kwargs: Any) -> Any:
        """TransformerBridge's ``generate``, also for ``Speech`` / ``Text`` inputs.

        A batch of utterances is LEFT-padded with an attention mask, so each continues from its own
        last token; a right-padded token batch without ``attention_mask`` is refused
        (:mod:`slm_transformerlens.interop.generation`). It runs without the past-key-value cache, whose
        output differs from Hugging Face's greedy ``generate`` on transformer-lens 4.3
        (``use_past_kv_cache=True`` is refused).
        """
        from slm_transformerlens.interop import generation

        if _is_speech_input(input):
            return generation.generate(self, input, super().generate, *args, **kwargs)
        if isinstance(input, Tensor):
            generation.check_not_right_padded(self, input, kwargs.get("attention_mask"))
        return super().generate(input, *args, **generation.no_kv_cache(kwargs))

    def test_prompt(self, prompt: Any, answer: Any, **kwargs: Any) -> Any:
        """How the model ranks each token of ``answer`` after ``prompt`` (TransformerLens' ``test_prompt``).

        ``Speech`` / ``Text`` prompts are encoded with the family's conventions and a per-token table
        is returned (:func:`slm_transformerlens.interop.generation.test_prompt`). A string prompt is read
        as ``Text(prompt)`` (with the family's text marker, as the model saw text in training), so it works
        on every TransformerLens version (4 moved ``utils.test_prompt``).
        """
        from slm_transformerlens.interop import generation

        if isinstance(prompt, str):
            from slm_transformerlens.speech.inputs import Text

            prompt = Text(prompt)
        elif not _is_speech_input(prompt):
            from slm_transformerlens.interop import InteropError

            raise InteropError(
                f"test_prompt takes a string or Speech / Text segments as the prompt, got "
                f"{type(prompt).__name__}; decode tokens with model.to_string(tokens) first"
            )
        return generation.test_prompt(self, prompt, answer, **kwargs)

    def run_with_hooks(self, *args: Any, **kwargs: Any) -> Any:
        """TransformerBridge's ``run_with_hooks``; TransformerLens patching hooks are length-checked.

        ``transformer_lens.patching`` copies clean activations by position; on a speech pair of unequal
        lengths that mixes words, so it raises :class:`~slm_transformerlens.interop.InteropError`
        pointing to ``PatchPair`` (:mod:`slm_transformerlens.interop.tl_patching`).
        """
        from slm_transformerlens.interop.tl_patching import guard_patching_hooks

        if len(args) >= 2:
            args = (args[0], guard_patching_hooks(args[1]), *args[2:])
        elif kwargs.get("fwd_hooks"):
            kwargs["fwd_hooks"] = guard_patching_hooks(kwargs["fwd_hooks"])
        return super().run_with_hooks(*args, **kwargs)

    def run_with_cache(self, *args: Any, **kwargs: Any) -> Any:
        """TransformerBridge's ``run_with_cache``; its cache's norm maths include the norm weights.

        ``apply_ln_to_stack`` / ``logit_attrs`` of the returned cache are exact on this raw bridge
        (see :mod:`slm_transformerlens.interop.cache_maths`) and unchanged in compatibility mode.
        """
        from slm_transformerlens.interop.cache_maths import with_norm_weights

        output, cache = super().run_with_cache(*args, **kwargs)
        return output, with_norm_weights(cache)

    def _check_token_range(self, tokens: Int[Tensor, "..."]) -> None:
        low, high = int(tokens.min()), int(tokens.max())
        if low < 0 or high >= self.speech_vocab.vocab_size:
            bad = low if low < 0 else high
            raise VocabularyError(
                f"token id {bad} is outside this model's vocabulary [0, {self.speech_vocab.vocab_size}); "
                "were the tokens made with another model's tokenizer or unit offset?"
            )

    def __repr__(self) -> str:
        return (
            f"HookedSLM(family={self.checkpoint_family!r}, architecture={self.cfg.architecture!r}, "
            f"n_layers={self.cfg.n_layers}, d_model={self.cfg.d_model}, d_vocab={self.cfg.d_vocab}, "
            f"n_units={self.speech_vocab.n_units})"
        )


def speech_forward_args(model: Any, input: Any, kwargs: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
    """The token tensor of ``Speech`` / ``Text`` input on the model's device, and ``kwargs`` with the
    padding mask added when the batch is padded and the caller passed none (shared by every model class
    that accepts speech inputs in ``forward``)."""
    encoded = model.encode(input)
    kwargs = dict(kwargs)
    if kwargs.get("attention_mask") is None and bool((encoded.attention_mask == 0).any()):
        kwargs["attention_mask"] = encoded.attention_mask.to(model.cfg.device)
    return encoded.tokens.to(model.cfg.device), kwargs


def _is_speech_input(value: Any) -> bool:
    if isinstance(value, (str, Tensor)):
        return False
    from slm_transformerlens.speech.interleave import is_speech_input

    return is_speech_input(value)


def bridge_from_checkpoint(loaded: LoadedCheckpoint) -> HookedSLM:
    """Wrap a read checkpoint in a :class:`HookedSLM` (no weights are copied).

    Follows ``transformer_lens.model_bridge.sources.build_bridge_from_module`` step by step, on
    transformer-lens 4.x and 3.9 alike, but instantiates our subclass, fixes config fields the bridge
    derives wrongly and prepares the tokenizer without a reload (:func:`prepare_tokenizer`). On 4.x
    the bridge gets a ``TransformersDriver``; 3.9 has no driver layer.
    """
    from transformer_lens.factories.architecture_adapter_factory import ArchitectureAdapterFactory
    from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_config_from_hf

    model = loaded.hf_model
    parameter = next(model.parameters())
    bridge_config = build_bridge_config_from_hf(
        loaded.hf_config, loaded.architecture, _model_name(loaded), parameter.dtype
    )
    _fix_rotary_base(bridge_config, loaded.hf_config)
    adapter = ArchitectureAdapterFactory.select_architecture_adapter(bridge_config)
    adapter.cfg.device = str(model.get_input_embeddings().weight.device)  # where the inputs go
    device_map = getattr(model, "hf_device_map", None)
    if device_map and hasattr(adapter.cfg, "n_devices"):  # split: TransformerLens gathers on cfg.device
        adapter.cfg.n_devices = len(set(device_map.values()))
    adapter.prepare_model(model)
    tokenizer = prepare_tokenizer(loaded.tokenizer, adapter.cfg, loaded.speech_vocab)
    try:
        from transformer_lens.model_bridge.sources.transformers_driver import TransformersDriver
    except ImportError:  # transformer-lens 3.x
        bridge = HookedSLM(model, adapter, tokenizer)
    else:
        bridge = HookedSLM(model, adapter, tokenizer, driver=TransformersDriver(model, adapter, tokenizer))
    if device_map:
        _align_component_inputs(bridge, model)
    return attach_checkpoint(bridge, loaded)


def _align_component_inputs(bridge: Any, hf_model: Any) -> None:
    """On a split model, move each mapped component's inputs to its device BEFORE the bridge runs it.

    accelerate's hooks sit on the Hugging Face modules, but some bridge components compute around them
    (the final norm's hooked maths reads its weight directly): a pre-hook on the bridge component makes
    every such input land on the component's device, and the hooks inside it (``hook_resid_pre``,
    ``ln_final.hook_scale``) see it there.
    """
    from accelerate.utils import send_to_device

    modules = dict(hf_model.named_modules())
    placed = {id(modules[name]): device for name, device in hf_model.hf_device_map.items() if name in modules}
    skip = getattr(hf_model, "_skip_keys_device_placement", None)
    for component in bridge.modules():
        original = component.__dict__.get("_modules", {}).get("_original_component")
        if original is None or id(original) not in placed:
            continue
        device = torch.device(placed[id(original)])

        def move(module: Any, args: Any, kwargs: Any, device: torch.device = device) -> Any:
            return send_to_device(args, device), send_to_device(kwargs, device, skip_keys=skip)

        component.register_forward_pre_hook(move, with_kwargs=True)


def attach_checkpoint(bridge: Any, loaded: LoadedCheckpoint) -> Any:
    """Give a freshly built bridge its ``speech_vocab`` and checkpoint facts, and put it in eval mode."""
    bridge.__dict__["speech_vocab"] = loaded.speech_vocab
    bridge.__dict__["checkpoint_family"] = loaded.family
    bridge.__dict__["checkpoint_path"] = loaded.path
    bridge.__dict__["checkpoint_metadata"] = dict(loaded.metadata)
    bridge.eval()
    return bridge


def prepare_tokenizer(
    tokenizer: Any, cfg: Any, vocab: SpeechVocab | None = None, *, padding_side: str = "right"
) -> Any:
    """Ready a speech LM tokenizer for TransformerLens WITHOUT reloading or growing it.

    TransformerLens (3.9 and 4.x: ``configure_tokenizer`` / ``get_tokenizer_with_bos``) reloads a
    tokenizer whose ``add_bos_token`` is unset from its ``name_or_path``. For a SIMS tokenizer (a base
    tokenizer extended in memory with ``<Un0>``..) that reload returns the BASE tokenizer: the unit and
    marker tokens are silently lost (Llama-3: 128759 -> 128257 tokens). It may also add special tokens,
    growing the vocabulary past the embedding. Here the tokenizer is used as it is.

    Sets ``padding_side`` (our encoder right-pads, as TransformerLens' string path does), uses EOS as
    the pad token when there is none, records the real BOS/EOS behaviour in
    ``cfg.tokenizer_prepends_bos`` / ``cfg.tokenizer_appends_eos`` and, given ``vocab``, the family's
    BOS convention in ``cfg.default_prepend_bos``.

    Returns:
        The same tokenizer object.

    Raises:
        TypeError: ``tokenizer`` is not a Hugging Face tokenizer.
        VocabularyError: the tokenizer does not have ``vocab.tokenizer_size`` tokens.
    """
    from transformer_lens.model_bridge.sources._bridge_builder import detect_tokenizer_bos_eos
    from transformers import PreTrainedTokenizerBase

    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        raise TypeError(f"expected a Hugging Face tokenizer, got {type(tokenizer).__name__}")
    size = len(tokenizer)
    tokenizer.padding_side = padding_side
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    prepends_bos, appends_eos = detect_tokenizer_bos_eos(tokenizer)
    cfg.tokenizer_prepends_bos, cfg.tokenizer_appends_eos = bool(prepends_bos), bool(appends_eos)
    if vocab is not None:
        cfg.default_prepend_bos = vocab.bos_token_id is not None
        if len(tokenizer) != size or size != vocab.tokenizer_size:
            raise VocabularyError(
                f"the tokenizer has {len(tokenizer)} tokens but the checkpoint's vocabulary expects "
                f"{vocab.tokenizer_size}; pass the tokenizer this checkpoint was read with"
            )
    return tokenizer


def _model_name(loaded: LoadedCheckpoint) -> str:
    return f"{loaded.family}:{loaded.path.name}"


def _fix_rotary_base(bridge_config: Any, hf_config: Any) -> None:
    """TransformerLens reads only a top-level ``rope_theta``; transformers 5 keeps it in rope_parameters."""
    rope = getattr(hf_config, "rope_parameters", None) or {}
    theta = rope.get("rope_theta") if isinstance(rope, dict) else None
    if theta is None:
        theta = getattr(hf_config, "rope_theta", None)
    if theta is not None and hasattr(bridge_config, "rotary_base"):
        bridge_config.rotary_base = float(theta)


def load(
    path: str | Path,
    *,
    family: str | None = None,
    tokenizer: Any = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    unit_format: str | None = None,
    marker_tokens: dict[str, str] | None = None,
    progress: bool = True,
    device_map: DeviceMap | None = None,
    n_devices: int | None = None,
) -> HookedSLM:
    """Load a speech LM checkpoint from disk as a :class:`HookedSLM` (a TransformerBridge).

    Args:
        path: the checkpoint directory.
        family: ``"sims"``, ``"spiritlm"`` or ``"generic"``; detected from the files when ``None``.
        tokenizer: a tokenizer or a local tokenizer directory. Required for SIMS (the BASE text
            tokenizer, e.g. Qwen2.5's, which is extended with the units as slamkit does);
            optional otherwise (the checkpoint's own tokenizer is used).
        device: where to put the model (default CPU). Not with ``device_map`` / ``n_devices``.
        dtype: parameter dtype (default float32; ``"auto"`` takes the checkpoint's stored dtype).
        unit_format: unit token format for the generic family, e.g. ``"<Un{}>"`` or ``"<{}>"``.
        marker_tokens: marker token strings for the generic family, ``{"text": ..., "speech": ...}``.
        progress: show a progress bar while reading weights.
        device_map: split a model too large for one device: ``"auto"``, ``"balanced"``,
            ``"balanced_low_0"``, ``"sequential"`` (accelerate's strategies, from free memory), or a dict of
            Hugging Face module name -> device, e.g. ``{"model.embed_tokens": "cuda:0", "model.layers.0":
            "cuda:0", "model.layers.1": "cuda:1", "model.norm": "cuda:1", "lm_head": "cuda:1"}``. Each
            weight is read straight onto its device and each module computes there (a ``"cpu"`` entry
            runs on the CPU, it is not offloaded); inputs go to ``model.cfg.device`` (the input
            embedding's), lens read-outs run in float32 on the unembedding's device. Needs accelerate.
        n_devices: TransformerLens' shorthand: ``"balanced"`` over the first ``n_devices`` GPUs.

    Returns:
        The model in eval mode, with ``model.speech_vocab``.

    Raises:
        slm_transformerlens.errors.SLMError: subclasses name the problem (missing files or
            shards, unknown architecture, tokenizer/model vocabulary mismatch, unsupported dtype;
            :class:`~slm_transformerlens.checkpoints.placement.DevicePlacementError` for ``device`` with
            ``device_map``, accelerate missing, an unknown or absent device in the map).

    Example:
        >>> model = slt.load("ckpt/SIMS-Llama3.2-3B", tokenizer="tok/Llama-3.2-3B")  # doctest: +SKIP
        >>> logits, cache = model.run_with_cache(tokens)  # doctest: +SKIP
        >>> big = slt.load("ckpt/spirit-lm-base-7b", dtype="bfloat16", device_map="auto")  # doctest: +SKIP
    """
    return bridge_from_checkpoint(
        read_from_disk(
            path,
            family=family,
            tokenizer=tokenizer,
            device=device,
            dtype=dtype,
            unit_format=unit_format,
            marker_tokens=marker_tokens,
            progress=progress,
            device_map=device_map,
            n_devices=n_devices,
        )
    )


def read_from_disk(
    path: str | Path,
    *,
    family: str | None = None,
    tokenizer: Any = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    unit_format: str | None = None,
    marker_tokens: dict[str, str] | None = None,
    progress: bool = True,
    device_map: DeviceMap | None = None,
    n_devices: int | None = None,
) -> LoadedCheckpoint:
    """Read a checkpoint directory into a plain Hugging Face model + tokenizer (the arguments of :func:`load`)."""
    split = check_placement_request(device, device_map, n_devices)
    torch_device = torch.device(device) if device is not None else torch.device("cpu")
    from slm_transformerlens.checkpoints.build import directory_of

    directory = directory_of(path)
    torch_dtype = resolve_dtype(dtype, _stored_config(directory))
    if not split:  # a split checks each device of its map once it is resolved
        check_dtype_supported(torch_dtype, torch_device)
    options = LoadOptions(
        tokenizer=tokenizer,
        device=torch_device,
        dtype=torch_dtype,
        unit_format=unit_format,
        marker_tokens=marker_tokens,
        progress=progress,
        device_map=device_map,
        n_devices=n_devices,
    )
    return read_checkpoint(directory, options, family=family)


def _stored_config(directory: Path) -> Any:
    """The config.json contents as an attribute bag (for ``dtype='auto'``)."""
    from types import SimpleNamespace

    from slm_transformerlens.checkpoints.files import read_json

    path = directory / "config.json"
    data = read_json(path, what="model config") if path.is_file() else {}
    base = data.get("base_config") if isinstance(data.get("base_config"), dict) else data
    return SimpleNamespace(dtype=base.get("dtype") or data.get("dtype"), torch_dtype=base.get("torch_dtype"))
