"""Self-contained chart files: HTML that renders offline (vega, vega-lite and vega-embed inlined), PNG, SVG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["save_chart"]

_FORMATS = ("html", "png", "svg")


def save_chart(chart: Any, path: str | Path, *, scale: float = 2.0) -> Path:
    """Save an altair chart as ``.html`` (offline, no CDN), ``.png`` or ``.svg`` (via vl-convert-python).

    Raises:
        ImportError: altair / vl-convert-python are missing (``pip install slm_transformerlens[plot]``).
        ValueError: an unsupported suffix.
    """
    path = Path(path)
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in _FORMATS:
        raise ValueError(f"cannot save a chart as {path.name!r}: use one of .html, .png, .svg")
    try:
        import vl_convert as vlc
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "saving charts needs vl-convert-python: pip install 'slm_transformerlens[plot]'"
        ) from error
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = chart.to_dict()
    if suffix == "html":
        path.write_text(vlc.vegalite_to_html(spec, bundle=True), encoding="utf-8")
    elif suffix == "png":
        path.write_bytes(vlc.vegalite_to_png(spec, scale=scale))
    else:
        path.write_text(vlc.vegalite_to_svg(spec), encoding="utf-8")
    return path
