"""Every module imports, and the layering holds (DESIGN: ops -> procs -> engine/models/shm).

Why: a module nothing imports at test time can break unseen, an import cycle hidden by a
function-level import fails only on the path that runs it first, and the transport (``shm``)
must stay free of trading code. These checks fail at once instead.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "procs", "ops", "shm", "models")


def _modules(package: str) -> list[str]:
    pkg = importlib.import_module(package)
    return [package] + [m.name for m in pkgutil.walk_packages(pkg.__path__, package + ".")]


def _run(code: str) -> str:
    """Run ``code`` in a fresh interpreter at the repository root; its stdout."""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _imported_names(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (function-level imports included)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


@pytest.mark.parametrize("package", PACKAGES)
def test_every_module_imports(package: str) -> None:
    failed = {}
    for name in _modules(package):
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 (collect them all, then report)
            failed[name] = repr(exc)
    assert not failed, failed


def test_shm_imports_nothing_of_the_project() -> None:
    code = (
        "import importlib, pkgutil, sys, shm\n"
        "for m in pkgutil.walk_packages(shm.__path__, 'shm.'):\n"
        "    importlib.import_module(m.name)\n"
        "print(sorted(k for k in sys.modules if k.split('.')[0] in "
        "('engine', 'procs', 'ops', 'models')))\n"
    )
    assert _run(code) == "[]"
    lazy = {  # a function-level import would only show when called: read the sources too
        str(p.relative_to(ROOT)): sorted(
            n for n in _imported_names(p) if n.split(".")[0] in ("engine", "procs", "ops", "models")
        )
        for p in sorted((ROOT / "shm").rglob("*.py"))
    }
    assert {k: v for k, v in lazy.items() if v} == {}


@pytest.mark.parametrize("first", ["ops.model_cmds", "ops.store.db_cmds"])
def test_cli_subcommand_modules_import_first_without_the_cli(first: str) -> None:
    assert _run(f"import sys, {first}; print('ops.cli' in sys.modules)") == "False"
    assert _run(f"import {first}, ops.cli; print('ok')") == "ok"


def test_no_module_imports_the_cli_back() -> None:
    """``ops.cli`` is the top: the subcommand modules share helpers through ``ops.cli_common``."""
    offenders = [
        str(p.relative_to(ROOT))
        for p in sorted((ROOT / "ops").rglob("*.py"))
        if p.name != "cli.py" and "ops.cli" in _imported_names(p)
    ]
    assert offenders == []
