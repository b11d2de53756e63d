"""The patchscope lens: read a residual vector by writing it into a text prompt and letting the model run.

Patchscopes (Ghandeharioun et al. 2024) decode a hidden state ``h`` read at ``(layer l, site)`` of a
source run by patching it into a *target prompt* at layer ``l'`` and reading the target prompt's own
next-token distribution. :class:`PatchscopeLens` is a :class:`~slm_transformerlens.lens.Lens`, so
``lens_table``, ``transcription_table``, the controls, reports and ``compare`` take it with ``lens=``.

Conventions (exact, tested against a hand-written TransformerLens loop):

- **Where the vector is written**: the residual at hook ``blocks.{l'}.hook_{site}`` of the placeholder
  position is *replaced* by ``h`` (same site as it was read at; ``resid_pre`` or ``resid_post``). With
  ``l' = l``, the same prompt and the same position, this reproduces the unpatched model exactly.
  ``target_layer`` (default: ``l``) may be an int or a function of ``l``.
- **Where it is read**: the final residual at the placeholder position (``read="placeholder"``, the
  default: the distribution of the token AFTER the placeholder, e.g. the repeated word of an identity
  prompt) or at the prompt's last token (``read="last"``), through the model's own final norm and
  unembedding in float32 (:meth:`Lens.normalized` / :meth:`Lens.unembed`). So every view (text-restricted
  ranks), pooling and control of the logit lens works unchanged.
- **Prefix reuse**: the prompt's prefix (everything before the placeholder) does not depend on the patch
  (causal attention), so its keys and values are computed once and every patched forward runs only the
  placeholder and the tokens after it (``prefix_cache="kv"``, the default; ``"none"`` runs the whole
  prompt per patch). Many patches run per forward, chunked by ``memory_mb``.

Target prompts hold exactly one placeholder ``{x}`` (:data:`PLACEHOLDER`). ``"identity"`` is the few-shot
identity prompt ``cat cat ; dog dog ; {x}``; ``style="family"`` puts the family's text marker (``<text>``
for SIMS, ``[Text]`` for SpiritLM) before it, ``style="plain"`` does not.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from slm_transformerlens import hooks
from slm_transformerlens.lens.base import Lens, LensError
from slm_transformerlens.protocols import SpeechLM

__all__ = [
    "FILLERS",
    "IDENTITY_PROMPT",
    "PLACEHOLDER",
    "PROMPTS",
    "PatchscopeLens",
    "PatchscopePrompt",
    "patchscope_prompt",
]

#: The placeholder a target prompt marks its patched position with.
PLACEHOLDER = "{x}"
#: The default few-shot identity prompt (Patchscopes' "token identity" inspection).
IDENTITY_PROMPT = "cat cat ; dog dog ; hello hello ; {x}"
#: Named target prompts.
PROMPTS: dict[str, str] = {"identity": IDENTITY_PROMPT}
#: Placeholder tokens tried in order when ``filler=None`` (the first that is one token is used).
FILLERS = (" x", "x", " ?", "?", " the", "the")
#: Sites a patchscope can write at.
PATCH_SITES = ("resid_pre", "resid_post")


@dataclass(frozen=True)
class PatchscopePrompt:
    """A tokenised target prompt.

    Attributes:
        tokens: the prompt's token ids (the placeholder is :attr:`filler_id`).
        position: the placeholder's position (where the vector is written).
        read_position: the position whose next-token distribution is read (``position`` or the last).
        text: the template it was built from (``None`` for raw ids).
        style: ``"plain"``, ``"family"`` or ``"ids"``.
    """

    tokens: tuple[int, ...]
    position: int
    read_position: int
    text: str | None = None
    style: str = "ids"

    @property
    def filler_id(self) -> int:
        """The token id standing at the placeholder before the patch."""
        return self.tokens[self.position]


def _encode(tokenizer: Any, text: str) -> list[int]:
    return [int(i) for i in tokenizer(text, add_special_tokens=False)["input_ids"]]


def patchscope_prompt(
    model: SpeechLM,
    prompt: str = "identity",
    *,
    style: str = "plain",
    read: str = "placeholder",
    filler: str | None = None,
) -> PatchscopePrompt:
    """Tokenise a target prompt with exactly one ``{x}`` placeholder.

    The tokens are ``[bos] [text marker] prefix filler suffix``: the family's BOS (if its convention has
    one), the family's text marker with ``style="family"`` (``<text>`` / ``[Text]``), the text before the
    placeholder (with a leading space, as the families write text words), ONE token for the placeholder
    (``filler``, which must be a single token) and the text after it. The pieces are tokenised
    separately, so the placeholder is always its own token.

    Args:
        model: the ``HookedSLM`` (its tokenizer and speech vocabulary).
        prompt: a name of :data:`PROMPTS` (``"identity"``) or a template holding ``{x}`` once.
        style: ``"plain"`` (text only) or ``"family"`` (the family's text marker first).
        read: ``"placeholder"`` (the next-token distribution at the placeholder) or ``"last"``.
        filler: the placeholder's token before the patch (matters only for ``read="last"``); ``None``:
            the first of :data:`FILLERS` that is one token.

    Raises:
        LensError: no or several placeholders, an unknown style / read, a filler of several tokens, a
            family style on a model without a text marker.
    """
    template = PROMPTS.get(prompt, prompt)
    count = template.count(PLACEHOLDER)
    if count != 1:
        raise LensError(
            f"a patchscope prompt needs exactly one placeholder {PLACEHOLDER!r}, found {count} in {template!r}; "
            f"write e.g. {IDENTITY_PROMPT!r} or use prompt='identity'"
        )
    if style not in ("plain", "family"):
        raise LensError(f"unknown patchscope prompt style {style!r}; use 'plain' or 'family'")
    if read not in ("placeholder", "last"):
        raise LensError(f"unknown patchscope read position {read!r}; use 'placeholder' or 'last'")
    tokenizer = getattr(model, "tokenizer", None)
    vocab = model.speech_vocab
    if tokenizer is None:
        raise LensError("the model has no tokenizer: pass a PatchscopePrompt of token ids instead")
    prefix_text, suffix_text = template.split(PLACEHOLDER)
    ids: list[int] = []
    if vocab.bos_token_id is not None:
        ids.append(int(vocab.bos_token_id))
    if style == "family":
        if "text" not in vocab.markers:
            raise LensError(
                f"this {vocab.family!r} model has no text marker, so style='family' means nothing; use style='plain'"
            )
        ids.append(int(vocab.markers["text"]))
    prefix_text = prefix_text.strip()
    if prefix_text:
        ids += _encode(tokenizer, " " + prefix_text)
    if filler is None:
        filler = next((f for f in FILLERS if len(_encode(tokenizer, f)) == 1), FILLERS[0])
    filler_ids = _encode(tokenizer, filler)
    if len(filler_ids) != 1:
        raise LensError(
            f"the placeholder filler {filler!r} is {len(filler_ids)} tokens; pass filler= one token"
        )
    if not ids:
        raise LensError("the placeholder is the first token: put some text (or a BOS) before it")
    position = len(ids)
    ids += filler_ids
    if suffix_text.rstrip():
        ids += _encode(tokenizer, suffix_text.rstrip())
    read_position = position if read == "placeholder" else len(ids) - 1
    return PatchscopePrompt(tuple(ids), position, read_position, template, style)


def _cache_kwarg(hf: torch.nn.Module) -> str:
    """The name the Hugging Face model's forward takes its key/value cache by (``cache`` from
    transformers 5.2x, ``past_key_values`` before)."""
    params = inspect.signature(hf.base_model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


@contextlib.contextmanager
def _bridge_cache(model: Any) -> Iterator[None]:
    """Hand the key/value cache to the bridge's attention components under the name they read.

    TransformerLens' attention bridges read ``past_key_values`` from their keyword arguments; recent
    transformers pass the cache to the attention as ``cache``, which the bridge ignores (attending only
    to the new tokens). A forward pre-hook copies it across for the duration of the block.
    """

    def alias(module: torch.nn.Module, args: Any, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        if kwargs.get("past_key_values") is None and kwargs.get("cache") is not None:
            kwargs = {**kwargs, "past_key_values": kwargs["cache"]}
        return args, kwargs

    handles = [
        block.attn.register_forward_pre_hook(alias, with_kwargs=True)
        for block in getattr(model, "blocks", [])
        if hasattr(block, "attn")
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class PatchscopeLens(Lens):
    """Decode residual vectors by patching them into a target prompt (see the module docstring).

    Example:
        >>> lens = PatchscopeLens(model)  # identity prompt, target layer = source layer  # doctest: +SKIP
        >>> table = transcription_table(model, data, lens=lens, positions="any")  # doctest: +SKIP

    Args:
        model: a ``HookedSLM`` (a TransformerBridge over a Hugging Face causal LM).
        prompt: a name of :data:`PROMPTS`, a template with one ``{x}``, or a :class:`PatchscopePrompt`.
        style: ``"plain"`` or ``"family"`` (the family's text marker first), see :func:`patchscope_prompt`.
        read: ``"placeholder"`` (default) or ``"last"``.
        target_layer: the layer ``l'`` written at: ``None`` (= the source layer), an int, or a function
            of the source layer.
        prefix_cache: ``"kv"`` (default: the prefix's keys and values computed once) or ``"none"``.
        memory_mb: the memory budget of one batched forward (patches per forward follow from it).
        max_batch: at most this many patches per forward (``None``: the budget decides).
        progress: a tqdm bar when a read-out takes several forwards.
        readout_precision: see :class:`~slm_transformerlens.lens.Lens`.
    """

    def __init__(
        self,
        model: SpeechLM,
        prompt: str | PatchscopePrompt = "identity",
        *,
        style: str = "plain",
        read: str = "placeholder",
        target_layer: int | Callable[[int], int] | None = None,
        prefix_cache: str = "kv",
        memory_mb: float = 512.0,
        max_batch: int | None = None,
        progress: bool = True,
        readout_precision: str | None = None,
    ) -> None:
        super().__init__(model, readout_precision=readout_precision)
        self.prompt = (
            prompt
            if isinstance(prompt, PatchscopePrompt)
            else patchscope_prompt(model, prompt, style=style, read=read)
        )
        if not 0 < self.prompt.position <= self.prompt.read_position < len(self.prompt.tokens):
            raise LensError(
                f"a PatchscopePrompt needs 0 < position <= read_position < len(tokens), got position "
                f"{self.prompt.position}, read_position {self.prompt.read_position} for {len(self.prompt.tokens)} "
                "tokens; build it with patchscope_prompt(model, template)"
            )
        if prefix_cache not in ("kv", "none"):
            raise LensError(f"prefix_cache must be 'kv' or 'none', got {prefix_cache!r}")
        if memory_mb <= 0 or (max_batch is not None and max_batch < 1):
            raise LensError(f"memory_mb must be > 0 and max_batch >= 1 (got {memory_mb}, {max_batch})")
        hf = getattr(model, "original_model", None)
        if not isinstance(hf, torch.nn.Module):
            raise LensError(
                f"{type(model).__name__} exposes no Hugging Face `original_model`; a PatchscopeLens needs a "
                "TransformerBridge (e.g. slt.load(...))"
            )
        self.target_layer = target_layer
        self.prefix_cache = prefix_cache
        self.memory_mb = float(memory_mb)
        self.max_batch = max_batch
        self.progress = progress
        self._prefix: tuple[Any, list[tuple[Tensor, Tensor]]] | None = None

    # ------------------------------------------------------------------ layout
    def target_of(self, layer: int) -> int:
        """The layer ``l'`` a vector read at ``layer`` is written at."""
        chosen = self.target_layer
        target = int(layer) if chosen is None else int(chosen(int(layer)) if callable(chosen) else chosen)
        if not 0 <= target < self.n_layers:
            raise LensError(
                f"target layer {target} (for source layer {layer}) is out of range 0..{self.n_layers - 1}; "
                "fix target_layer="
            )
        return target

    def rows_per_forward(self) -> int:
        """Patches per batched forward: what ``memory_mb`` holds (an estimate), at most ``max_batch``."""
        cfg = self.model.cfg
        n_new = len(self.prompt.tokens) - (self.prompt.position if self.prefix_cache == "kv" else 0)
        n_ctx = len(self.prompt.tokens)
        width = max(int(getattr(cfg, "d_mlp", 0) or 0), self.d_model)
        n_heads = int(getattr(cfg, "n_heads", 1) or 1)
        elements = 2 * self.n_layers * n_ctx * self.d_model + n_new * (6 * width + n_heads * n_ctx)
        element_size = next(self.model.original_model.parameters()).element_size()
        rows = int(self.memory_mb * 2**20 // max(1, elements * element_size))
        return max(1, min(rows, self.max_batch or rows))

    # ------------------------------------------------------------------ the read-out
    def transform_hidden(
        self, h: Float[Tensor, "... d_model"], layer: int, site: str = "resid_post"
    ) -> Float[Tensor, "... d_model"]:
        """The target prompt's final residual (before the final norm) at the read position, float32,
        with each vector of ``h`` written at the placeholder of layer :meth:`target_of` ``(layer)``."""
        if site not in PATCH_SITES:
            raise LensError(
                f"a patchscope writes at {list(PATCH_SITES)}, not {site!r}; read that site instead"
            )
        target = self.target_of(layer)
        lead = h.shape[:-1]
        flat = h.reshape(-1, h.shape[-1])
        rows = self.rows_per_forward()
        starts = range(0, int(flat.shape[0]), rows)
        show = self.progress and len(starts) > 4
        outs = [
            self._forward(flat[s : s + rows], target, site)
            for s in tqdm(starts, desc=f"patchscope layer {layer}", disable=not show, leave=False)
        ]
        out = torch.cat(outs) if outs else flat.new_zeros((0, self.d_model), dtype=torch.float32)
        return out.float().to(self.device).reshape(*lead, self.d_model)

    def _forward(self, vectors: Tensor, layer: int, site: str) -> Tensor:
        """One batched forward: row ``i`` gets ``vectors[i]`` at the placeholder; final residual at the read."""
        model, hf = self.model, self.model.original_model
        weight = next(hf.parameters())
        n = int(vectors.shape[0])
        tokens = torch.tensor(self.prompt.tokens, dtype=torch.long, device=weight.device)
        start = self.prompt.position if self.prefix_cache == "kv" else 0
        new = tokens[start:].unsqueeze(0).expand(n, -1)
        offset, read = self.prompt.position - start, self.prompt.read_position - start
        captured: list[Tensor] = []

        def write(act: Tensor, hook: Any) -> Tensor:
            act = act.clone()
            act[:, offset] = vectors.to(device=act.device, dtype=act.dtype)
            return act

        def capture(act: Tensor, hook: Any) -> None:
            captured.append(act[:, read].detach())

        last = hooks.hook_name("resid_post", self.n_layers - 1)
        fwd_hooks = [(hooks.hook_name(site, layer), write), (last, capture)]
        kwargs: dict[str, Any] = {"use_cache": False}
        if start:
            kwargs = {_cache_kwarg(hf): self._expanded_prefix(n), "use_cache": True}
        with torch.no_grad(), model.hooks(fwd_hooks=fwd_hooks), _bridge_cache(model):
            hf.base_model(input_ids=new, **kwargs)
        return captured[-1]

    # ------------------------------------------------------------------ the prefix cache
    def _expanded_prefix(self, n: int) -> Any:
        """A fresh cache holding the prefix's keys and values for ``n`` rows (the forward appends to it)."""
        from transformers.cache_utils import DynamicCache

        hf = self.model.original_model
        key = tuple((p.data_ptr(), p._version) for p in hf.parameters())
        if self._prefix is None or self._prefix[0] != key:
            self._prefix = None
            weight = next(hf.parameters())
            prefix = torch.tensor(self.prompt.tokens[: self.prompt.position], device=weight.device)[None]
            cache = DynamicCache(config=hf.config)
            with torch.no_grad(), _bridge_cache(self.model):
                hf.base_model(input_ids=prefix, use_cache=True, **{_cache_kwarg(hf): cache})
            if cache.get_seq_length() != prefix.shape[1]:
                raise LensError(
                    "the bridge did not fill the prefix's key/value cache with this transformers version; "
                    "use PatchscopeLens(..., prefix_cache='none')"
                )
            layers = [(layer.keys, layer.values) for layer in cache.layers]
            self._prefix = (key, layers)
        data = [(k.expand(n, *k.shape[1:]), v.expand(n, *v.shape[1:])) for k, v in self._prefix[1]]
        return DynamicCache(data, config=hf.config)

    def extra_repr(self) -> str:
        return (
            f"prompt={self.prompt.text!r}, style={self.prompt.style!r}, position={self.prompt.position}, "
            f"read_position={self.prompt.read_position}, target_layer={self.target_layer!r}, "
            f"prefix_cache={self.prefix_cache!r}"
        )
