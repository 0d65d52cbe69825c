"""Backends: the two calls the engine makes into the network, on PyTorch or ONNX Runtime.

The engine needs the global pass (FPDC + GR on the small copy) and the detail pass (DR on one
tile); :class:`Backend` names those two calls, and :data:`BACKENDS` maps ``--backend`` names to
the implementations. The ONNX backend exports the model in memory to two graphs with dynamic
height and width (:mod:`mrvae.nn.export`); onnxruntime is imported only when it is chosen.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from mrvae.nn.blocks import pad_to_multiple
from mrvae.nn.export import onnx_bytes
from mrvae.nn.model import MRVAE, native_bfloat16, resolve_device


class Backend(Protocol):
    """The two calls the engine needs; tensors are ``(1, 3, H, W)`` float32 on the CPU."""

    def global_image(self, x_small: torch.Tensor) -> torch.Tensor:
        """FPDC + GR (latent mean) at the resolution of ``x_small``."""
        ...

    def detail(self, x_tile: torch.Tensor, gr_tile: torch.Tensor) -> torch.Tensor:
        """DR on a tile and the GR image of the same pixels."""
        ...


@runtime_checkable
class OperatorBackend(Backend, Protocol):
    """A backend that also runs models whose GR predicts an operator (``MRVAE.
    predicts_operator``): the operator from the small copy, then applied tile by tile at full
    resolution instead of upsampling GR's small image."""

    def global_operator(self, x_small: torch.Tensor) -> torch.Tensor | None:
        """GR's operator for the photo ``x_small`` shows, or None for an image model."""
        ...

    def operator_region(self, operator: torch.Tensor, x_tile: torch.Tensor,
                        box: tuple[int, int], full_size: tuple[int, int]) -> torch.Tensor:
        """``operator`` applied to the tile ``x_tile`` whose top-left pixel is ``box``
        ``(top, left)`` of a photo of ``full_size`` ``(H, W)``."""
        ...


