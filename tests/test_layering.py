"""The import graph of ``fastmle/``: imports only go down the layers, and there is no
cycle (module-level and function-level imports alike), checked by walking the AST
of every module.

    0  _kinds, _reduction, _docs, _progress    what an array is; small helpers
    1  _rules, _calls                           argument rules; records and tables
    2  _cpu                                     the Numba CPU kernels and backend
    3  cuda, dask                               the other backends (dask may use _cpu)
    4  _dispatch                                which backend runs a call
    5  bernoulli, categorical, gaussian, poisson   the public functions
    6  models                                   the estimators
    7  cli, _data, demo, bench, __main__        the application

``fastmle/__init__.py`` is the public face: it imports the public functions and
loads the estimators on first use; only the application imports it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "fastmle"

LAYERS = {
    "_kinds": 0,
    "_reduction": 0,
    "_docs": 0,
    "_progress": 0,
    "_rules": 1,
    "_calls": 1,
    "_cpu": 2,
    "cuda": 3,
    "dask": 3,
    "_dispatch": 4,
    "bernoulli": 5,
    "categorical": 5,
    "gaussian": 5,
    "poisson": 5,
    "models": 6,
    "cli": 7,
    "_data": 7,
    "demo": 7,
    "bench": 7,
    "__main__": 7,
}
BACKENDS = {"_cpu", "cuda", "dask"}
MAY_USE = {("dask", "_cpu")}  # the Dask backend maps the CPU kernels over chunks


def _modules() -> dict[str, Path]:
    mods = {}
    for p in PKG.rglob("*.py"):
        rel = p.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = p
    return mods


MODULES = _modules()


def _resolve(name: str, here: str, is_pkg: bool, level: int) -> str:
    if level == 0:
        return name
    base = here.split(".") if is_pkg else here.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _imports(mod: str, path: Path) -> set[str]:
    """The fastmle modules ``mod`` imports, anywhere in its body."""
    is_pkg = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(node.module or "", mod, is_pkg, node.level)
            names = [
                f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target
                for a in node.names
            ]
        else:
            continue
        for n in names:
            while n and n not in MODULES:  # a name inside a module: the module
                n = n.rpartition(".")[0]
            if n.startswith("fastmle") and n != mod:
                found.add(n)
    return found


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def _unit(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_module_has_a_layer():
    missing = sorted({_unit(m) for m in MODULES} - set(LAYERS) - {"__init__"})
    assert not missing, f"add these modules to the layer table: {missing}"


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_imports_only_go_down(mod):
    src = _unit(mod)
    for dep in GRAPH[mod]:
        dst = _unit(dep)
        if src == dst:
            continue
        if dst == "__init__":
            assert src == "__init__" or LAYERS[src] == LAYERS["cli"], (
                f"{mod} imports the fastmle package itself: import the module that "
                f"defines the name instead"
            )
            continue
        if src == "__init__":
            continue  # the public face imports the public functions and the estimators
        app = LAYERS[src] == LAYERS[dst] == LAYERS["cli"]  # the application composes itself
        assert LAYERS[dst] < LAYERS[src] or app or (src, dst) in MAY_USE, (
            f"{mod} (layer {LAYERS[src]}) imports {dep} (layer {LAYERS[dst]}): imports must go down"
        )
        if src in BACKENDS and dst in BACKENDS:
            assert (src, dst) in MAY_USE, f"backend {mod} imports backend {dep}"


def test_no_cycle():
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for d in sorted(GRAPH[m]):
            if state.get(d) == 1:
                cycle = stack[stack.index(d) :] + [d]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(MODULES):
        if m not in state:
            visit(m, [m])


def test_the_walk_sees_imports():
    """The walk resolves relative, function-level and from-package imports."""
    assert "fastmle._cpu.elementwise" in GRAPH["fastmle._cpu.backend"]
    assert "fastmle._cpu.backend" in GRAPH["fastmle._dispatch"]  # inside a function
    assert "fastmle._calls" in GRAPH["fastmle.poisson"]
