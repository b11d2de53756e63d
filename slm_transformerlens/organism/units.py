"""Speech units at 25 Hz for the organism: espeak phoneme units and k-means units over MFCC features.

- Phoneme units: the espeak phoneme covering each 40 ms frame (at the frame centre), stress marks
  removed, pauses mapped to one silence label ``_``; the label inventory is fixed on the training voices.
- k-means units: 13 MFCC + deltas + delta-deltas at 100 Hz (25 ms window), normalised per utterance,
  4 frames stacked to 25 Hz, scikit-learn ``MiniBatchKMeans`` fitted on training voices only.

Both are de-duplicated with run lengths by the caller (``speech.units.dedup_units``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from jaxtyping import Float

__all__ = [
    "FRAME_SECONDS",
    "KMeansUnits",
    "mfcc_frames",
    "phoneme_frame_labels",
]

FRAME_SECONDS = 0.04
SAMPLE_RATE = 16000
_HOP = 160  # 10 ms
_WINDOW = 400  # 25 ms
_STACK = 4  # 4 x 10 ms = one 25 Hz frame
_SILENCE = "_"


def _mel_filterbank(n_mels: int = 40, n_fft: int = 512) -> np.ndarray:
    def hz_to_mel(f: float) -> float:
        return float(2595.0 * np.log10(1.0 + f / 700.0))

    mels = np.linspace(hz_to_mel(20.0), hz_to_mel(SAMPLE_RATE / 2), n_mels + 2)
    hz = 700.0 * (10 ** (mels / 2595.0) - 1.0)
    bins = np.floor((n_fft + 1) * hz / SAMPLE_RATE).astype(int)
    bank = np.zeros((n_mels, n_fft // 2 + 1))
    for m in range(1, n_mels + 1):
        lo, mid, hi = bins[m - 1], bins[m], bins[m + 1]
        for k in range(lo, mid):
            bank[m - 1, k] = (k - lo) / max(mid - lo, 1)
        for k in range(mid, hi):
            bank[m - 1, k] = (hi - k) / max(hi - mid, 1)
    return bank


_BANK = _mel_filterbank()


def _deltas(x: np.ndarray) -> np.ndarray:
    padded = np.pad(x, ((2, 2), (0, 0)), mode="edge")
    return (padded[3:-1] - padded[1:-3] + 2 * (padded[4:] - padded[:-4])) / 10.0


def mfcc_frames(audio: Float[np.ndarray, " samples"]) -> Float[np.ndarray, "frames dim"]:
    """MFCC + deltas + delta-deltas, per-utterance normalised, stacked to 25 Hz: ``[len // 640, 156]``."""
    from scipy.fft import dct

    n_frames = len(audio) // (_HOP * _STACK)
    needed = n_frames * _STACK * _HOP + _WINDOW
    x = np.pad(audio.astype(np.float64), (0, max(0, needed - len(audio))))
    x = np.append(x[0], x[1:] - 0.97 * x[:-1])
    idx = np.arange(_WINDOW)[None, :] + _HOP * np.arange(n_frames * _STACK)[:, None]
    frames = x[idx] * np.hamming(_WINDOW)
    power = np.abs(np.fft.rfft(frames, n=512)) ** 2
    logmel = np.log(power @ _BANK.T + 1e-8)
    cep = dct(logmel, type=2, axis=1, norm="ortho")[:, :13]
    feats = np.concatenate([cep, _deltas(cep), _deltas(_deltas(cep))], axis=1)
    feats = (feats - feats.mean(0)) / (feats.std(0) + 1e-5)
    return feats.reshape(n_frames, _STACK * feats.shape[1]).astype(np.float32)


def _clean_label(label: str) -> str:
    label = label.strip().replace("'", "").replace(",", "")
    return _SILENCE if not label or label.startswith("_") or label == "||" else label


def phoneme_frame_labels(phonemes: Sequence[tuple[str, float]], n_frames: int) -> list[str]:
    """The phoneme label covering the centre of each 40 ms frame (silence before the first phoneme)."""
    starts = np.array([t for _, t in phonemes], dtype=np.float64)
    labels = [_clean_label(p) for p, _ in phonemes]
    centres = (np.arange(n_frames) + 0.5) * FRAME_SECONDS
    index = np.searchsorted(starts, centres, side="right") - 1
    return [labels[i] if i >= 0 else _SILENCE for i in index]


class KMeansUnits:
    """k-means over :func:`mfcc_frames` (scikit-learn MiniBatchKMeans), saved as plain centres."""

    def __init__(self, centres: np.ndarray) -> None:
        self.centres = np.asarray(centres, dtype=np.float32)

    @classmethod
    def fit(cls, features: np.ndarray, n_units: int, *, seed: int = 0) -> KMeansUnits:
        from sklearn.cluster import MiniBatchKMeans

        km = MiniBatchKMeans(n_clusters=n_units, random_state=seed, batch_size=4096, n_init=3, max_iter=100)
        km.fit(features)
        return cls(km.cluster_centers_)

    def predict(self, features: np.ndarray) -> np.ndarray:
        d = (
            (features**2).sum(1, keepdims=True)
            - 2 * features @ self.centres.T
            + (self.centres**2).sum(1)[None]
        )
        return d.argmin(1).astype(np.int64)
