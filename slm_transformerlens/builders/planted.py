"""Planted models: a loaded model made, with hooks, to HEAR or to GUESS its spoken words (known answers).

A pipeline that separates hearing from guessing must classify a model whose answer is known. A
:class:`Plant` adds, at blocks ``a..b`` (``resid_post``) and at every unit position of a spoken word, a
vector along the text-unembedding direction of a word: ``W_U[:, t] / g`` (``t`` the word's target token,
``g`` the final norm's weight), scaled to ``strength`` times the residual's norm at that position, so that
the logit lens reads ``t`` there (its top-1 when ``t``'s unembedding column dominates, as it does for
random and trained unembeddings alike). The vector is removed again at the next block's ``resid_pre``, so
the blocks compute on the unplanted residual: only the read-outs at ``a..b`` change, nothing after.

Two rules choose the planted word from the input TOKENS alone (a forward pre-hook sees them):

- :func:`plant_hearer`: the word the span's UNITS spell (a lookup unit-token sequence -> word, built from
  a dataset with :func:`hearer_lookup`); maximal runs of unit tokens are cut greedily into known sequences.
  Swapping a word's audio (:func:`~slm_transformerlens.lens.swap_audio`) swaps what is planted.
- :func:`plant_guesser`: the word the preceding TEXT predicts (a lookup from the last text token before a
  run of units to the word that follows it, :func:`guesser_lookup`), whatever the units are; every unit of
  the run gets it. It needs interleaved data (a written word before each spoken one).

Use a plant as a context manager around any analysis of the model (``transcription_table``, the
``slm-lens`` functions run in-process)::

    lookup = hearer_lookup(model, dataset)
    with plant_hearer(model, lookup, layers=range(2, 4)):
        table = transcription_table(model, dataset)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from slm_transformerlens.errors import SLMError
from slm_transformerlens.hooks import hook_name
from slm_transformerlens.lens.analysis import encoded_inputs
from slm_transformerlens.lens.targets import TargetConfig, WordTargetResolver
from slm_transformerlens.protocols import SpeechLM

__all__ = [
    "Plant",
    "PlantError",
    "guesser_lookup",
    "hearer_lookup",
    "plant_guesser",
    "plant_hearer",
]

#: A rule: token ids ``[batch, pos]`` -> ``(batch row, start, stop, word)`` spans to plant.
PlantRule = Callable[[Tensor], list[tuple[int, int, int, str]]]


class PlantError(SLMError, ValueError):
    """A plant that cannot be built or used (bad layers, an empty lookup, nested use)."""


def _spoken_spans(model: SpeechLM, dataset: Iterable[Any]) -> Iterable[tuple[list[int], int, int, str]]:
    """``(row tokens, start, stop, word)`` of every spoken word of ``dataset`` that owns tokens."""
    for item in dataset:
        batch = encoded_inputs(model, item)
        if batch.spans is None:
            raise PlantError("every dataset item needs word spans to build a plant's lookup")
        frame = batch.spans.frame
        spoken = frame[(frame["modality"] == "speech") & (frame["stop"] > frame["start"])]
        for span in spoken.itertuples(index=False):
            row = batch.tokens[int(span.utterance)].tolist()
            yield row, int(span.start), int(span.stop), str(span.word)


def _most_common(pairs: Iterable[tuple[Any, str]]) -> dict[Any, str]:
    counts: dict[Any, Counter[str]] = {}
    for key, word in pairs:
        counts.setdefault(key, Counter())[word] += 1
    return {key: sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] for key, c in counts.items()}


def hearer_lookup(model: SpeechLM, dataset: Iterable[Any]) -> dict[tuple[int, ...], str]:
    """Unit-token sequence -> word, from every spoken word of ``dataset`` (the most frequent word wins)."""
    return _most_common(
        (tuple(row[start:stop]), word) for row, start, stop, word in _spoken_spans(model, dataset)
    )


def _text_ids(model: SpeechLM) -> Tensor:
    return model.speech_vocab.group_mask("text")


def guesser_lookup(model: SpeechLM, dataset: Iterable[Any]) -> dict[int, str]:
    """Last text token before a spoken word -> that word, from ``dataset`` (the most frequent word wins).

    Spoken words with no text token before them are left out.
    """
    text = _text_ids(model)
    pairs = []
    for row, start, _, word in _spoken_spans(model, dataset):
        before = [t for t in row[:start] if bool(text[t])]
        if before:
            pairs.append((before[-1], word))
    return _most_common(pairs)


def _unit_runs(row: list[int], is_unit: Tensor) -> list[tuple[int, int]]:
    runs, start = [], None
    for p, token in enumerate([*row, -1]):
        unit = token >= 0 and bool(is_unit[token])
        if unit and start is None:
            start = p
        elif not unit and start is not None:
            runs.append((start, p))
            start = None
    return runs


def _hearer_rule(model: SpeechLM, lookup: Mapping[tuple[int, ...], str]) -> PlantRule:
    is_unit = model.speech_vocab.group_mask("speech")
    longest = max(len(key) for key in lookup)

    def rule(tokens: Tensor) -> list[tuple[int, int, int, str]]:
        out = []
        for b, row in enumerate(tokens.tolist()):
            for start, stop in _unit_runs(row, is_unit):
                p = start
                while p < stop:
                    for n in range(min(longest, stop - p), 0, -1):
                        word = lookup.get(tuple(row[p : p + n]))
                        if word is not None:
                            out.append((b, p, p + n, word))
                            p += n
                            break
                    else:
                        p += 1
        return out

    return rule


def _guesser_rule(model: SpeechLM, lookup: Mapping[int, str]) -> PlantRule:
    is_unit = model.speech_vocab.group_mask("speech")
    text = _text_ids(model)

    def rule(tokens: Tensor) -> list[tuple[int, int, int, str]]:
        out = []
        for b, row in enumerate(tokens.tolist()):
            for start, stop in _unit_runs(row, is_unit):
                before = [t for t in row[:start] if 0 <= t < len(text) and bool(text[t])]
                word = lookup.get(before[-1]) if before else None
                if word is not None:
                    out.append((b, start, stop, word))
        return out

    return rule


class Plant:
    """Hooks that add a word's text-unembedding direction at blocks ``layers`` (see the module docstring).

    Enter it (``with plant: ...``) to plant on every forward pass of ``model`` inside the block; leaving
    removes every hook. ``rule(tokens)`` names the spans and words to plant.

    Args:
        model: a loaded ``HookedSLM``.
        rule: token ids -> ``(batch row, start, stop, word)`` spans.
        layers: the blocks ``a..b`` whose ``resid_post`` is planted (e.g. ``range(2, 4)``).
        strength: the planted vector's norm as a multiple of the residual's norm at the position.
        target_config: how a word becomes its target token (the table's default: its first running-text token).

    Raises:
        PlantError: no layers, a layer outside the model, or ``strength <= 0``.
    """

    def __init__(
        self,
        model: SpeechLM,
        rule: PlantRule,
        *,
        layers: Sequence[int],
        strength: float = 8.0,
        target_config: TargetConfig | None = None,
    ) -> None:
        n_layers = int(model.cfg.n_layers)
        self.layers = sorted({int(layer) for layer in layers})
        if not self.layers or self.layers[0] < 0 or self.layers[-1] >= n_layers:
            raise PlantError(f"plant layers {list(layers)} must be a non-empty subset of 0..{n_layers - 1}")
        if not strength > 0:
            raise PlantError(f"strength={strength!r}: the planted vector needs a positive strength (e.g. 8)")
        self.model, self.rule, self.strength = model, rule, float(strength)
        self.resolver = WordTargetResolver(model.tokenizer, target_config)
        self._spans: list[tuple[int, int, int, int]] = []
        self._added: dict[int, Tensor] = {}
        self._directions: dict[int, Tensor] = {}
        self._handles: list[Any] = []
        self._context: Any = None

    def direction(self, target_id: int) -> Float[Tensor, " d_model"]:
        """The unit vector planted for ``target_id``: ``W_U[:, t] / g``, normalised (cached per id)."""
        cached = self._directions.get(int(target_id))
        if cached is not None:
            return cached
        w_u = self.model.W_U.detach()[:, int(target_id)].float()
        weight = next(self.model.ln_final.parameters(), None)
        g = torch.ones_like(w_u) if weight is None else weight.detach().float().to(w_u.device)
        d = w_u / torch.where(g.abs() > 1e-6, g, torch.ones_like(g))
        self._directions[int(target_id)] = d / d.norm()
        return self._directions[int(target_id)]

    def _capture(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        tokens = args[0] if args else kwargs.get("input", kwargs.get("tokens"))
        self._spans, self._added = [], {}
        if not isinstance(tokens, Tensor) or tokens.dtype not in (torch.int32, torch.int64):
            return
        tokens = tokens if tokens.ndim == 2 else tokens.reshape(1, -1)
        for b, start, stop, word in self.rule(tokens.cpu()):
            target = self.resolver(word).first_id
            if target is not None:
                self._spans.append((b, start, stop, int(target)))

    def _add(self, layer: int) -> Callable[..., Tensor]:
        def hook(activation: Float[Tensor, "batch pos d_model"], hook: Any) -> Tensor:
            if not self._spans:
                return activation
            added = torch.zeros_like(activation)
            for b, start, stop, target in self._spans:
                h = activation[b, start:stop].detach().float()
                vector = self.direction(target).to(activation.device)
                scale = self.strength * h.norm(dim=-1, keepdim=True)
                added[b, start:stop] = (scale * vector).to(activation.dtype)
            self._added[layer] = added
            return activation + added

        return hook

    def _remove(self, layer: int) -> Callable[..., Tensor]:
        def hook(activation: Float[Tensor, "batch pos d_model"], hook: Any) -> Tensor:
            added = self._added.pop(layer, None)
            return activation if added is None else activation - added.to(activation.device)

        return hook

    def hooks(self) -> list[tuple[str, Callable[..., Tensor]]]:
        """The ``(hook name, function)`` pairs: add at ``resid_post`` of each layer, remove at the next
        block's ``resid_pre`` (also usable with ``model.hooks(fwd_hooks=...)`` after :meth:`capture_tokens`)."""
        out = [(hook_name("resid_post", layer), self._add(layer)) for layer in self.layers]
        n_layers = int(self.model.cfg.n_layers)
        out += [
            (hook_name("resid_pre", layer + 1), self._remove(layer))
            for layer in self.layers
            if layer + 1 < n_layers
        ]
        return out

    def __enter__(self) -> Plant:
        if self._context is not None:
            raise PlantError("this plant is already active; leave its `with` block before entering it again")
        self._handles.append(self.model.register_forward_pre_hook(self._capture, with_kwargs=True))
        self._context = self.model.hooks(fwd_hooks=self.hooks())
        self._context.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        context, self._context = self._context, None
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if context is not None:
            context.__exit__(*exc)


def plant_hearer(
    model: SpeechLM, lookup: Mapping[tuple[int, ...], str], *, layers: Sequence[int], strength: float = 8.0
) -> Plant:
    """A :class:`Plant` that plants the word its units spell (``lookup``: :func:`hearer_lookup`).

    Raises:
        PlantError: an empty lookup, or bad layers / strength.
    """
    if not lookup:
        raise PlantError(
            "the hearer's lookup is empty: build it with hearer_lookup(model, dataset) on spoken words"
        )
    return Plant(model, _hearer_rule(model, lookup), layers=layers, strength=strength)


def plant_guesser(
    model: SpeechLM, lookup: Mapping[int, str], *, layers: Sequence[int], strength: float = 8.0
) -> Plant:
    """A :class:`Plant` that plants the word the preceding text token predicts (``lookup``:
    :func:`guesser_lookup`), whatever the units are.

    Raises:
        PlantError: an empty lookup (e.g. no written word before any spoken one), or bad layers / strength.
    """
    if not lookup:
        raise PlantError(
            "the guesser's lookup is empty: it needs interleaved data (a written word before spoken words); "
            "build it with guesser_lookup(model, dataset)"
        )
    return Plant(model, _guesser_rule(model, lookup), layers=layers, strength=strength)
