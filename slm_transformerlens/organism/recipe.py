"""The organism's recipe: every size and setting of the build and training stages, and its variants.

Imports nothing but the standard library, so that the training stage runs on a machine that has only
torch / transformers / safetensors / numpy / pandas / tokenizers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

__all__ = [
    "HEAR_HELDOUT_VOICE",
    "HEAR_NEW_VOICE",
    "HEAR_TRAIN_VOICES",
    "HELDOUT_VOICE",
    "RECIPES",
    "TRAIN_VOICES",
    "VARIANTS",
    "Recipe",
    "Variant",
]

#: espeak voices (language voice, variant) used for training; rate / pitch / range are drawn per utterance.
TRAIN_VOICES: tuple[tuple[str, str], ...] = (
    ("en-US", "m1"),
    ("en-US", "f2"),
    ("en-GB-scotland", "m3"),
    ("en-029", "f1"),
    ("en", "m2"),
    ("en-GB-x-gbclan", "f4"),
    ("en-US-nyc", "m4"),
    ("en-GB-x-gbcwmd", "m5"),
)
#: The evaluation voice: a language voice and a variant never used in training, at fixed settings.
HELDOUT_VOICE: tuple[str, str, int, int, int] = ("en-GB-x-rp", "m7", 165, 50, 50)
#: The ``hear`` recipe's training voices: American, New York, Caribbean and Scottish accents only.
HEAR_TRAIN_VOICES: tuple[tuple[str, str], ...] = (
    ("en-US", "m1"),
    ("en-US", "f2"),
    ("en-US-nyc", "m4"),
    ("en-029", "f1"),
    ("en-GB-scotland", "m3"),
    ("en-US", "m2"),
)
#: The ``hear`` recipe's held-out voice: an English RP accent (no British voice is trained) with rate,
#: pitch and range outside the training ranges.
HEAR_HELDOUT_VOICE: tuple[str, str, int, int, int] = ("en-GB-x-rp", "m7", 230, 88, 92)
#: The ``hear`` recipe's second unseen voice, speaking new passages: Lancashire accent, low and slow.
HEAR_NEW_VOICE: tuple[str, str, int, int, int] = ("en-GB-x-gbclan", "f5", 115, 10, 95)


@dataclass(frozen=True)
class Variant:
    """A trained model of the recipe: initialisation and the phase-2 mixture (fractions of sequences).

    ``phase2=False`` is the untrained-units baseline: the phase-1 text LM with random unit rows.
    """

    name: str
    text_init: bool = True
    text: float = 0.0
    interleaved: float = 0.0
    speech: float = 0.0
    phase2: bool = True
    description: str = ""


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("main", True, 0.25, 0.5, 0.25, description="text-LM init + interleaved SIMS mixture"),
        Variant("random_init", False, 0.25, 0.5, 0.25, description="random init + the same SIMS mixture"),
        Variant("speech_only", True, 0.0, 0.0, 1.0, description="text-LM init + speech-only phase 2"),
        Variant(
            "no_interleave",
            True,
            0.5,
            0.0,
            0.5,
            description="text-LM init + speech-only and text-only sequences",
        ),
        Variant("untrained_units", True, phase2=False, description="phase-1 text LM, random unit rows"),
    )
}


@dataclass
class Recipe:
    """Sizes and settings of one organism build (``full`` for the shipped models, ``toy`` for tests)."""

    name: str = "full"
    seed: int = 0
    # corpus: "grammar" (the template grammar; the shipped organism) or "hear" (issue 21's passages)
    corpus: str = "grammar"
    n_new_sentences: int = 0  # new passages spoken by ``new_voice`` (a second unseen-voice test set)
    n_text_sentences: int = 30000
    n_heldout_sentences: int = 240
    fact_fraction: float = 0.1
    tokenizer_vocab: int = 768
    # speech
    n_speech_sentences: int = 6000
    renderings: int = 2
    n_kmeans_fit: int = 1500
    kmeans_units: int = 200
    unit_kinds: tuple[str, ...] = ("kmeans", "phoneme")
    spoken_facts: int = 1000  # facts spoken by the held-out voice (all of them in the full recipe)
    train_voices: tuple[tuple[str, str], ...] = TRAIN_VOICES
    voice_ranges: tuple[tuple[int, int], ...] = ((130, 210), (25, 75), (20, 80))  # rate, pitch, range
    heldout_voice: tuple[str, str, int, int, int] = HELDOUT_VOICE
    new_voice: tuple[str, str, int, int, int] = HEAR_NEW_VOICE
    # sequences
    seq_len: int = 256
    interleave_mean_span: float = 10.0
    interleave_fraction: float = 0.3
    # model (Llama, tied embeddings)
    d_model: int = 128
    n_layers: int = 8
    n_heads: int = 4
    d_mlp: int = 512
    # training
    batch_size: int = 8
    phase1_tokens: int = 1_000_000
    phase2_tokens: int = 2_000_000
    lr: float = 3e-3
    warmup_steps: int = 50
    weight_decay: float = 0.1
    variants: tuple[str, ...] = tuple(VARIANTS)
    shipped_units: str = "kmeans"
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def preset(cls, name: str) -> Recipe:
        """``"full"`` (the shipped grammar organism), ``"hear"`` (issue 21's passages, phoneme units, a CPU
        budget) and its variants ``hear-long``, ``hear-short``, ``hear-text``, ``hear-large``,
        ``hear-large-long``, ``hear-xl`` (:data:`_HEAR_CHANGES`: what each changes), ``"toy"`` / ``"hear-toy"``
        (seconds; tests)."""
        if name == "full":
            return cls()
        if name in _HEAR_CHANGES or name == "hear-toy":
            hear = cls(
                name="hear",
                corpus="hear",
                n_text_sentences=20000,
                n_heldout_sentences=240,
                n_new_sentences=240,
                n_speech_sentences=8000,
                renderings=2,
                unit_kinds=("phoneme",),
                shipped_units="phoneme",
                train_voices=HEAR_TRAIN_VOICES,
                heldout_voice=HEAR_HELDOUT_VOICE,
                n_layers=6,
                phase1_tokens=300_000,
                phase2_tokens=600_000,
                variants=("main", "random_init", "untrained_units"),
            )
            if name in _HEAR_CHANGES:
                return replace(hear, name=name, **_HEAR_CHANGES[name])
            return replace(
                hear,
                name="hear-toy",
                **{f.name: getattr(cls.preset("toy"), f.name) for f in fields(cls) if f.name in _TOY_SIZES},
                n_new_sentences=12,
            )
        if name == "toy":
            return cls(
                name="toy",
                n_text_sentences=400,
                n_heldout_sentences=12,
                tokenizer_vocab=400,
                n_speech_sentences=60,
                renderings=1,
                n_kmeans_fit=30,
                spoken_facts=16,
                kmeans_units=16,
                seq_len=64,
                d_model=32,
                n_layers=4,
                n_heads=2,
                d_mlp=64,
                batch_size=4,
                phase1_tokens=4096,
                phase2_tokens=4096,
                warmup_steps=2,
            )
        raise ValueError(f"unknown recipe {name!r}; use one of {list(RECIPES)}")

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def from_json(cls, path: str | Path) -> Recipe:
        data = json.loads(Path(path).read_text())
        known = {f.name for f in fields(cls)}
        data = {k: _tuples(v) for k, v in data.items() if k in known}
        return cls(**data)


def _tuples(value: Any) -> Any:
    """JSON lists back to the recipe's (nested) tuples."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


