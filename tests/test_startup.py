"""Start-up: ``import mrvae`` and the command line's help load no torch (nor numpy, OpenCV...);
the library's public names load their modules on first use.

Each check runs in a fresh interpreter: this one has imported torch long ago.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "kornia", "numpy", "cv2", "PIL", "onnxruntime", "av", "skimage")


def run_python(code: str, env: dict[str, str] | None = None) -> dict:
    """Run ``code`` in a fresh interpreter; the JSON it prints last."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cli_run(*args: str) -> str:
    """Python code that runs ``mrvae ARGS`` in process and prints its exit code, output and
    the heavy modules then loaded."""
    return f"""
import json, sys
from typer.testing import CliRunner
from mrvae.apps.cli import app
result = CliRunner().invoke(app, {list(args)!r})
print(json.dumps({{"code": result.exit_code, "output": result.output,
                   "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""


@pytest.mark.parametrize("args", [("--help",), ("enhance", "--help"), ("--version",)])
def test_help_and_version_load_no_heavy_module(args: tuple[str, ...]) -> None:
    result = run_python(cli_run(*args))
    assert result["code"] == 0 and result["output"]
    assert result["heavy"] == []


def test_a_missing_input_fails_before_torch_loads(tmp_path: Path) -> None:
    result = run_python(cli_run("enhance", "--no-progress", str(tmp_path / "nothere.jpg")))
    assert result["code"] == 1 and "no such file or directory" in result["output"]
    assert "torch" not in result["heavy"]


def test_public_names_load_on_first_use() -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "NUMPY_MADVISE_HUGEPAGE")}
    result = run_python("""
import json, os, sys
import mrvae
before = "torch" in sys.modules
from mrvae import Enhancer, Refinement, enhance
import numpy
import mrvae.engine.enhancer, mrvae.engine.refine, mrvae.nn.model
same = (Enhancer is mrvae.engine.enhancer.Enhancer and enhance is mrvae.engine.enhancer.enhance
        and Refinement is mrvae.engine.refine.Refinement
        and all(getattr(mrvae, name) is getattr(mrvae.nn.model, name)
                for name in ("MRVAE", "ModelConfig", "create_model", "from_pretrained", "load")))
print(json.dumps({"torch_before": before, "same": same, "all": mrvae.__all__,
                  "dir": dir(mrvae), "omp": os.environ.get("OMP_WAIT_POLICY"),
                  "huge_pages": numpy._core.multiarray._get_madvise_hugepage()}))
""", env)
    assert result["torch_before"] is False and result["same"] is True
    assert set(result["all"]) == {"MRVAE", "Enhancer", "ModelConfig", "Refinement",
                                  "__version__", "create_model", "enhance", "from_pretrained",
                                  "load"}
    assert set(result["all"]) <= set(result["dir"])
    assert result["omp"] == "PASSIVE"
    assert result["huge_pages"] is False  # numpy read mrvae's NUMPY_MADVISE_HUGEPAGE=0


def test_unknown_names_are_attribute_errors() -> None:
    import mrvae

    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        mrvae.nothing  # noqa: B018
