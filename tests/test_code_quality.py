"""The code's own checks, run with the suite: strict typing (mypy), lint (ruff), the layers
(import-linter's contracts in pyproject.toml), and the size of p2psched's modules and
functions."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_mypy_strict_finds_nothing() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "p2psched"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_ruff_finds_nothing() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "p2psched", "tests", "bench"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_package_directory_is_a_regular_package() -> None:
    """A folder of modules without __init__.py is left out of a (non-editable) install."""
    for folder in (ROOT / "p2psched").rglob("*"):
        if folder.is_dir() and any(folder.glob("*.py")):
            assert (folder / "__init__.py").exists(), f"{folder} has no __init__.py"


def test_the_layers_hold() -> None:
    """import-linter's contracts (pyproject.toml): each layer imports only from those below it,
    no role imports another, and the sans-I/O cores never import trio."""
    lint_imports = Path(sys.executable).parent / "lint-imports"
    out = subprocess.run([str(lint_imports)], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80


def test_no_module_or_function_of_p2psched_is_too_long() -> None:
    """A module over 600 lines or a function over 80 holds more than one thing: split it.
    (p2psched/ only: tests and benchmarks are not held to it.)"""
    offenders = []
    for path in sorted((ROOT / "p2psched").rglob("*.py")):
        source = path.read_text()
        where = path.relative_to(ROOT)
        lines = len(source.splitlines())
        if lines > MAX_MODULE_LINES:
            offenders.append(f"{where}: {lines} lines (module)")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    offenders.append(f"{where}:{node.lineno}: {node.name}, {length} lines")
    assert not offenders, "over the limits (600 a module, 80 a function):\n" + "\n".join(offenders)
