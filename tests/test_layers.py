"""The package is one downward stack: every import goes to a lower layer (or stays inside its
own package), there is no import cycle, and no import is hidden in a function to dodge one.

A newcomer reads the layers bottom-up: foundations → maths and the simulator → data,
Lightning modules and loggers → localisation → evaluation → the learning phases → the pipeline →
entry points.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "camsim"

#: lowest first; a module may import from lower layers and from its own package
LAYERS = [
    ("camsim.plain",),  # dependency-free helpers under everything (no Hydra: camsim.models.portable)
    ("camsim", "camsim.config", "camsim.artefacts", "camsim.progress", "camsim.machine"),
    ("camsim.plots", "camsim.models", "camsim.synth"),
    ("camsim.loggers", "camsim.data", "camsim.lit"),
    ("camsim.localize",),
    ("camsim.eval",),
    ("camsim.phases",),  # the learning phases and the job's RunState, run by the pipeline
    ("camsim.pipeline", "camsim.compare", "camsim.guard"),
    ("camsim.bench", "camsim.cli"),
]
#: entry points may defer their heavy imports so that ``--help`` answers at once; the bench
#: imports each row's modules in that row's own process, so its memory figure is the row's own
DEFERRED_OK = ("camsim.cli", "camsim.bench")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported camsim module, imported inside a function) for every import in ``path``."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from pkg import submodule`` imports the submodule, not all of pkg's __init__
            subs = [f"{node.module}.{a.name}" for a in node.names]
            names = [s for s in subs if s in MODULE_PATHS] or [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        found += [(n, node.col_offset > 0) for n in names if n == "camsim" or n.startswith("camsim.")]
    return found


MODULE_PATHS = {_module_name(p) for p in ROOT.rglob("*.py")}
MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _layer(module: str) -> tuple[int, str]:
    """(layer index, owning package) of a module: the longest matching prefix wins."""
    best = None
    for i, members in enumerate(LAYERS):
        for pkg in members:
            if module == pkg or module.startswith(pkg + "."):
                if best is None or len(pkg) > len(best[1]):
                    best = (i, pkg)
    if best is None:
        raise AssertionError(f"{module} is in no layer of tests/test_layers.py: add it")
    return best


def test_every_module_has_a_layer() -> None:
    for m in MODULES:
        _layer(m)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_down_the_stack(module: str) -> None:
    lay, pkg = _layer(module)
    for target, _ in _imports(MODULES[module]):
        t_lay, t_pkg = _layer(target)
        if t_pkg == pkg or target == "camsim":
            continue
        assert t_lay < lay, f"{module} (layer {lay}, {pkg}) imports {target} (layer {t_lay}, {t_pkg}): up or across"


def test_no_import_cycle() -> None:
    graph = {m: {t for t, _ in _imports(p) if t in MODULES and t != m} for m, p in MODULES.items()}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(t):] + [t]))
            if t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_no_import_hidden_in_a_function() -> None:
    hidden = [f"{m} -> {t}" for m, p in MODULES.items() if not m.startswith(DEFERRED_OK)
              for t, deferred in _imports(p) if deferred]
    assert not hidden, f"function-level camsim imports (move them to the top): {hidden}"


def test_feature_pass_does_not_load_lightning() -> None:
    code = ("import sys, camsim.models.feature_pass; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning') "
            "or m.startswith('camsim.lit')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_modules_stay_small() -> None:
    big = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > 500}
    assert not big, f"modules over 500 lines: {big}"
