"""The model organism's speech tokenizer: a WAV (or any audio) -> its k-means units, as a :class:`Speech`.

The organism's units are not HuBERT's: they are k-means over MFCC frames at 25 Hz
(:func:`~slm_transformerlens.organism.units.mfcc_frames`), with the centres fitted when the organism
was built (shipped as ``data/organism/eval/kmeans.npy``, 200 units). This is the same pipeline
:func:`~slm_transformerlens.organism.build.build_data` ran on its synthetic speech: audio at 16 kHz ->
MFCC frames -> nearest centre per 40 ms frame -> de-duplicated units with run lengths.

    tokenizer = organism_speech_tokenizer()
    speech = tokenizer.encode_file("hello.wav")  # alignment hello.json / hello.TextGrid beside it, if any
    lens_table(load_organism(), [speech])

It is a drop-in for :class:`~slm_transformerlens.speech.tokenizer.SpeechTokenizer` wherever one is taken
(``speech_tokenizer=`` of ``knowledge_table`` and ``load_speech_dataset``; ``--units organism`` on
``slm-lens analyze`` and ``slm-lens knowledge``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from slm_transformerlens.errors import SpeechInputError
from slm_transformerlens.speech.alignment import (
    read_alignment,
)
from slm_transformerlens.speech.audio import prepare_audio, read_wav
from slm_transformerlens.speech.inputs import Speech
from slm_transformerlens.speech.tokenizer import speech_from_frames

__all__ = ["OrganismSpeechTokenizer", "organism_speech_tokenizer"]

#: The organism's audio rate and frame length (25 Hz).
SAMPLE_RATE = 16_000
FRAME_SECONDS = 0.04


class OrganismSpeechTokenizer:
    """Audio -> the organism's MFCC k-means units.

    Args:
        centres: ``[n_units, 156]`` k-means centres over :func:`~slm_transformerlens.organism.units.mfcc_frames`
            (default: the shipped organism's, see :func:`organism_speech_tokenizer`).
    """

    def __init__(self, centres: Float[np.ndarray, "n_units dim"]) -> None:
        from slm_transformerlens.organism.units import KMeansUnits

        centres = np.asarray(centres, dtype=np.float32)
        if centres.ndim != 2 or centres.shape[0] == 0 or centres.shape[1] != 156:
            raise SpeechInputError(
                f"organism k-means centres must be a [n_units, 156] matrix (MFCC + deltas, 4 frames "
                f"stacked), got shape {centres.shape}"
            )
        self.kmeans = KMeansUnits(centres)

    @property
    def n_units(self) -> int:
        """The codebook size (200 for the shipped organism)."""
        return int(self.kmeans.centres.shape[0])

    @property
    def frame_duration(self) -> float:
        """Seconds per unit frame (0.04: 25 Hz)."""
        return FRAME_SECONDS

    def frames(
        self, audio: np.ndarray | Tensor, sample_rate: int, *, resample: bool = False
    ) -> Int[Tensor, " frames"]:
        """One unit per 40 ms frame (before de-duplication).

        Raises:
            SpeechInputError: audio that is empty, not finite, at another rate without ``resample``, or
                shorter than one frame.
        """
        from slm_transformerlens.organism.units import mfcc_frames

        wav = prepare_audio(audio, sample_rate, target_rate=SAMPLE_RATE, resample=resample).numpy()
        if len(wav) < int(FRAME_SECONDS * SAMPLE_RATE):
            raise SpeechInputError(
                f"the audio is {len(wav) / SAMPLE_RATE:.3f} s long, shorter than one 40 ms unit frame"
            )
        return torch.from_numpy(self.kmeans.predict(mfcc_frames(wav)))

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
        """Encode audio (``(samples,)`` or ``(channels, samples)``) into a :class:`Speech` of organism units.

        Args:
            words: optional alignment ``[(word, start_s, end_s), ...]``, validated against the audio length.
            resample: allow resampling to 16 kHz (otherwise a rate mismatch is an error).
            keep_audio: store the prepared 16 kHz waveform on the Speech.
        """
        wav = prepare_audio(audio, sample_rate, target_rate=SAMPLE_RATE, resample=resample)
        frames = self.frames(wav, SAMPLE_RATE)
        return speech_from_frames(
            frames,
            wav,
            sample_rate=SAMPLE_RATE,
            frame_duration=FRAME_SECONDS,
            words=words,
            keep_audio=keep_audio,
            **speech_kwargs,
        )

    def encode_file(
        self, path: str | Path, *, alignment: str | Path | None = None, resample: bool = True
    ) -> Speech:
        """Encode a WAV file; its word alignment is ``alignment``, else ``<stem>.json`` / ``<stem>.TextGrid``
        beside it when one exists (without one the Speech has no words).

        Raises:
            SpeechInputError: an unreadable WAV or alignment, or words outside the audio.
        """
        path = Path(path)
        if alignment is None:
            alignment = next(
                (p for p in (path.with_suffix(".json"), path.with_suffix(".TextGrid")) if p.is_file()), None
            )
        audio, rate = read_wav(path)
        words = read_alignment(alignment) if alignment is not None else None
        return self(audio, rate, words=words, resample=resample)


def organism_speech_tokenizer(centres: str | Path | None = None) -> OrganismSpeechTokenizer:
    """The shipped organism's speech tokenizer (its 200 k-means centres), or one with the centres saved at
    ``centres`` (``kmeans.npy`` of ``slm-lens organism build``'s data folder).

    Raises:
        SpeechInputError: the centres file is missing or not a ``[n_units, 156]`` array.
    """
    if centres is None:
        from slm_transformerlens.organism.shipped import shipped_root

        centres = shipped_root() / "eval" / "kmeans.npy"
    path = Path(centres)
    if not path.is_file():
        raise SpeechInputError(
            f"organism k-means centres {path} do not exist; pass the kmeans.npy that `slm-lens organism "
            "build` wrote into its data folder, or nothing for the shipped organism's"
        )
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise SpeechInputError(f"{path} is not a .npy array of k-means centres ({error})") from None
    return OrganismSpeechTokenizer(array)
