#!/usr/bin/env bash
# Install mrvae and its test tools. Installs the CPU build of PyTorch unless an NVIDIA GPU is
# present, so a CPU-only machine never downloads the multi-GB CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    "$PY" -m pip install torch
  else
    # A local CPU wheel first (pip's find-links), else PyTorch's CPU-only index.
    "$PY" -m pip install "torch==2.13.0+cpu" 2>/dev/null \
      || "$PY" -m pip install torch --index-url https://download.pytorch.org/whl/cpu
  fi
fi
# The real-browser test (tests/test_browser.py) needs Debian's Chromium and its driver; CI runs
# this as root. Elsewhere, without root or apt, the test is skipped with the reason.
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get update -q
  apt-get install -y -q --no-install-recommends chromium chromium-driver
fi
"$PY" -m pip install -q -e ".[dev]"