def fold_batch_norms(module: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm2d into the Conv2d just before it (in place).

    Same outputs to float rounding, one memory pass less per block.
    """
    for sequence in module.modules():
        if isinstance(sequence, nn.Sequential):
            for i in range(len(sequence) - 1):
                conv, norm = sequence[i], sequence[i + 1]
                if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                    sequence[i] = fuse_conv_bn_eval(conv, norm)
                    sequence[i + 1] = nn.Identity()
    return module


class MaxPReLU(nn.Module):
    """PReLU as ``max(x, a * x)``, which is PReLU for slopes ``a <= 1``, computed in ``dtype``
    (default: its input's): two vectorised passes, where PyTorch's own bfloat16 PReLU on
    channels-last tensors is several times slower than a float32 round trip. A PReLU with any
    slope above 1 is computed by that round trip instead."""

    def __init__(self, prelu: nn.PReLU, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        slopes = prelu.weight.detach()
        self.weight = nn.Parameter(slopes.view(1, -1, 1, 1), requires_grad=False)
        self.max_form = bool((slopes <= 1).all())
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self.dtype or x.dtype
        if not self.max_form:
            return F.prelu(x.float(), self.weight.flatten().float()).to(dtype)
        x = x.to(dtype)
        return torch.maximum(x, x * self.weight.to(dtype))


def max_prelus(module: nn.Module) -> nn.Module:
    """Replace every PReLU inside ``module`` with a :class:`MaxPReLU` (in place)."""
    for parent in list(module.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.PReLU):
                setattr(parent, name, MaxPReLU(child))
    return module


class ToDtype(nn.Module):
    """Casts its input to ``dtype``."""

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.dtype)


def bfloat16_after_first_convolution(stem: nn.Sequential) -> nn.Sequential:
    """A copy of ``stem`` whose layers after the first convolution and its activation run in
    bfloat16 (the first one reads the photo itself, and costs little in float32)."""
    head, tail = copy.deepcopy(stem[:2]), copy.deepcopy(stem[2:])
    return nn.Sequential(*head, ToDtype(torch.bfloat16), *tail.to(torch.bfloat16))


class TorchBackend:
    """Runs the two stages with PyTorch on a private, inference-ready copy of the model: eval
    mode, batch norms folded into the convolutions, channels-last memory (about twice as fast
    as contiguous tensors for these narrow convolutions on CPUs), ``inference_mode``.

    Args:
        model: the network.
        device: "cpu", "cuda", "auto", or a device.
        bfloat16: run in bfloat16 the parts that do most of the work and tolerate it: DR
            and its own copy of the encoder's stem after the stem's first convolution, but for
            DR's last convolution and sigmoid, and GR's decoder. The encoder of the global pass
            (whose latent sets the exposure) and GR's heads stay float32. On this machine DR
            takes 15 ms per 272 px tile instead of 29, the default model's global pass 0.10 s
            instead of 0.18, its output within 0.05/255 mean of float32 (docs/RESULTS.md).
            Default (None): where the CPU computes bfloat16 natively.
    """

    def __init__(self, model: MRVAE, device: str | torch.device = "auto",
                 bfloat16: bool | None = None) -> None:
        self.device = resolve_device(device)
        inference_model = fold_batch_norms(copy.deepcopy(model).eval())
        self.model = inference_model.to(self.device, memory_format=torch.channels_last)
        self.bfloat16 = native_bfloat16(self.device) if bfloat16 is None else bfloat16
        self.detail_stem: nn.Module = self.model.encoder.stages[0]
        if self.bfloat16:
            detail, decoder = self.model.detail_reconstruction, self.model.global_reconstruction
            parts = [detail.identity, detail.blocks, detail.half_resolution, detail.fuse,
                     detail.head[0], decoder.ups, decoder.blocks]
            for part in parts:
                if part is not None:
                    max_prelus(part.to(torch.bfloat16))
            # DR's last convolution and sigmoid in float32: the output keeps its precision
            detail.head[1] = MaxPReLU(detail.head[1], dtype=torch.float32)
            # the global pass keeps the float32 stem; DR's features are bfloat16 anyway
            self.detail_stem = bfloat16_after_first_convolution(self.detail_stem)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, torch.float32).contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def global_image(self, x_small: torch.Tensor) -> torch.Tensor:
        return self.model.reconstruct_global(self._prepare(x_small))[0].float().cpu()

    @torch.inference_mode()
    def detail(self, x_tile: torch.Tensor, gr_tile: torch.Tensor) -> torch.Tensor:
        x = self._prepare(x_tile)  # MRVAE.reconstruct_detail, with DR's own stem
        return self.model.detail_reconstruction(self._prepare(gr_tile), self.detail_stem(x),
                                                x).float().cpu()

    @torch.inference_mode()
    def global_operator(self, x_small: torch.Tensor) -> torch.Tensor | None:
        if not self.model.predicts_operator:
            return None
        return self.model.global_operator(self._prepare(x_small))[0].float().cpu()

    @torch.inference_mode()
    def operator_region(self, operator: torch.Tensor, x_tile: torch.Tensor,
                        box: tuple[int, int], full_size: tuple[int, int]) -> torch.Tensor:
        return self.model.apply_operator(operator.to(self.device), self._prepare(x_tile), box,
                                         full_size).float().cpu()


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
        ValueError: a device other than the CPU, or a model whose GR predicts an operator.
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
        if model.predicts_operator:
            raise ValueError("the onnx backend runs models whose GR outputs an image; "
                             "use --backend torch for this one")
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


def float32_torch_backend(model: MRVAE, device: str | torch.device = "auto") -> TorchBackend:
    """:class:`TorchBackend` in float32 throughout, on any device (``--backend torch-float32``)."""
    return TorchBackend(model, device, bfloat16=False)


# Backend factories by name (``--backend``); each takes the model and the device.
BACKENDS: dict[str, Callable[[MRVAE, str | torch.device], Backend]] = {
    "torch": TorchBackend, "torch-float32": float32_torch_backend, "onnx": OnnxBackend}
