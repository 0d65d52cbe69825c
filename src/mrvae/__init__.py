"""mrvae: low-light image enhancement with MR-VAE (Multiple Reconstruction Variational AutoEncoder).

Images are float tensors ``(B, C, H, W)`` in [0, 1] throughout the library unless a function
says otherwise.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

__version__ = "0.5.4"

# OpenMP threads that spin while waiting for each other make every operation wait for a
# descheduled thread on a busy CPU (2x slower inference measured with 2 threads on 2 shared
# cores); sleeping at once costs next to nothing on an idle one. Only effective before torch
# loads OpenMP, and a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# NumPy asks Linux for transparent huge pages on every large array; where the kernel then
# compacts memory synchronously to find them (THP defrag "madvise", the common default), the
# first touch of a fresh 12 MP float array took 0.9 s instead of 0.1 s here (numpy issue
# 31590). Only effective before numpy is imported; a user's own setting wins.
os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")

# The public names, by the module defining each. They are loaded on first use (PEP 562), so
# that ``import mrvae`` (and the command line's start-up) does not import torch.
# ``mrvae.enhance`` is the one-call function; the engine lives in ``mrvae.engine``.
_LAZY = {"Enhancer": "mrvae.engine.enhancer", "enhance": "mrvae.engine.enhancer",
         "Refinement": "mrvae.engine.refine", "MRVAE": "mrvae.nn.model",
         "ModelConfig": "mrvae.nn.config", "create_model": "mrvae.nn.model",
         "from_pretrained": "mrvae.nn.model", "load": "mrvae.nn.model"}

if TYPE_CHECKING:
    from mrvae.engine.enhancer import Enhancer, enhance
    from mrvae.engine.refine import Refinement
    from mrvae.nn.config import ModelConfig
    from mrvae.nn.model import MRVAE, create_model, from_pretrained, load

__all__ = ["MRVAE", "Enhancer", "ModelConfig", "Refinement", "__version__", "create_model",
           "enhance", "from_pretrained", "load"]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use and keep the name here."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
