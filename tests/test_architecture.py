"""The package's layers: no upward import, no import cycle (see docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "slm_transformerlens"

#: Layer of each top-level module or subpackage (lower numbers are lower layers).
CORE, BUILDERS, OUTPUT, APPS, TESTING = 0, 1, 1, 2, 3
LAYERS: dict[str, int] = {
    **dict.fromkeys(
        [
            "__init__",
            "_deprecation",
            "errors",
            "vocab",
            "spans",
            "hooks",
            "protocols",
            "checkpoints",
            "model",
            "legacy",
            "speech",
            "lens",
            "patching",
            "checks",
            "jsonfile",
            "outputs",
            "safe_pickle",
            "knowledge",
            "interop",
        ],
        CORE,
    ),
    "builders": BUILDERS,
    "organism": BUILDERS,
    "viz": OUTPUT,
    "cli": APPS,
    "apps": APPS,
    "testing": TESTING,
}
#: Groups of one layer that must not import each other (builders and output are side by side).
SIDE_BY_SIDE = {"builders": {"viz"}, "organism": {"viz"}, "viz": {"builders", "organism"}}
#: Deprecated module shims (one release): they alias a module that moved up a layer.
SHIMS = {"demo", "report", "summary", "plotting", "html", "patching/plot"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).with_suffix("").as_posix()
        out[name.removesuffix("/__init__") if name.endswith("/__init__") else name] = path
    return out


def _imports(path: Path, *, module_level_only: bool) -> set[str]:
    """Package modules imported by ``path`` (``a/b`` form); function-level imports too unless told not to."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    if module_level_only:  # also look inside module-level if / try blocks
        nodes = [n for top in tree.body for n in ast.walk(top) if not isinstance(top, ast.FunctionDef)]
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    prefix = "slm_transformerlens."
    return {n[len(prefix) :].replace(".", "/") for n in names if n.startswith(prefix)}


def _top(name: str) -> str:
    return name.split("/")[0]


def _type_checking_only(path: Path) -> set[str]:
    """Modules imported under ``if TYPE_CHECKING:`` (not imports at run time)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            for inner in node.body:
                if isinstance(inner, ast.ImportFrom) and inner.module:
                    found.add(inner.module.removeprefix("slm_transformerlens.").replace(".", "/"))
    return found


@pytest.mark.parametrize("name", sorted(set(_modules()) - SHIMS))
def test_no_upward_import(name: str) -> None:
    path = _modules()[name]
    layer = LAYERS[_top(name)]
    modules = _modules()
    for target in _imports(path, module_level_only=False) - _type_checking_only(path):
        if target not in modules:  # an imported name, not a module
            continue
        top = _top(target)
        assert LAYERS[top] <= layer, f"{name} (layer {layer}) imports {target} (layer {LAYERS[top]})"
        assert top not in SIDE_BY_SIDE.get(_top(name), set()), f"{name} imports {target}"


@pytest.mark.parametrize("module_level_only", [True, False], ids=["module-level", "any-import"])
def test_no_import_cycle(module_level_only: bool) -> None:
    """No cycle between package modules, even through imports inside functions (a lazy import that
    only hides a circle: build <-> placement, base <-> precision, tuned_lens_format <-> tuned_lens)."""
    modules = _modules()
    graph = {
        name: {t for t in _imports(path, module_level_only=module_level_only) if t in modules and t != name}
        for name, path in modules.items()
    }
    # a package's __init__ importing its own submodules is not a cycle for these purposes
    graph = {name: {t for t in targets if not t.startswith(name + "/")} for name, targets in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_every_module_has_a_layer() -> None:
    missing = sorted({_top(name) for name in set(_modules()) - SHIMS} - set(LAYERS))
    assert not missing, f"add {missing} to LAYERS in tests/test_architecture.py and to docs/architecture.md"


def _private_imports(path: Path) -> list[str]:
    """``module.name`` for each ``_name`` this file imports from another package module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            found.append(f"relative import from {'.' * node.level}{node.module or ''}")
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("slm_transformerlens"):
            found += [
                f"{node.module}.{alias.name}"
                for alias in node.names
                if alias.name.startswith("_") and not alias.name.startswith("__")
            ]
    return found


def test_no_private_name_imported_across_modules() -> None:
    """A leading underscore means private to its module: another module imports only public names
    (``_deprecation`` is a module name, not a private name, and stays allowed)."""
    offenders = {
        name: bad
        for name, path in _modules().items()
        if (bad := [b for b in _private_imports(path) if not b.endswith("._deprecation")])
    }
    assert not offenders, f"modules importing another module's private names: {offenders}"


def test_tuned_lens_file_names_agree() -> None:
    """The tuned-lens format's file names are defined in interop (no import back into lens)."""
    from slm_transformerlens.interop import tuned_lens_format
    from slm_transformerlens.lens import tuned_lens

    assert tuned_lens.PUBLISHED_PARAMS_NAME == tuned_lens_format.TUNED_LENS_PARAMS_NAME == "params.pt"
    assert tuned_lens.CONFIG_NAME == tuned_lens_format.TUNED_LENS_CONFIG_NAME == "config.json"
