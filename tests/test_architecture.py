"""The package's shape: layers that point one way, no import circles, modules of one page."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "mrvae"
MAX_LINES = 500


def test_import_contracts_hold() -> None:
    """The contracts in pyproject.toml ([tool.importlinter]): the layers and no circles.

    In a process of its own: import-linter configures logging, which would silence the loggers
    of the modules that the other tests have imported.
    """
    check = ("import sys; from importlinter.cli import lint_imports; "
             "sys.exit(lint_imports(no_cache=True))")
    result = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_contracts_name_every_subpackage() -> None:
    """A new subpackage must be given its layer."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c["layers"] for c in config["contracts"] if c["type"] == "layers"]
    named = {name.strip() for layer in layers for name in layer.split("|")}
    subpackages = {f"mrvae.{p.parent.name}" for p in PACKAGE.glob("*/__init__.py")}
    assert subpackages == named


@pytest.mark.parametrize("module", sorted(p.relative_to(PACKAGE).as_posix()
                                          for p in PACKAGE.rglob("*.py")))
def test_modules_stay_under_a_page_limit(module: str) -> None:
    lines = (PACKAGE / module).read_text().count("\n")
    assert lines <= MAX_LINES, f"{module}: {lines} lines; split it by job"
