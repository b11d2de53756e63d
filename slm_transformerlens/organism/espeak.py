"""espeak-ng synthesis with exact word and phoneme timings, through its C library (ctypes).

The library and its data come from the PyPI package ``espeakng-loader`` (espeak-ng is GPL-3: we call
it, we never vendor it). :func:`synthesize` returns 16 kHz audio, the phoneme events and one
(word, start, end) per text word. espeak merges some word events ("on the", "in the"): such a merged
event is split at phoneme boundaries (its phonemes are shared between its words in proportion to
each word's own phoneme count, from espeak's text-to-phoneme of the word alone), never dropped.
"""

from __future__ import annotations

import ctypes
import itertools
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from slm_transformerlens.errors import SLMError

__all__ = [
    "SYNTH_CALLBACK",
    "EspeakError",
    "EspeakEvent",
    "EspeakEventId",
    "SynthResult",
    "Voice",
    "synthesize",
]

_WORD, _PHONEME, _END, _SENTENCE = 1, 7, 0, 2
_RATE, _PITCH, _RANGE = 1, 3, 4
ESPEAK_RATE = 22050
TARGET_RATE = 16000


class EspeakError(SLMError):
    """espeak-ng is missing or failed."""


class EspeakEventId(ctypes.Union):
    """The ``id`` union of espeak-ng's ``espeak_EVENT``."""

    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class EspeakEvent(ctypes.Structure):
    """espeak-ng's ``espeak_EVENT`` (speak_lib.h)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", EspeakEventId),
    ]


SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(EspeakEvent)
)
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Voice:
    """An espeak voice: a language voice name plus an optional variant, rate (wpm), pitch and range (0-99)."""

    name: str
    variant: str = ""
    rate: int = 170
    pitch: int = 50
    range: int = 50

    @property
    def spec(self) -> str:
        return f"{self.name}+{self.variant}" if self.variant else self.name


@dataclass
class SynthResult:
    """One synthesized sentence: 16 kHz float audio, word timings (s) and phoneme events (label, start s)."""

    audio: np.ndarray
    words: list[tuple[str, float, float]]
    phonemes: list[tuple[str, float]]


class _Engine:
    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise EspeakError(
                "speech synthesis needs the PyPI package 'espeakng-loader': pip install espeakng-loader"
            ) from error
        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        data = espeakng_loader.get_data_path().encode()
        self.lib.espeak_Initialize.restype = ctypes.c_int
        rate = self.lib.espeak_Initialize(2, 0, ctypes.c_char_p(data), 0x1 | 0x8000)
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed ({rate})")
        self.chunks: list[np.ndarray] = []
        self.events: list[tuple[int, int, int, int, str]] = []
        self.callback = SYNTH_CALLBACK(self._on_audio)
        self.lib.espeak_SetSynthCallback(self.callback)
        self.lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        self.lib.espeak_TextToPhonemes.argtypes = [
            ctypes.POINTER(ctypes.c_void_p),
            ctypes.c_int,
            ctypes.c_int,
        ]

    def _on_audio(self, wav: Any, n: int, events: Any) -> int:
        if n > 0:
            self.chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).astype(np.int16).copy())
        i = 0
        while events[i].type != _END:
            e = events[i]
            label = e.id.string.decode("utf-8", "replace") if e.type == _PHONEME else ""
            self.events.append((e.type, e.text_position, e.length, e.sample, label))
            i += 1
        return 0

    def set_voice(self, voice: Voice) -> None:
        if self.lib.espeak_SetVoiceByName(voice.spec.encode()) != 0:
            raise EspeakError(f"espeak has no voice {voice.spec!r}")
        for parameter, value in ((_RATE, voice.rate), (_PITCH, voice.pitch), (_RANGE, voice.range)):
            self.lib.espeak_SetParameter(parameter, int(value), 0)

    def synth(self, text: str) -> tuple[np.ndarray, list[tuple[int, int, int, int, str]]]:
        self.chunks, self.events = [], []
        data = text.encode("utf-8") + b"\0"
        self.lib.espeak_Synth(ctypes.c_char_p(data), len(data), 0, 1, 0, 1, None, None)
        self.lib.espeak_Synchronize()
        audio = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.int16)
        return audio, list(self.events)

    def phoneme_count(self, word: str) -> int:
        buffer = ctypes.c_char_p(word.encode("utf-8"))
        pointer = ctypes.cast(ctypes.pointer(buffer), ctypes.POINTER(ctypes.c_void_p))
        out = self.lib.espeak_TextToPhonemes(pointer, 1, 0)
        text = (out or b"").decode("utf-8", "replace")
        return max(1, sum(1 for c in text if c.isalpha() or c in "@3&"))


@lru_cache(maxsize=1)
def _engine() -> _Engine:
    return _Engine()


def _resample(audio: np.ndarray) -> np.ndarray:
    x = audio.astype(np.float32) / 32768.0
    n_out = round(len(x) * TARGET_RATE / ESPEAK_RATE)
    positions = np.arange(n_out) * (ESPEAK_RATE / TARGET_RATE)
    return np.interp(positions, np.arange(len(x)), x).astype(np.float32)


def _split_merged(
    engine: _Engine,
    words: list[str],
    starts: list[int],
    events: list[tuple[int, int, int, int, str]],
    end_sample: int,
) -> list[tuple[int, int]]:
    """Sample ranges of ``words`` (text words, possibly sharing espeak word events)."""
    word_events = [(e[1], e[3]) for e in events if e[0] == _WORD]  # (text position 1-based, sample)
    phonemes = [
        (e[3], e[4]) for e in events if e[0] == _PHONEME and e[4].strip() not in ("", "_", "_:", "_!", "||")
    ]
    # which espeak word event holds each text word: the last event starting at or before it
    owner = []
    for start in starts:
        candidates = [k for k, (pos, _) in enumerate(word_events) if pos - 1 <= start]
        owner.append(candidates[-1] if candidates else 0)
    ranges: list[tuple[int, int]] = []
    i = 0
    while i < len(words):
        j = i
        while j + 1 < len(words) and owner[j + 1] == owner[i]:
            j += 1
        k = owner[i]
        lo = word_events[k][1]
        hi = word_events[k + 1][1] if k + 1 < len(word_events) else end_sample
        if j == i:
            ranges.append((lo, hi))
        else:  # merged event: share its phoneme boundaries by each word's own phoneme count
            inside = [s for s, _ in phonemes if lo <= s < hi]
            counts = np.array([engine.phoneme_count(w) for w in words[i : j + 1]], dtype=float)
            cuts = np.round(np.cumsum(counts)[:-1] / counts.sum() * len(inside)).astype(int)
            bounds = [lo] + [inside[min(max(c, 1), len(inside) - 1)] if inside else lo for c in cuts] + [hi]
            for a, b in itertools.pairwise(bounds):
                ranges.append((a, max(a + 1, b)))
        i = j + 1
    return ranges


def synthesize(text: str, voice: Voice) -> SynthResult:
    """Synthesize one sentence of lowercase words separated by single spaces.

    Returns 16 kHz audio, one (word, start_s, end_s) per word of ``text`` (espeak's merged word events
    split at phoneme boundaries) and the phoneme events (label, start_s).
    """
    words = text.split()
    starts, position = [], 0
    for w in words:
        position = text.index(w, position)
        starts.append(position)
        position += len(w)
    with _LOCK:
        engine = _engine()
        engine.set_voice(voice)
        audio, events = engine.synth(text)
        if not audio.size:
            raise EspeakError(f"espeak produced no audio for {text!r}")
        ranges = _split_merged(engine, words, starts, events, len(audio))
    scale = 1.0 / ESPEAK_RATE
    phonemes = [(e[4], e[3] * scale) for e in events if e[0] == _PHONEME]
    # a word ends where its last phoneme ends: a pause inside its range is left to no word
    pauses = [e[3] for e in events if e[0] == _PHONEME and e[4].strip().startswith("_")]
    timed = []
    for w, (lo, hi) in zip(words, ranges, strict=True):
        hi = min([p for p in pauses if lo < p < hi] + [hi])
        timed.append((w, lo * scale, hi * scale))
    return SynthResult(audio=_resample(audio), words=timed, phonemes=phonemes)
