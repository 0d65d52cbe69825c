"""mrvae: low-light image enhancement with MR-VAE (Multiple Reconstruction Variational AutoEncoder).

Images are float tensors ``(B, C, H, W)`` in [0, 1] throughout the library unless a function
says otherwise.
"""

from __future__ import annotations

import os

__version__ = "0.4.3"

# OpenMP threads that spin while waiting for each other make every operation wait for a
# descheduled thread on a busy CPU (2x slower inference measured with 2 threads on 2 shared
# cores); sleeping at once costs next to nothing on an idle one. Only effective before torch
# loads OpenMP, and a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# ``mrvae.enhance`` is the one-call function; the engine lives in ``mrvae.engine``.
from mrvae.engine.enhancer import Enhancer, enhance
from mrvae.engine.refine import Refinement
from mrvae.nn.model import MRVAE, ModelConfig, create_model, from_pretrained, load

__all__ = ["MRVAE", "Enhancer", "ModelConfig", "Refinement", "__version__", "create_model",
           "enhance", "from_pretrained", "load"]
