"""ONNX export of the deterministic inference graph (latent mean, GR + DR).

Three graphs can be exported, all with dynamic batch, height and width:

- ``full``: ``image (B, 3, H, W) -> enhanced (B, 3, H, W)``; the whole network at the input's
  own resolution (``H, W >= model.multiple``; smaller inputs need padding by the caller).
- ``global``: ``image -> global_image``; FPDC + GR, for the enhancer's downscaled global pass.
- ``detail``: ``(image, global_image) -> enhanced``; DR, local, so it can run tile by tile.

The tracing (TorchScript) exporter is used: it needs no extra package, and the only
shape-dependent logic (padding to a multiple of ``2 ** depth``) is written with traced sizes so
that the graph stays valid for every size.
"""

from __future__ import annotations

import warnings
from io import BytesIO
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mrvae.io.files import write_bytes_atomic
from mrvae.nn.model import MRVAE

Graph = Literal["full", "global", "detail"]
GRAPHS: tuple[str, ...] = ("full", "global", "detail")
OPSET = 17
EXAMPLE_SIZE = 64  # tracing example; any multiple of 2 ** depth works


def pad_for_encoder(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflect-pad bottom/right to a multiple; sizes stay symbolic when traced.

    Same result as :func:`mrvae.nn.blocks.pad_to_multiple` for sides of at least ``multiple``
    pixels (that helper's Python branches would be frozen into a traced graph).
    """
    height, width = x.shape[-2], x.shape[-1]
    return F.pad(x, (0, (multiple - width % multiple) % multiple,
                     0, (multiple - height % multiple) % multiple), mode="reflect")


class GlobalGraph(nn.Module):
    """FPDC + GR with the latent mean: ``image -> global_image`` at the same size (a model
    whose GR predicts an operator applies it to ``image``)."""

    def __init__(self, model: MRVAE) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2], image.shape[-1]
        padded = pad_for_encoder(image, self.model.multiple)
        if self.model.predicts_operator:
            operator = self.model.global_operator(padded, size=(height, width))[0]
            return self.model.apply_operator(operator, image)
        return self.model.reconstruct_global(padded)[0][..., :height, :width]


class DetailGraph(nn.Module):
    """DR: ``(image, global_image) -> enhanced``."""

    def __init__(self, model: MRVAE) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, global_image: torch.Tensor) -> torch.Tensor:
        return self.model.reconstruct_detail(image, global_image)


class InferenceGraph(nn.Module):
    """The whole deterministic network at the input's resolution: ``image -> enhanced``."""

    def __init__(self, model: MRVAE) -> None:
        super().__init__()
        self.global_graph = GlobalGraph(model)
        self.detail_graph = DetailGraph(model)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.detail_graph(image, self.global_graph(image))


def graph_module(model: MRVAE, graph: Graph) -> nn.Module:
    """The module to export for ``graph``, in eval mode."""
    modules = {"full": InferenceGraph, "global": GlobalGraph, "detail": DetailGraph}
    if graph not in modules:
        raise ValueError(f"unknown graph {graph!r}; choose from {', '.join(GRAPHS)}")
    return modules[graph](model).eval()


def graph_names(graph: Graph) -> tuple[list[str], list[str]]:
    """ONNX input and output names of a graph."""
    inputs = ["image", "global_image"] if graph == "detail" else ["image"]
    outputs = ["global_image"] if graph == "global" else ["enhanced"]
    return inputs, outputs


def onnx_bytes(model: MRVAE, graph: Graph = "full", dynamic: bool = True,
               size: tuple[int, int] = (EXAMPLE_SIZE, EXAMPLE_SIZE), opset: int = OPSET) -> bytes:
    """The serialised ONNX model of ``graph``.

    Args:
        dynamic: batch, height and width are free; otherwise the graph is fixed to ``size``.
        size: ``(height, width)`` of the tracing example (the fixed size when not dynamic).
    """
    module = graph_module(model, graph)  # a wrapper in eval mode: export restores its mode
    inputs, outputs = graph_names(graph)
    example = torch.rand(1, 3, *size)
    args = (example, example) if graph == "detail" else (example,)
    axes = {0: "batch", 2: "height", 3: "width"}
    dynamic_axes = {name: axes for name in inputs + outputs} if dynamic else None
    stream = BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # Traced shape arithmetic and the legacy-exporter notice are expected here.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module, args, stream, dynamo=False, input_names=inputs,
                          output_names=outputs, dynamic_axes=dynamic_axes, opset_version=opset,
                          do_constant_folding=True)
    return stream.getvalue()


def export_onnx(model: MRVAE, path: str | Path, graph: Graph = "full", dynamic: bool = True,
                size: tuple[int, int] = (EXAMPLE_SIZE, EXAMPLE_SIZE), opset: int = OPSET) -> Path:
    """Export ``graph`` of ``model`` to an ONNX file, written atomically (see
    :func:`onnx_bytes` for the arguments)."""
    data = onnx_bytes(model, graph, dynamic, size, opset)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_bytes_atomic(path, data)
