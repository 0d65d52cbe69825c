"""mrvae: low-light image enhancement with MR-VAE (Multiple Reconstruction Variational AutoEncoder).

Images are float tensors ``(B, C, H, W)`` in [0, 1] throughout the library unless a function
says otherwise.
"""

from __future__ import annotations

__version__ = "0.1.0"

# ``mrvae.enhance`` is the one-call function; reach the module with ``from mrvae.enhance import``.
from .enhance import Enhancer, enhance
from .model import MRVAE, ModelConfig, create_model, from_pretrained, load

__all__ = ["MRVAE", "Enhancer", "ModelConfig", "__version__", "create_model", "enhance",
           "from_pretrained", "load"]
