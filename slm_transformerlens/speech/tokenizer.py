"""The speech tokenizer: audio -> HuBERT layer features -> quantizer -> de-duplicated units (a Speech)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from slm_transformerlens.speech.alignment import (
    as_word_timings,
    end_tolerance,
    read_alignment,
    validate_words,
)
from slm_transformerlens.speech.audio import prepare_audio, read_wav
from slm_transformerlens.speech.features import HubertFeatureExtractor
from slm_transformerlens.speech.inputs import Speech
from slm_transformerlens.speech.quantizers import Quantizer

__all__ = ["SpeechTokenizer", "speech_from_frames"]


class SpeechTokenizer:
    """Turn audio into :class:`Speech` units.

    Args:
        features: the HuBERT feature extractor (model + layer).
        quantizer: k-means or SpiritLM linear quantizer.
        dedup: merge repeated units and keep run lengths (both SIMS and SpiritLM do).
    """

    def __init__(self, features: HubertFeatureExtractor, quantizer: Quantizer, *, dedup: bool = True) -> None:
        self.features = features
        self.quantizer = quantizer
        self.dedup = dedup

    @property
    def n_units(self) -> int:
        """The codebook size."""
        return int(self.quantizer.n_units)

    def frames(
        self, audio: np.ndarray | Tensor, sample_rate: int, *, resample: bool = False
    ) -> Int[Tensor, " frames"]:
        """One unit per encoder frame (before de-duplication)."""
        wav = prepare_audio(audio, sample_rate, target_rate=self.features.sample_rate, resample=resample)
        return self.quantizer(self.features(wav)).to(torch.long)

    def __call__(
        self,
        audio: np.ndarray | Tensor,
        sample_rate: int,
        *,
        words: Iterable[Any] | None = None,
        resample: bool = False,
        keep_audio: bool = False,
        **speech_kwargs: Any,
    ) -> Speech:
        """Encode audio (``(samples,)`` or ``(channels, samples)``) into a :class:`Speech`.

        Args:
            words: optional alignment ``[(word, start_s, end_s), ...]``, validated against the audio length.
            resample: allow resampling to 16 kHz (otherwise a rate mismatch is an error).
            keep_audio: store the prepared 16 kHz waveform on the Speech.
        """
        wav = prepare_audio(audio, sample_rate, target_rate=self.features.sample_rate, resample=resample)
        frames = self.quantizer(self.features(wav)).to(torch.long)
        return speech_from_frames(
            frames,
            wav,
            sample_rate=self.features.sample_rate,
            frame_duration=self.features.frame_duration,
            words=words,
            dedup=self.dedup,
            keep_audio=keep_audio,
            **speech_kwargs,
        )

    def encode_files(
        self,
        paths: Sequence[str | Path],
        *,
        alignments: Sequence[str | Path | None] | None = None,
        resample: bool = False,
        progress: bool = True,
    ) -> list[Speech]:
        """Encode WAV files (and their ``.json`` / ``.TextGrid`` alignments), with a progress bar."""
        alignment_paths = list(alignments) if alignments is not None else [None] * len(paths)
        out = []
        for path, alignment in tqdm(
            list(zip(paths, alignment_paths, strict=True)), disable=not progress, desc="speech"
        ):
            data, rate = read_wav(path)
            words = read_alignment(alignment) if alignment is not None else None
            out.append(self(data, rate, words=words, resample=resample))
        return out


def speech_from_frames(
    frames: Int[Tensor, " frames"],
    wav: Float[Tensor, " samples"],
    *,
    sample_rate: int,
    frame_duration: float,
    words: Iterable[Any] | None = None,
    dedup: bool = True,
    keep_audio: bool = False,
    **speech_kwargs: Any,
) -> Speech:
    """A :class:`Speech` from one unit per frame of the prepared waveform ``wav``, with its word alignment.

    ``words`` (``[(word, start_s, end_s), ...]``) are validated against the AUDIO's length (within a frame's
    tolerance), not the frames': an encoder's frames may end up to a frame (plus its window) before the
    audio does, and a word inside the audio stays valid. ``keep_audio`` stores ``wav`` on the Speech.
    """
    word_timings = None if words is None else as_word_timings(words)
    if word_timings is not None:
        validate_words(
            word_timings, duration_s=wav.numel() / sample_rate, tolerance_s=end_tolerance(frame_duration)
        )
    if keep_audio:
        speech_kwargs.update(audio=wav.numpy(), sample_rate=sample_rate)
    speech = Speech.from_frames(frames, dedup=dedup, frame_duration=frame_duration, **speech_kwargs)
    if word_timings is not None:
        object.__setattr__(speech, "words", word_timings)
    return speech