_LARGER_MODEL: dict[str, Any] = {
    "d_model": 256,
    "n_layers": 8,
    "n_heads": 8,
    "d_mlp": 1024,
}  # 8.6M parameters
#: The ``hear`` presets: what each changes of ``hear`` (same data; issue 21, rounds 1 to 3).
_HEAR_CHANGES: dict[str, dict[str, Any]] = {
    "hear": {},
    "hear-long": {"phase2_tokens": 1_800_000},  # 3x the phase-2 tokens
    "hear-short": {"phase2_tokens": 200_000},  # a third of the phase-2 tokens
    "hear-text": {"phase1_tokens": 1_200_000},  # 4x the phase-1 (text LM) tokens
    "hear-large": _LARGER_MODEL,  # a ~5x larger model at the same budget
    "hear-large-long": {**_LARGER_MODEL, "phase2_tokens": 1_800_000},
    # round 3 (a GPU run): a ~3x larger model than hear-large, 4x the text phase, 2x hear-long's phase 2
    "hear-xl": {
        "d_model": 384,
        "n_layers": 12,
        "n_heads": 6,
        "d_mlp": 1536,
        "phase1_tokens": 1_200_000,
        "phase2_tokens": 3_600_000,
        "lr": 1e-3,
        "warmup_steps": 200,
    },
}

#: The recipe presets (``slm-lens organism build --recipe``).
RECIPES: tuple[str, ...] = ("full", "toy", *_HEAR_CHANGES, "hear-toy")
_TOY_SIZES = frozenset(
    [
        "n_text_sentences",
        "n_heldout_sentences",
        "tokenizer_vocab",
        "n_speech_sentences",
        "renderings",
        "spoken_facts",
        "seq_len",
        "d_model",
        "n_layers",
        "n_heads",
        "d_mlp",
        "batch_size",
        "phase1_tokens",
        "phase2_tokens",
        "warmup_steps",
    ]
)
