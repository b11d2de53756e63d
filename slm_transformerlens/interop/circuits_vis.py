"""circuitsvis with speech tokens: HTML-safe token labels and offline HTML.

circuitsvis renders token strings as HTML (``dangerouslySetInnerHTML``), so ``<Un71>``, ``<speech>``
and ``<text>`` are read as tags and vanish from its token strips; its default HTML also loads its
JavaScript from a CDN. :func:`html_safe_labels` escapes the labels (they display exactly), and
:func:`offline_html` / :func:`save_html` write a self-contained page with circuitsvis' bundled
JavaScript inlined (renders without network).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jaxtyping import Float
from torch import Tensor

__all__ = ["attention_view", "html_safe_labels", "offline_html", "save_html", "token_labels", "token_view"]


def html_safe_labels(tokens: Sequence[str]) -> list[str]:
    """Token strings escaped for circuitsvis (``<Un71>`` -> ``&lt;Un71&gt;``), shown exactly as written."""
    return [html.escape(str(token), quote=True) for token in tokens]


def token_labels(model: Any, speech_input: Any) -> list[str]:
    """HTML-safe string tokens of one utterance (``Speech`` / ``Text`` input, a string or a token tensor)."""
    str_tokens = model.to_str_tokens(speech_input)
    if str_tokens and isinstance(str_tokens[0], list):
        if len(str_tokens) != 1:
            from slm_transformerlens.interop.errors import InteropError

            raise InteropError("circuitsvis views show one utterance; pass one, not a batch")
        str_tokens = str_tokens[0]
    return html_safe_labels(str_tokens)


def token_view(
    model: Any, speech_input: Any, values: Float[Tensor, " pos"] | Sequence[float], **kwargs: Any
) -> Any:
    """``circuitsvis.tokens.colored_tokens`` over one utterance's tokens (labels HTML-safe)."""
    from circuitsvis.tokens import colored_tokens

    labels = token_labels(model, speech_input)
    values = values.detach().float().cpu().tolist() if isinstance(values, Tensor) else list(values)
    if len(values) != len(labels):
        from slm_transformerlens.interop.errors import InteropError

        raise InteropError(f"{len(values)} values for {len(labels)} tokens; pass one value per token")
    return colored_tokens(labels, values, **kwargs)


def attention_view(model: Any, speech_input: Any, layer: int, **kwargs: Any) -> Any:
    """``circuitsvis.attention.attention_patterns`` of every head of ``layer`` on one utterance."""
    from circuitsvis.attention import attention_patterns

    labels = token_labels(model, speech_input)
    name = f"blocks.{int(layer)}.attn.hook_pattern"
    _, cache = model.run_with_cache(speech_input, names_filter=name)
    pattern = cache[name][0].detach().float().cpu()
    return attention_patterns(tokens=labels, attention=pattern, **kwargs)


def offline_html(rendered: Any, *, title: str = "circuitsvis") -> str:
    """A complete HTML page of a circuitsvis view with its JavaScript inlined (no CDN)."""
    body = getattr(rendered, "local_src", None)
    if body is None:
        body = str(rendered)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def save_html(rendered: Any, path: str | Path, *, title: str = "circuitsvis") -> Path:
    """Write :func:`offline_html` of ``rendered`` to ``path`` (UTF-8); returns the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(offline_html(rendered, title=title), encoding="utf-8")
    return target
