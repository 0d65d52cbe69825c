"""The bundled examples, enhanced by the CLI, against outputs made before a change.

``tests/data/reference/`` holds the JPEG outputs of ``mrvae enhance examples/`` and, in
``pixels.json``, a SHA-256 of the decoded pixels of PNG outputs under several flags, written by
the commit before a refactoring (``python tests/test_reference_outputs.py`` writes them again,
on purpose only: when the shipped model or a default changes the pictures). They run in float32
throughout (``--backend torch-float32``), so they do not depend on whether the CPU computes
bfloat16 (the default's DR body uses it where it does; ``test_enhance`` checks it against
float32).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
REFERENCE = Path(__file__).resolve().parent / "data" / "reference"
# name -> extra flags; each covers one path through the engine (stages on and off, exposure)
VARIANTS = {
    "default": [],
    "detail": ["--detail", "1"],
    "brighter": ["--exposure", "1"],
    "darker_detail": ["--exposure", "-1", "--detail", "0.5"],
    "no_refine": ["--no-refine"],
    "small_tiles": ["--tile", "64", "--global-size", "128"],
}


def _enhance(out: Path, *flags: str) -> list[Path]:
    subprocess.run([sys.executable, "-m", "mrvae", "enhance", str(EXAMPLES), "-o", str(out),
                    "--backend", "torch-float32", *flags],
                   check=True, capture_output=True, timeout=300)
    return sorted(out.iterdir())


def _pixel_digest(path: Path) -> str:
    with Image.open(path) as image:
        return hashlib.sha256(np.asarray(image).tobytes()).hexdigest()


def _variant_digests(tmp: Path) -> dict[str, dict[str, str]]:
    return {name: {p.name: _pixel_digest(p)
                   for p in _enhance(tmp / name, "--format", "png", *flags)}
            for name, flags in VARIANTS.items()}


@pytest.mark.slow
def test_jpeg_outputs_are_byte_identical(tmp_path: Path) -> None:
    outputs = _enhance(tmp_path / "jpg")
    references = sorted(REFERENCE.glob("*.jpg"))
    assert [p.name for p in outputs] == [p.name for p in references]
    for made, reference in zip(outputs, references, strict=True):
        if made.read_bytes() != reference.read_bytes():
            with Image.open(made) as a, Image.open(reference) as b:
                diff = np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16))
            pytest.fail(f"{made.name} differs: max {diff.max()}, mean {diff.mean():.4f} levels")


@pytest.mark.slow
def test_png_pixels_are_identical_under_every_flag(tmp_path: Path) -> None:
    expected = json.loads((REFERENCE / "pixels.json").read_text())
    assert _variant_digests(tmp_path) == expected


def write_references() -> None:
    """Write the references from this checkout (run it on purpose, see the module doc)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        REFERENCE.mkdir(parents=True, exist_ok=True)
        for old in REFERENCE.glob("*.jpg"):
            old.unlink()
        for made in _enhance(Path(tmp) / "jpg"):
            shutil.copy(made, REFERENCE / made.name)
        digests = _variant_digests(Path(tmp))
    (REFERENCE / "pixels.json").write_text(json.dumps(digests, indent=2) + "\n")


if __name__ == "__main__":
    write_references()
