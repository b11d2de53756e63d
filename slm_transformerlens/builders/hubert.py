"""A tiny random HuBERT on mHuBERT-25Hz's frame grid (demo and speech tests, no download)."""

from __future__ import annotations

from typing import Any

__all__ = ["tiny_hubert_config"]


def tiny_hubert_config(hidden_size: int = 16, n_heads: int = 2, n_layers: int = 11) -> Any:
    """A random-init HuBERT config with mHuBERT-25Hz's conv stack (hop 640 samples = 25 Hz), tiny transformer."""
    from transformers import HubertConfig

    return HubertConfig(
        hidden_size=hidden_size,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        intermediate_size=2 * hidden_size,
        conv_dim=(hidden_size,) * 8,
        conv_stride=(5,) + (2,) * 7,
        conv_kernel=(10, 3, 3, 3, 3, 2, 2, 2),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=n_heads,
        feat_extract_norm="group",
        do_stable_layer_norm=False,
    )
