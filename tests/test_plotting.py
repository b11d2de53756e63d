"""Charts: offline HTML that a headless Chromium draws, and PNG / SVG with real pixels."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib

import numpy as np
import pytest

pytest.importorskip("altair")
pytest.importorskip("vl_convert")

from slm_transformerlens.lens import (
    LogitLens,
    TunedLens,
    evaluate_lenses,
    lens_table,
    summarize_transcription,
    transcription_table,
)
from slm_transformerlens.viz.charts import (
    lens_heatmap,
    lens_kl_chart,
    modality_mass_chart,
    transcription_rate_chart,
)
from slm_transformerlens.viz.html import save_chart
from tests.lens.conftest import make_utterance


def png_pixels(data: bytes) -> np.ndarray:
    """Decode an 8-bit RGB(A) non-interlaced PNG into ``[height, width, channels]`` (no Pillow needed)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, color, _, _, interlace = header
    assert depth == 8 and interlace == 0 and color in (2, 6)
    channels = 4 if color == 6 else 3
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, 1 + width * channels)
    out = np.zeros((height, width * channels), dtype=np.int32)
    prev = np.zeros(width * channels, dtype=np.int32)
    for y in range(height):
        f, line = raw[y, 0], raw[y, 1:].astype(np.int32)
        cur = np.zeros_like(line)
        for x in range(len(line)):
            a = cur[x - channels] if x >= channels else 0
            b = prev[x]
            c = prev[x - channels] if x >= channels else 0
            if f == 0:
                pred = 0
            elif f == 1:
                pred = a
            elif f == 2:
                pred = b
            elif f == 3:
                pred = (a + b) // 2
            else:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            cur[x] = (line[x] + pred) & 0xFF
        out[y], prev = cur, cur
    return out.reshape(height, width, channels)


@pytest.fixture(scope="module")
def tables(spiritlm_model):
    tokens, spans = make_utterance(spiritlm_model)
    heat = lens_table(spiritlm_model, tokens, word_spans=spans, positions="all", top_k=3)
    table = transcription_table(spiritlm_model, [(tokens, spans)], progress=False)
    ev = evaluate_lenses(
        spiritlm_model,
        [tokens],
        {"logit": LogitLens(spiritlm_model), "tuned": TunedLens(spiritlm_model)},
        progress=False,
    )
    return heat, table, summarize_transcription(table), ev


def test_every_chart_saves_as_png_and_svg(tables, tmp_path):
    heat, table, summary, ev = tables
    charts = {
        "heat": lens_heatmap(heat),
        "rate": transcription_rate_chart(summary, k=10),
        "mass": modality_mass_chart(table),
        "kl": lens_kl_chart(ev),
    }
    for name, chart in charts.items():
        png = save_chart(chart, tmp_path / f"{name}.png", scale=1.0)
        pixels = png_pixels(png.read_bytes())
        rgb = pixels[..., :3]
        assert rgb.shape[0] > 50 and rgb.shape[1] > 100
        assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 8, f"{name}.png looks blank"
        svg = save_chart(chart, tmp_path / f"{name}.svg").read_text()
        assert "<svg" in svg and ("<path" in svg or "<rect" in svg)
    with pytest.raises(ValueError, match="use one of"):
        save_chart(charts["kl"], tmp_path / "kl.gif")
    with pytest.raises(ValueError, match="several views"):
        lens_heatmap(heat, view=None)


def test_heatmap_html_renders_offline_in_chromium(tables, tmp_path):
    heat = tables[0]
    html = save_chart(lens_heatmap(heat), tmp_path / "heat.html").read_text()
    assert not re.search(r"<script[^>]+src=", html), "the HTML must not load scripts from a CDN"
    assert "vega-embed" in html
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no headless Chromium (apt-get install chromium)")
    profile = tmp_path / "profile"
    result = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            (tmp_path / "heat.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    dom = result.stdout
    assert 'class="mark-rect role-mark' in dom, result.stderr[-2000:]
    cells = re.findall(r'aria-roledescription="text mark"[^>]*>([^<]*)</text>', dom)
    n_cells = heat[heat.view == "full"].shape[0]
    assert len(cells) >= n_cells  # a label per cell (+ word labels)
    shown = {c.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&") for c in cells}
    assert any(
        str(t)[:8] in shown for t in heat[heat.view == "full"]["top_token"] if str(t).isprintable() and t
    )
    assert 'class="mark-rule role-mark' in dom  # word boundaries
