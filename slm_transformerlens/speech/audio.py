"""Audio I/O and preparation: WAV reading / writing (stdlib ``wave``), down-mixing and resampling.

Policy (the same for every entry point):

- the speech encoders expect 16 kHz mono float audio;
- multi-channel audio is down-mixed by the mean over channels (SpiritLM's choice); arrays are
  ``(channels, samples)`` as torchaudio returns them;
- audio at another rate is an ERROR unless ``resample=True`` is passed: then it is resampled with a
  polyphase windowed-sinc filter (``scipy.signal.resample_poly``), never silently;
- empty, non-finite or integer-overflowing audio is an error.
"""

from __future__ import annotations

import io
import wave
from math import gcd
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from slm_transformerlens.errors import SpeechInputError

__all__ = [
    "TARGET_SAMPLE_RATE",
    "load_audio",
    "prepare_audio",
    "read_wav",
    "resample",
    "to_mono",
    "write_wav",
]

#: The sample rate of HuBERT / mHuBERT speech encoders.
TARGET_SAMPLE_RATE: int = 16_000


def read_wav(path: str | Path | io.IOBase) -> tuple[np.ndarray, int]:
    """Read a PCM WAV file (a path or an open binary file, e.g. ``io.BytesIO``) with the standard library.

    Returns:
        ``(audio, sample_rate)``: float32 in ``[-1, 1]``, shape ``(samples,)`` for mono or
        ``(channels, samples)``.

    Raises:
        SpeechInputError: not a PCM WAV file (compressed or float WAV: convert it first).
    """
    try:
        with wave.open(path if hasattr(path, "read") else str(path), "rb") as handle:  # type: ignore[arg-type]
            n_channels, width, rate, n_frames = (
                handle.getnchannels(),
                handle.getsampwidth(),
                handle.getframerate(),
                handle.getnframes(),
            )
            raw = handle.readframes(n_frames)
    except (wave.Error, EOFError) as error:
        raise SpeechInputError(
            f"cannot read {path} as a PCM WAV file ({error}); convert it to 16-bit PCM WAV"
        ) from None
    if width == 1:
        data = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        data = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 3:
        bytes_ = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = bytes_[:, 0] | (bytes_[:, 1] << 8) | (bytes_[:, 2] << 16)
        ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
        data = ints.astype(np.float32) / float(1 << 23)
    elif width == 4:
        data = np.frombuffer(raw, dtype="<i4").astype(np.float32) / float(1 << 31)
    else:
        raise SpeechInputError(f"{path}: unsupported sample width {width} bytes")
    data = data.reshape(-1, n_channels).T
    return (data[0].copy() if n_channels == 1 else np.ascontiguousarray(data)), rate


def write_wav(path: str | Path | io.IOBase, audio: np.ndarray | Tensor, sample_rate: int) -> None:
    """Write mono or ``(channels, samples)`` float audio in ``[-1, 1]`` as 16-bit PCM WAV (path or binary file)."""
    array = np.asarray(audio.detach().cpu() if isinstance(audio, Tensor) else audio, dtype=np.float64)
    if array.ndim == 1:
        array = array[None]
    pcm = np.clip(np.round(array * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(path if hasattr(path, "write") else str(path), "wb") as handle:  # type: ignore[arg-type]
        handle.setnchannels(array.shape[0])
        handle.setsampwidth(2)
        handle.setframerate(int(sample_rate))
        handle.writeframes(pcm.T.tobytes())


def to_mono(audio: np.ndarray | Tensor) -> Float[Tensor, " samples"]:
    """Down-mix ``(channels, samples)`` audio by the mean over channels; mono passes through.

    Raises:
        SpeechInputError: more than two dimensions, or a 2-D array with more channels than samples
            (``(samples, channels)``, as soundfile returns it: pass its transpose).
    """
    tensor = torch.as_tensor(np.asarray(audio) if not isinstance(audio, Tensor) else audio).to(torch.float32)
    if tensor.ndim == 2 and tensor.shape[0] > tensor.shape[1]:
        raise SpeechInputError(
            f"audio of shape {tuple(tensor.shape)} has more channels than samples: it looks like "
            f"(samples, channels) (soundfile's layout); pass audio.T, shape {tuple(tensor.shape[::-1])}, "
            "as (channels, samples)"
        )
    if tensor.ndim == 2 and tensor.shape[0] == 1:
        return tensor[0]
    if tensor.ndim == 2:
        return tensor.mean(dim=0)
    if tensor.ndim == 1:
        return tensor
    raise SpeechInputError(
        f"audio must be (samples,) or (channels, samples), got shape {tuple(tensor.shape)}"
    )


def resample(
    audio: Float[Tensor, " samples"], orig_rate: int, target_rate: int
) -> Float[Tensor, " resampled"]:
    """Polyphase resampling (``scipy.signal.resample_poly``, Kaiser-windowed sinc anti-aliasing)."""
    return _resample(audio, orig_rate, target_rate)


def _resample(audio: Tensor, orig_rate: int, target_rate: int) -> Tensor:
    from scipy.signal import resample_poly

    if orig_rate == target_rate:
        return audio
    divisor = gcd(int(orig_rate), int(target_rate))
    out = resample_poly(audio.double().numpy(), int(target_rate) // divisor, int(orig_rate) // divisor)
    return torch.from_numpy(out.astype(np.float32))


def prepare_audio(
    audio: np.ndarray | Tensor,
    sample_rate: int,
    *,
    target_rate: int = TARGET_SAMPLE_RATE,
    resample: bool = False,
) -> Float[Tensor, " samples"]:
    """Validate and convert audio to mono float32 at ``target_rate``.

    Args:
        audio: ``(samples,)`` or ``(channels, samples)`` float audio.
        sample_rate: the rate of ``audio`` in Hz.
        target_rate: the rate the encoder expects (16 kHz).
        resample: allow resampling when ``sample_rate != target_rate``.

    Raises:
        SpeechInputError: empty or non-finite audio, or a rate mismatch without ``resample``.
    """
    mono = to_mono(audio)
    if mono.numel() == 0:
        raise SpeechInputError("the audio is empty (0 samples)")
    if not torch.isfinite(mono).all():
        raise SpeechInputError("the audio contains NaN or infinite samples")
    if int(sample_rate) <= 0:
        raise SpeechInputError(f"invalid sample rate {sample_rate}")
    if int(sample_rate) != int(target_rate):
        if not resample:
            raise SpeechInputError(
                f"the audio is at {sample_rate} Hz but the speech encoder expects {target_rate} Hz; pass "
                "resample=True to resample it (polyphase filter), or resample it yourself"
            )
        mono = _resample(mono, int(sample_rate), int(target_rate))
    return mono


def load_audio(
    path: str | Path, *, target_rate: int = TARGET_SAMPLE_RATE, resample: bool = False
) -> Float[Tensor, " samples"]:
    """Read a WAV file and :func:`prepare_audio` it."""
    data, rate = read_wav(path)
    return prepare_audio(data, rate, target_rate=target_rate, resample=resample)
