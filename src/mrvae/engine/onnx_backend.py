"""ONNX Runtime backend of the enhance engine (``--backend onnx``).

The model is exported in memory to two graphs with dynamic height and width (the global branch
FPDC + GR, and the detail branch DR, see :mod:`mrvae.nn.export`) and run with ONNX Runtime on the
CPU. It implements the two calls of :class:`mrvae.engine.enhancer.Backend`.
"""

from __future__ import annotations

import torch

from mrvae.nn.export import onnx_bytes
from mrvae.nn.model import MRVAE, pad_to_multiple


class OnnxBackend:
    """FPDC + GR and DR through ONNX Runtime on the CPU.

    The global pass (one call per image) uses ``threads``; the detail pass runs each tile on
    one thread, since the engine runs tiles in parallel on CPU backends (one tile per worker
    beats splitting each small convolution across threads, as with PyTorch).

    Args:
        model: the network to export.
        device: only "cpu" or "auto" (which means the CPU here).
        threads: ONNX Runtime intra-op threads of the global pass; default: PyTorch's thread
            count.

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
        self.device = torch.device("cpu")
        self.multiple = model.multiple

        def session(graph: str, intra_threads: int) -> ort.InferenceSession:
            options = ort.SessionOptions()
            options.intra_op_num_threads = intra_threads
            options.inter_op_num_threads = 1
            # Idle threads sleep instead of spinning: the CPU is shared with the tile workers.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            return ort.InferenceSession(onnx_bytes(model, graph), options,
                                        providers=["CPUExecutionProvider"])

        self._global = session("global", threads or torch.get_num_threads())
        self._detail = session("detail", 1)

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
