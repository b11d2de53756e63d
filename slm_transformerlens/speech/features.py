"""HuBERT features from a local ``transformers`` ``HubertModel`` directory.

The SLMs here use mHuBERT-25Hz layer 11: ``HubertModel(...)(wav, output_hidden_states=True)
.hidden_states[11]`` (``hidden_states[0]`` is the input to the first transformer layer, so index ``l`` is
the output of layer ``l``, fairseq's ``output_layer=l``).

Long audio is processed in chunks (default 100 s, as SpiritLM) whose length is a multiple of the hop so
frames stay on one grid; slamkit pads every waveform with 40 zero samples on each side before the encoder
(``pad_samples=40``, the default), which keeps the frame count at ``len // hop``.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

from slm_transformerlens.errors import SpeechInputError
from slm_transformerlens.speech.audio import TARGET_SAMPLE_RATE

__all__ = ["HubertFeatureExtractor"]


class HubertFeatureExtractor:
    """Frame features of one HuBERT layer.

    Args:
        model: a ``transformers.HubertModel`` or a local directory to load one from.
        layer: which ``hidden_states`` entry to return (11 for mHuBERT-25Hz).
        sample_rate: the rate the model expects (16 kHz).
        pad_samples: zeros added on both sides of each chunk (slamkit: 40).
        chunk_seconds: maximum audio per forward pass.
        min_chunk_samples: a trailing chunk shorter than this is dropped (too short for the conv stack).
        normalize: layer-normalise the waveform first (fairseq ``task.normalize``; False for mHuBERT).
        device: where to run the model.
    """

    def __init__(
        self,
        model: torch.nn.Module | str | Path,
        *,
        layer: int = 11,
        sample_rate: int = TARGET_SAMPLE_RATE,
        pad_samples: int = 40,
        chunk_seconds: float = 100.0,
        min_chunk_samples: int = 400,
        normalize: bool = False,
        device: str | torch.device = "cpu",
    ) -> None:
        if isinstance(model, (str, Path)):
            model = self._load(Path(model))
        self.model = model.to(device).eval()
        n_layers = int(self.model.config.num_hidden_layers)
        if not 0 <= layer <= n_layers:
            raise SpeechInputError(
                f"layer {layer} does not exist: this HuBERT has hidden_states[0..{n_layers}]"
            )
        self.layer = layer
        self.sample_rate = int(sample_rate)
        self.pad_samples = int(pad_samples)
        self.normalize = normalize
        self.device = torch.device(device)
        self.min_chunk_samples = int(min_chunk_samples)
        chunk = int(chunk_seconds * self.sample_rate)
        self.chunk_samples = max(self.hop_length, chunk - chunk % self.hop_length)

    @staticmethod
    def _load(directory: Path) -> torch.nn.Module:
        from transformers import HubertModel

        if not (directory / "config.json").exists():
            raise SpeechInputError(f"{directory} is not a HubertModel directory (no config.json)")
        return HubertModel.from_pretrained(str(directory))

    @property
    def hop_length(self) -> int:
        """Samples per frame: the product of the conv strides (640 for a 25 Hz model)."""
        return int(math.prod(self.model.config.conv_stride))

    @property
    def frame_duration(self) -> float:
        """Seconds per frame (0.04 for a 25 Hz model)."""
        return self.hop_length / self.sample_rate

    @torch.inference_mode()
    def __call__(self, audio: Float[Tensor, " samples"]) -> Float[Tensor, "frames d"]:
        """Features of mono audio at :attr:`sample_rate` (see :func:`audio.prepare_audio`)."""
        audio = torch.as_tensor(audio, dtype=torch.float32)
        if audio.ndim != 1:
            raise SpeechInputError(f"expected mono audio of shape (samples,), got {tuple(audio.shape)}")
        if audio.numel() == 0:
            raise SpeechInputError("the audio is empty (0 samples)")
        if self.normalize:
            audio = torch.nn.functional.layer_norm(audio, audio.shape)
        features = []
        for start in range(0, audio.numel(), self.chunk_samples):
            chunk = audio[start : start + self.chunk_samples]
            if chunk.numel() < self.min_chunk_samples:
                continue
            if self.pad_samples:
                chunk = torch.nn.functional.pad(chunk, (self.pad_samples, self.pad_samples))
            out = self.model(chunk[None].to(self.device), output_hidden_states=True)
            features.append(out.hidden_states[self.layer][0].float().cpu())
        if not features:
            raise SpeechInputError(
                f"the audio ({audio.numel()} samples) is shorter than the encoder's minimum "
                f"({self.min_chunk_samples} samples)"
            )
        return torch.cat(features, dim=0)
