"""transformer-lens 4.x: the HookedTransformer route fails with an error that names the way out."""

from __future__ import annotations

import pytest
from packaging.version import Version

from slm_transformerlens.legacy import (
    HookedTransformerUnavailableError,
    has_hooked_transformer,
    hooked_transformer_config,
    to_hooked_transformer,
    transformer_lens_version,
)

pytestmark = pytest.mark.skipif(
    Version(transformer_lens_version()).major < 4, reason="transformer-lens 3.x still has HookedTransformer"
)


def test_to_hooked_transformer_names_the_alternatives(spiritlm_checkpoint) -> None:
    assert not has_hooked_transformer()
    with pytest.raises(HookedTransformerUnavailableError, match=r"slt\.load\(\.\.\.\).*transformer-lens<4"):
        to_hooked_transformer(spiritlm_checkpoint)
    with pytest.raises(ImportError, match="removed in transformer-lens 4"):  # also an ImportError
        hooked_transformer_config(object())
