"""The patching heatmap: facets per component, readable token labels, word boundaries, offline HTML."""

from __future__ import annotations

import json

import pytest

from slm_transformerlens.patching import (
    LogitDiff,
    PatchingError,
    activation_patch_sweep,
    text_token_id,
)
from slm_transformerlens.viz.patching import head_heatmap, patching_heatmap, readable_token, save_html


@pytest.fixture(scope="module")
def result(model, equal_pair):
    positions = {run: equal_pair.word_position(3, run, "before") for run in ("clean", "corrupted")}
    metric = LogitDiff(equal_pair.word_tokens(3, "clean")[0], text_token_id(model, "the"), positions)
    return activation_patch_sweep(
        model, equal_pair, metric, components=("resid_pre", "attn_out", "head_out_all_pos"), progress=False
    )


def test_heatmap_spec(result) -> None:
    spec = patching_heatmap(result).to_dict()
    assert spec["facet"]["column"]["field"] == "component"
    rows = spec["datasets"][next(iter(spec["datasets"]))]
    assert {r["component"] for r in rows} == {"resid_pre", "attn_out"}
    labels = {r["label"] for r in rows}
    assert "·the (2)" in labels and "[Hu11] (5)" in labels
    edges = {r["slot"]: r["edge"] for r in rows if r.get("edge")}
    assert edges[5] == "diff" and edges[9] == "diff"  # the spoken word's span is framed in black
    assert edges[3] == "word"
    layers = spec["spec"]["layer"]
    assert layers[0]["mark"]["type"] == "rect" and layers[1]["mark"]["type"] == "rule"


def test_head_heatmap_and_errors(result) -> None:
    spec = head_heatmap(result).to_dict()
    assert spec["encoding"]["x"]["field"] == "head"
    with pytest.raises(PatchingError, match="metric"):
        patching_heatmap(result, metric="nope")
    with pytest.raises(PatchingError, match="no rows"):
        patching_heatmap(result, direction="noise")


def test_offline_html(result, tmp_path) -> None:
    path = save_html(patching_heatmap(result), tmp_path / "patching.html")
    html = path.read_text()
    assert "cdn.jsdelivr" not in html and '<script src="http' not in html
    assert "vega-lite" in html.lower() and len(html) > 100_000  # the libraries are inlined
    assert json.dumps("resid_pre")[1:-1] in html


def test_readable_token() -> None:
    assert readable_token("▁girl") == "·girl"
    assert readable_token("Ġthe") == "·the"
    assert readable_token("a\x00") == "a\\x00"
