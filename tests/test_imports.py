"""The package's import graph points one way: no cycles, no import of a higher layer, function-
level imports included (a late import does not hide a cycle here)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "fastssl"

# Lower layers first. A module may import its own layer's modules and those of lower layers;
# two groups of the same rank are independent. The package root (``fastssl/__init__.py``: the
# version and lazy public entry points) is the facade above everything: any module may import
# it, and its own (lazy) imports are not checked.
LAYERS: list[tuple[int, tuple[str, ...]]] = [
    (0, ("fastssl.config", "fastssl.batch", "fastssl.seeding", "fastssl.distributed",
         "fastssl.checkpoint", "fastssl.metrics")),
    (1, ("fastssl.kernels",)),
    (1, ("fastssl.models",)),
    (1, ("fastssl.data",)),
    (1, ("fastssl.optim",)),
    (2, ("fastssl.methods",)),
    (2, ("fastssl.pipelines",)),
    (3, ("fastssl.eval", "fastssl.elo.fitness")),
    (4, ("fastssl.export",)),
    (4, ("fastssl.train",)),
    (5, ("fastssl.profile", "fastssl.profiling")),
    (5, ("fastssl.semisup",)),
    (5, ("fastssl.elo",)),
    (6, ("fastssl.cli",)),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """fastssl modules imported anywhere in the file (module level and inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for a in node.names:  # `from pkg import submodule` imports the submodule
                out.add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base)
    return {m for m in out if m in known}


def layer(name: str) -> tuple[int, str] | None:
    for rank, prefixes in LAYERS:
        for prefix in prefixes:
            if name == prefix or name.startswith(prefix + "."):
                return rank, prefixes[0]
    return None


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) - {name} for name, path in mods.items()}


def test_every_module_has_a_layer():
    missing = [m for m in modules() if m != "fastssl" and layer(m) is None]
    assert not missing, f"add these modules to LAYERS: {missing}"


def test_no_import_points_up_or_sideways():
    bad = []
    for src, targets in graph().items():
        if src == "fastssl":
            continue
        rank, group = layer(src) or (99, "")
        for dst in targets - {"fastssl"}:
            d_rank, d_group = layer(dst) or (99, "")
            if d_rank > rank or (d_rank == rank and d_group != group):
                bad.append(f"{src} -> {dst}")
    assert not bad, "imports against the layering: " + ", ".join(sorted(bad))


def test_no_cycles():
    g = {k: v - {"fastssl"} for k, v in graph().items() if k != "fastssl"}
    done: set[str] = set()

    def visit(node: str, stack: list[str]) -> None:
        if node in stack:
            pytest.fail("import cycle: " + " -> ".join(stack[stack.index(node):] + [node]))
        if node in done:
            return
        for nxt in sorted(g.get(node, ())):
            visit(nxt, [*stack, node])
        done.add(node)

    for node in sorted(g):
        visit(node, [])


def test_parser_sees_relative_and_function_level_imports(tmp_path):
    """Relative, ``from pkg import module`` and function-level imports are all edges."""
    (tmp_path / "fastssl" / "a").mkdir(parents=True)
    a = tmp_path / "fastssl" / "a" / "__init__.py"
    a.write_text("def f():\n    from . import b\n    from fastssl import config\n")
    known = {"fastssl.a", "fastssl.a.b", "fastssl.config"}
    assert imports_of("fastssl.a", a, known) == {"fastssl.a.b", "fastssl.config"}


def test_importing_the_config_loads_no_method_and_no_pipeline():
    code = ("import sys, fastssl.config; "
            "print(sorted(m for m in sys.modules if m.startswith(('fastssl.methods', "
            "'fastssl.pipelines', 'fastssl.train', 'torch'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]", out
