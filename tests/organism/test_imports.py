"""The training stage imports without TransformerLens / jaxtyping; the package's public names stay lazy."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )


def test_train_module_imports_without_transformer_lens() -> None:
    result = _run(
        """
        import sys
        for name in ("transformer_lens", "jaxtyping", "espeakng_loader", "sklearn"):
            sys.modules[name] = None  # importing any of them now raises ImportError
        import slm_transformerlens.organism.train as train
        import slm_transformerlens
        from slm_transformerlens.cli import build_parser
        args = build_parser().parse_args(["organism", "train", "--data", "d", "--device", "cuda"])
        assert args.stage == "train" and args.device == "cuda"
        assert "slm_transformerlens.model" not in sys.modules
        print(train.train_all.__name__, slm_transformerlens.__version__)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "train_all 0.1.0" in result.stdout


def test_public_names_still_import() -> None:
    result = _run(
        """
        import slm_transformerlens as slt
        from slm_transformerlens import Speech, load, SLMError
        assert callable(load) and Speech is slt.Speech and issubclass(slt.VocabularyError, SLMError)
        assert set(slt.__all__) <= set(dir(slt))
        try:
            slt.not_a_name
        except AttributeError as error:
            print("ok", error)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout and "not_a_name" in result.stdout
