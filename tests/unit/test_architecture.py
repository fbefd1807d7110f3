"""The package's shape: no hidden imports of our own modules inside functions (import-linter, run by `make test`,
checks the layers; it cannot tell a function-level import from a top-level one, so this test does)."""

import ast
from pathlib import Path

import rt_lightning

PACKAGE = Path(rt_lightning.__file__).resolve().parent


def _nested_own_imports(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                names = []
                if isinstance(inner, ast.ImportFrom) and inner.level == 0 and inner.module:
                    names = [inner.module]
                elif isinstance(inner, ast.Import):
                    names = [alias.name for alias in inner.names]
                names = [n for n in names if n == "rt_lightning" or n.startswith("rt_lightning.")]
                found += [(inner.lineno, n) for n in names]
    return found


def test_no_function_level_imports_of_our_own_modules():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for line, name in _nested_own_imports(ast.parse(path.read_text(encoding="utf-8"))):
            offenders.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}")
    assert not offenders, "function-level imports hide cycles; import at the top:\n" + "\n".join(offenders)


def test_relative_imports_are_not_used():
    relative = [f"{p.relative_to(PACKAGE.parent)}:{n.lineno}" for p in sorted(PACKAGE.rglob("*.py"))
                for n in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
                if isinstance(n, ast.ImportFrom) and n.level > 0]
    assert not relative, f"use absolute imports (the layer contract reads them): {relative}"
