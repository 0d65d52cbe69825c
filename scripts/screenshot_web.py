"""Regenerate ``docs/img/web_app.png``: the web app in headless Chromium, a bundled example
(``examples/dark_chelsea.jpg``) enhanced by the shipped model. Rerun it after the weights change.

    python scripts/screenshot_web.py                       # the shipped default model
    python scripts/screenshot_web.py --model runs/lite/best.safetensors --out /tmp/web.png

It runs the screenshot step of the browser test (``tests/test_browser.py``) with
``MRVAE_SCREENSHOT`` and ``MRVAE_SCREENSHOT_MODEL`` set, so the page is driven exactly as the
test drives it. Needs Chromium, chromedriver and selenium (``scripts/setup.sh`` as root).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from mrvae.nn.config import DEFAULT_MODEL

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="preset name or weights path to serve")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "web_app.png")
    args = parser.parse_args()
    out = args.out.resolve()
    before = out.stat().st_mtime_ns if out.exists() else None
    env = {**os.environ, "MRVAE_SCREENSHOT": str(out), "MRVAE_SCREENSHOT_MODEL": args.model}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                             str(ROOT / "tests" / "test_browser.py"), "-k",
                             "screenshot_of_an_enhanced_example"], env=env, cwd=ROOT, check=False)
    if result.returncode != 0:
        return result.returncode
    if not out.exists() or out.stat().st_mtime_ns == before:
        print(f"error: no screenshot written to {out} (was the browser test skipped?)",
              file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
