"""circuitsvis on speech tokens: labels survive HTML parsing, values are ours, the page needs no network."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest
import torch
from interop_helpers import utterance

from slm_transformerlens.interop import InteropError
from slm_transformerlens.interop.circuits_vis import attention_view, html_safe_labels, save_html, token_view


class _Fragment(HTMLParser):
    """What a browser's innerHTML makes of a label: its text, and any tags it would swallow."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text, self.tags = "", []

    def handle_data(self, data: str) -> None:
        self.text += data

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.append(tag)

    def handle_endtag(self, tag) -> None:
        self.tags.append(tag)


def _as_inner_html(label: str) -> tuple[str, list[str]]:
    parser = _Fragment()
    parser.feed(label)
    parser.close()
    return parser.text, parser.tags


def _props(page: str) -> dict:
    """The JSON props circuitsvis passes to its React component."""
    match = re.search(r"CircuitsVis\.\w+,\s*(\{.*\})\s*\)\s*</script>", page, re.S)
    assert match, "no CircuitsVis.render call in the page"
    return json.loads(match.group(1))


def test_labels_render_exactly_where_raw_tokens_vanish(spiritlm_model, checkpoint_factory):
    import slm_transformerlens as slt

    path, kwargs = checkpoint_factory("sims-qwen2-tied")
    sims = slt.load(path, progress=False, **kwargs)
    for model in (sims, spiritlm_model):
        str_tokens = model.to_str_tokens(utterance())
        for token, label in zip(str_tokens, html_safe_labels(str_tokens), strict=True):
            assert _as_inner_html(label) == (token, [])
        assert _as_inner_html("<Un71>")[1] == ["un71"]  # the raw token is read as a tag: what we fix


def test_token_view_is_offline_and_carries_our_values(spiritlm_model, tmp_path):
    model = spiritlm_model
    tokens = model.to_tokens(utterance())
    with torch.no_grad():
        values = model(tokens)[0].log_softmax(-1).max(-1).values
    page_path = save_html(token_view(model, utterance(), values), tmp_path / "tokens.html")
    page = page_path.read_text(encoding="utf-8")
    assert "unpkg.com" not in page and not re.search(r"<script[^>]+src=", page)
    props = _props(page)
    assert [_as_inner_html(t)[0] for t in props["tokens"]] == model.to_str_tokens(utterance())
    assert props["values"] == pytest.approx(values.tolist(), abs=1e-6)
    with pytest.raises(InteropError, match="one value per token"):
        token_view(model, utterance(), values[:-1])


def test_attention_view_shows_the_models_attention(spiritlm_model, tmp_path):
    model = spiritlm_model
    page = save_html(attention_view(model, utterance(), layer=1), tmp_path / "attn.html").read_text()
    props = _props(page)
    _, cache = model.run_with_cache(utterance())
    expected = cache["blocks.1.attn.hook_pattern"][0]
    assert torch.tensor(props["attention"]).shape == expected.shape
    torch.testing.assert_close(torch.tensor(props["attention"]), expected.float(), atol=1e-6, rtol=0)
    assert props["tokens"] == html_safe_labels(model.to_str_tokens(utterance()))
    assert props["tokens"][0] == "&lt;s&gt;"  # SpiritLM's BOS, which a raw strip would drop
