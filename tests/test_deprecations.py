"""Moved names and modules keep working for one release, each with a DeprecationWarning."""

from __future__ import annotations

import importlib
import sys

import pytest

MOVED_NAMES = [
    (
        "slm_transformerlens.patching",
        "patching_heatmap",
        "slm_transformerlens.viz.patching",
        "patching_heatmap",
    ),
    ("slm_transformerlens.patching", "FinalNormLens", "slm_transformerlens.lens", "LogitLens"),
    ("slm_transformerlens.patching.metrics", "LensLike", "slm_transformerlens.lens", "Lens"),
    ("slm_transformerlens.lens", "LensInputs", "slm_transformerlens.spans", "EncodedBatch"),
    ("slm_transformerlens.lens", "as_lens_inputs", "slm_transformerlens.spans", "as_encoded_batch"),
    (
        "slm_transformerlens.lens.positions",
        "SPAN_COLUMNS",
        "slm_transformerlens.spans",
        "REQUIRED_SPAN_COLUMNS",
    ),
    (
        "slm_transformerlens.speech.interleave",
        "WORD_SPAN_COLUMNS",
        "slm_transformerlens.spans",
        "WORD_SPAN_COLUMNS",
    ),
    (
        "slm_transformerlens.speech.interleave",
        "normalize_spiritlm_text",
        "slm_transformerlens.checkpoints.spiritlm",
        "normalize_spiritlm_text",
    ),
    (
        "slm_transformerlens.patching.components",
        "hook_name",
        "slm_transformerlens.patching.components",
        "patch_hook_name",
    ),
]
MOVED_MODULES = [
    ("slm_transformerlens.demo", "slm_transformerlens.apps.demo"),
    ("slm_transformerlens.report", "slm_transformerlens.apps.report"),
    ("slm_transformerlens.summary", "slm_transformerlens.apps.summary"),
    ("slm_transformerlens.plotting", "slm_transformerlens.viz.charts"),
    ("slm_transformerlens.html", "slm_transformerlens.viz.html"),
    ("slm_transformerlens.patching.plot", "slm_transformerlens.viz.patching"),
]


@pytest.mark.parametrize(("old_module", "old", "new_module", "new"), MOVED_NAMES)
def test_moved_names_warn_and_resolve(old_module: str, old: str, new_module: str, new: str) -> None:
    module = importlib.import_module(old_module)
    with pytest.warns(DeprecationWarning, match=old):
        value = getattr(module, old)
    assert value is getattr(importlib.import_module(new_module), new)


@pytest.mark.parametrize(("old", "new"), MOVED_MODULES)
def test_moved_modules_are_aliases(old: str, new: str) -> None:
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=old):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)


def test_hook_name_old_argument_order() -> None:
    from slm_transformerlens import lens
    from slm_transformerlens.hooks import hook_name

    assert hook_name("resid_post", 3) == "blocks.3.hook_resid_post"
    assert hook_name("z", 2) == "blocks.2.attn.hook_z"
    with pytest.warns(DeprecationWarning, match="hook_name"):
        assert lens.hook_name(3, "resid_post") == "blocks.3.hook_resid_post"
