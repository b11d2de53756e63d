"""A description of a checkpoint read from its config, tokenizer and weight headers (no weights loaded)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slm_transformerlens.checkpoints import LoadOptions, read_layout
from slm_transformerlens.checkpoints.files import scan_weights

__all__ = ["describe_checkpoint", "format_description"]


def describe_checkpoint(
    path: str | Path,
    *,
    family: str | None = None,
    tokenizer: Any = None,
    unit_format: str | None = None,
) -> dict[str, Any]:
    """Family, architecture, sizes, vocabulary layout, stored dtype and parameter count.

    Reads ``config.json``, the tokenizer and the weight file headers only, so it is fast even for
    a 7B checkpoint. Arguments are those of :func:`slm_transformerlens.load`.
    """
    reader, layout = read_layout(
        path, LoadOptions(tokenizer=tokenizer, unit_format=unit_format, progress=False), family=family
    )
    config = layout.hf_config
    weights = scan_weights(layout.weights, layout.rename)
    n_heads = int(config.num_attention_heads)
    stored = max(weights["dtypes"], key=weights["dtypes"].get) if weights["dtypes"] else None
    return {
        "path": str(Path(path)),
        "family": reader.name,
        "architecture": layout.architecture,
        "model_type": getattr(config, "model_type", None),
        "n_layers": int(config.num_hidden_layers),
        "d_model": int(config.hidden_size),
        "n_heads": n_heads,
        "n_key_value_heads": int(getattr(config, "num_key_value_heads", None) or n_heads),
        "d_mlp": int(getattr(config, "intermediate_size", 0) or 0),
        "n_ctx": int(getattr(config, "max_position_embeddings", 0) or 0),
        "tie_word_embeddings": bool(getattr(config, "tie_word_embeddings", False)),
        "stored_dtype": stored,
        "n_params": weights["n_params"],
        "weight_format": layout.weights.format,
        "weight_files": [f.name for f in layout.weights.files],
        "weight_bytes": layout.weights.total_bytes,
        "vocab": layout.speech_vocab.summary(),
        "metadata": layout.metadata,
    }


def format_description(description: dict[str, Any]) -> str:
    """A human-readable multi-line rendering of :func:`describe_checkpoint`'s result."""
    vocab = description["vocab"]
    lines = [
        f"checkpoint     {description['path']}",
        f"family         {description['family']}",
        f"architecture   {description['architecture']} ({description['model_type']})",
        f"layers         {description['n_layers']}",
        f"d_model        {description['d_model']}  (d_mlp {description['d_mlp']})",
        f"heads          {description['n_heads']} query / {description['n_key_value_heads']} key-value",
        f"context        {description['n_ctx']}",
        f"parameters     {description['n_params']:,} ({description['stored_dtype']}, "
        f"{description['weight_bytes'] / 2**20:.1f} MiB in {len(description['weight_files'])} "
        f"{description['weight_format']} file(s))",
        f"tied embedding {description['tie_word_embeddings']}",
        f"vocabulary     {vocab['vocab_size']} rows, tokenizer {vocab['tokenizer_size']}",
        f"  text         {vocab['text']['count']} tokens in {vocab['text']['range']}",
        f"  speech       {vocab['speech']['count']} units {vocab['speech']['format']} at {vocab['speech']['range']}",
    ]
    for role, marker in vocab["markers"].items():
        lines.append(f"  marker       {role}: {marker['token']} = {marker['id']}")
    for name, group in vocab.items():
        if isinstance(group, dict) and "format" in group and name != "speech":
            lines.append(f"  {name:<12} {group['count']} tokens {group['format']} at {group['range']}")
    lines.append(f"  special      {vocab['special']['count']} tokens")
    lines.append(f"  padding rows {vocab['padding_rows']}")
    lines.append(f"  BOS          {vocab['bos_token_id']}")
    return "\n".join(lines)
