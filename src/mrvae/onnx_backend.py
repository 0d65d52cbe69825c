"""ONNX Runtime backend of the enhance engine (``--backend onnx``).

The model is exported in memory to two graphs with dynamic height and width (the global branch
FPDC + GR, and the detail branch DR, see :mod:`mrvae.export`) and run with ONNX Runtime on the
CPU. It implements the two calls of :class:`mrvae.enhance.Backend`.
"""

from __future__ import annotations

import torch

from .export import onnx_bytes
from .model import MRVAE, pad_to_multiple


class OnnxBackend:
    """FPDC + GR and DR through ONNX Runtime on the CPU.

    Args:
        model: the network to export.
        device: only "cpu" or "auto" (which means the CPU here).
        threads: ONNX Runtime intra-op threads; default: PyTorch's thread count.

    Raises:
        ImportError: onnxruntime is not installed (``pip install "mrvae[onnx]"``).
        ValueError: a device other than the CPU.
    """

    def __init__(self, model: MRVAE, device: str | torch.device = "cpu",
                 threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ImportError('the onnx backend needs onnxruntime: pip install "mrvae[onnx]"'
                              ) from exc
        if str(device) not in ("cpu", "auto"):
            raise ValueError(f"the onnx backend runs on the CPU only, not {device!r}; "
                             "use --backend torch for a GPU")
        model = model.eval()
        self.multiple = model.multiple
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        self._global = ort.InferenceSession(onnx_bytes(model, "global"), options,
                                            providers=providers)
        self._detail = ort.InferenceSession(onnx_bytes(model, "detail"), options,
                                            providers=providers)

    def global_image(self, x_small: torch.Tensor) -> torch.Tensor:
        """FPDC + GR (latent mean) at the resolution of ``x_small``."""
        height, width = x_small.shape[-2:]
        # Padded here with the model's own rule, so that sides below the multiple work too.
        padded = pad_to_multiple(x_small.float(), self.multiple).contiguous().numpy()
        (image,) = self._global.run(None, {"image": padded})
        return torch.from_numpy(image)[..., :height, :width]

    def detail(self, x_tile: torch.Tensor, gr_tile: torch.Tensor) -> torch.Tensor:
        """DR on a tile and the GR image of the same pixels."""
        (image,) = self._detail.run(None, {"image": x_tile.float().contiguous().numpy(),
                                           "global_image": gr_tile.float().contiguous().numpy()})
        return torch.from_numpy(image)
