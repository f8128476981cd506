"""The dependency rules of docs/design.md §2, checked on the source (static import graph):
no import cycles in ``spectra`` or ``lra_data`` (imports inside functions count too), the math
layer imports only torch and itself, ``lra_data`` nothing of ``spectra``, the registry nothing of
``spectra``; no private Hydra API and no ``sys.path`` edits anywhere in the project's code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("spectra", "lra_data")
FRAMEWORKS = {"lightning", "hydra", "omegaconf", "wandb", "datasets", "pandas"}
MATH = ("spectra.registry", "spectra.checks", "spectra.features", "spectra.attention",
        "spectra.ops")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p
            for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def imported(path: Path, name: str) -> set[str]:
    """Every module ``path`` imports (absolute names; relative imports resolved), at any depth."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.add(base)
            out |= {f"{base}.{alias.name}" for alias in node.names}
    return out


def graph() -> dict[str, set[str]]:
    """Edges between the project's own modules (an import of ``a.b`` also imports ``a``)."""
    known = modules()
    edges: dict[str, set[str]] = {}
    for name, path in known.items():
        targets = set()
        for target in imported(path, name):
            parts = target.split(".")
            targets |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & known.keys()
        # a module's own package __init__ runs before it: that edge is no cycle of ours
        targets -= {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
        edges[name] = targets
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a list of modules, or ``None``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycles():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("name", [m for m in modules() if m.startswith(MATH)])
def test_math_layer_imports_only_torch_and_itself(name):
    path = modules()[name]
    project = {t for t in imported(path, name) if t.split(".")[0] in {"spectra", "lra_data"}}
    outside = sorted(t for t in project if not t.startswith(MATH) and t != "spectra")
    assert not outside, f"{name} imports {outside}"
    frameworks = sorted(t for t in imported(path, name) if t.split(".")[0] in FRAMEWORKS)
    assert not frameworks, f"{name} imports {frameworks}"


def test_registry_imports_nothing_from_spectra():
    name = "spectra.registry"
    assert not {t for t in imported(modules()[name], name) if t.startswith("spectra")}


@pytest.mark.parametrize("name", [m for m in modules() if m.startswith("lra_data")])
def test_lra_data_imports_nothing_from_spectra(name):
    assert not {t for t in imported(modules()[name], name) if t.split(".")[0] == "spectra"}


def project_sources() -> list[Path]:
    files = [ROOT / "train.py", *sorted((ROOT / "scripts").glob("*.py"))]
    for package in (*PACKAGES, "plugins"):
        files += sorted((ROOT / package).rglob("*.py"))
    return [f for f in files if f.exists()]


@pytest.mark.parametrize("path", project_sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_hydra_api_and_no_sys_path_edits(path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        assert not any(n.startswith("hydra._internal") for n in names), \
            f"{path.name}:{node.lineno} uses hydra._internal"
        if isinstance(node, ast.Attribute) and node.attr == "path" and \
                isinstance(node.value, ast.Name) and node.value.id == "sys":
            parent_call = ast.unparse(node)
            assert False, f"{path.name}:{node.lineno} touches {parent_call}"
