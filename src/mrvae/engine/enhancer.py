"""Enhancing photos of any size with a trained MR-VAE, in memory bounded by the tile size.

The engine splits the method the way the network allows:

1. Global pass, once per image: FPDC + GR run on a copy of the whole photo downscaled so that
   its long side is at most ``global_size`` (never upscaled). The whole scene decides the
   exposure, so tiles cannot each re-expose themselves.
2. Detail pass, tile by tile: for each tile, the GR image is upsampled (bilinear, exactly as
   :meth:`mrvae.nn.model.MRVAE.forward` does for the whole image) to the tile's pixels only, and DR
   refines the tile. DR is a stack of convolutions with a finite receptive field, so each tile
   is cut with a margin of ``overlap`` pixels of context on every side (by default that radius)
   and only its centre is kept: the tiles then agree with the untiled result to float rounding
   and no seam can show, with no blending pass over full-size weight maps. Results go straight
   into the one full-size output array.
3. Refinement (:mod:`mrvae.engine.refine`, on by default): with ``detail``, inside each tile the
   input's own detail is blended back where its amplified noise is low (the context grows by the
   blur radius, so tiles still agree); after the tiles, maps computed once from coarse copies
   restore the input's lightness order and keep the input where the global pass barely
   brightens it, applied strip by strip.

The per-stage compute sits behind a two-call :class:`Backend` interface (``global_image`` and
``detail``), so other runtimes (ONNX Runtime) can replace :class:`TorchBackend`.
"""

from __future__ import annotations

import copy
import functools
import glob
import itertools
import math
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from mrvae.engine.exposure import apply_exposure, check_exposure
from mrvae.engine.refine import (
    Refinement,
    brightening,
    detail_weight,
    exposure_trim,
    keep_weight,
    noise_sigma,
    order_preserving_gain,
    restore_detail,
)
from mrvae.io.images import (
    DEFAULT_MAX_PIXELS,
    VIDEO_CONTAINERS,
    ImageReadError,
    LoadedImage,
    _pil_to_array,
    fit_long_side,
    format_of,
    is_image_file,
    is_video_file,
    list_images,
    read_image,
    same_format_suffix,
    write_image,
)
from mrvae.nn.model import MRVAE, load, resize, resolve_device

if TYPE_CHECKING:
    from mrvae.engine.video import VideoResult, VideoSettings

# 256 px tiles: a tile's full-resolution activations stay in the CPU's cache. Against 512 on 2
# cores: 720p about 25 % faster, 12 MP 7 % faster and 20 % less memory; the same output.
DEFAULT_TILE = 256
DEFAULT_GLOBAL_SIZE = 512
COMPARE_SIDE = 2048  # long side of each half of a --compare image

ImageT = TypeVar("ImageT", np.ndarray, Image.Image, torch.Tensor)


class Backend(Protocol):
    """The two calls the engine needs; tensors are ``(1, 3, H, W)`` float32 on the CPU."""

    def global_image(self, x_small: torch.Tensor) -> torch.Tensor:
        """FPDC + GR (latent mean) at the resolution of ``x_small``."""
        ...

    def detail(self, x_tile: torch.Tensor, gr_tile: torch.Tensor) -> torch.Tensor:
        """DR on a tile and the GR image of the same pixels."""
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


class TorchBackend:
    """Runs the two stages with PyTorch on a private, inference-ready copy of the model: eval
    mode, batch norms folded into the convolutions, channels-last memory (about twice as fast
    as contiguous tensors for these narrow convolutions on CPUs), ``inference_mode``."""

    def __init__(self, model: MRVAE, device: str | torch.device = "auto") -> None:
        self.device = resolve_device(device)
        inference_model = fold_batch_norms(copy.deepcopy(model).eval())
        self.model = inference_model.to(self.device, memory_format=torch.channels_last)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, torch.float32).contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def global_image(self, x_small: torch.Tensor) -> torch.Tensor:
        return self.model.reconstruct_global(self._prepare(x_small))[0].float().cpu()

    @torch.inference_mode()
    def detail(self, x_tile: torch.Tensor, gr_tile: torch.Tensor) -> torch.Tensor:
        return self.model.reconstruct_detail(self._prepare(x_tile),
                                             self._prepare(gr_tile)).float().cpu()


def _onnx_backend(model: MRVAE, device: str | torch.device) -> Backend:
    from mrvae.engine.onnx_backend import (
        OnnxBackend,  # optional dependency (onnxruntime): loaded on use
    )

    return OnnxBackend(model, device)


# Backend factories by name (``--backend``); each takes the model and the device.
BACKENDS: dict[str, Callable[[MRVAE, str | torch.device], Backend]] = {"torch": TorchBackend,
                                                                      "onnx": _onnx_backend}


def receptive_radius(model: MRVAE) -> int:
    """Pixels of context one DR output pixel depends on, on each side.

    Every convolution of the encoder stem and of DR lies on the one longest path (the residual
    skips are shorter), so the radii add up. In DR's half-resolution branch a pixel is two
    wide, and the 2x2 blocks it is cut into add one more. The noise conditioning joins DR's
    features beside the stem, reading ``NoiseConditioning.reach`` pixels.
    """
    detail = model.detail_reconstruction
    half = detail.half_resolution
    inside = set() if half is None else set(half.modules())
    radius = max(_conv_radius(model.encoder.stages[0].modules()),
                 0 if detail.noise is None else detail.noise.reach)
    radius += _conv_radius(m for m in detail.modules() if m not in inside)
    return radius if half is None else radius + 2 * _conv_radius(inside) + 1


def _conv_radius(modules: Iterable[nn.Module]) -> int:
    """Sum of the radii of the convolutions among ``modules``."""
    return sum((m.kernel_size[0] - 1) // 2 * m.dilation[0] for m in modules
               if isinstance(m, nn.Conv2d))


def tile_alignment(model: MRVAE) -> int:
    """Multiple that a tile's offsets must be for DR to compute it as on the whole image: 2
    with the half-resolution branch (its 2x2 blocks must fall where they fall there), else 1."""
    return 1 if model.detail_reconstruction.half_resolution is None else 2


def global_size_for(height: int, width: int, global_size: int) -> tuple[int, int]:
    """Size of the global pass: long side at most ``global_size``, never upscaled."""
    scale = min(1.0, global_size / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


@dataclass(frozen=True)
class Tile:
    """A tile: ``core`` is the box it writes, ``context`` the larger box it reads.

    Boxes are ``(y0, y1, x0, x1)`` in image pixels.
    """

    core: tuple[int, int, int, int]
    context: tuple[int, int, int, int]

    @property
    def crop(self) -> tuple[slice, slice]:
        """Where the core lies inside the context box."""
        (y0, y1, x0, x1), (cy0, _, cx0, _) = self.core, self.context
        return slice(y0 - cy0, y1 - cy0), slice(x0 - cx0, x1 - cx0)


def _spans(size: int, tile: int, overlap: int, align: int = 1
           ) -> list[tuple[int, int, int, int]]:
    """``(start, stop, context start, context stop)`` along one axis.

    Cores are evenly sized (at most ``tile``); every context has the same length (the largest
    core plus ``overlap`` on both sides, or the whole axis), shifted inward at the borders, so
    that all tiles have one shape: the allocator and the kernels' caches see the same sizes
    again and again instead of fragmenting over many slightly different ones. Context starts
    are multiples of ``align``: each is moved back to one, and the length has room for that
    and leaves a multiple of ``align`` before the end of the axis.
    """
    count = math.ceil(size / tile)
    cuts = [round(i * size / count) for i in range(count + 1)]
    length = min(size, math.ceil(size / count) + 2 * overlap + align - 1)
    length += (size - length) % align
    spans = []
    for start, stop in itertools.pairwise(cuts):
        context = min(max(0, start - overlap), size - length)
        context -= context % align
        spans.append((start, stop, context, context + length))
    return spans


def tiles(height: int, width: int, tile: int, overlap: int, align: int = 1) -> Iterator[Tile]:
    """Cores of at most ``tile`` pixels covering the image, each read with at least ``overlap``
    pixels of context on every side where the image has them, from offsets that are multiples
    of ``align``; all contexts share one shape."""
    for y0, y1, cy0, cy1 in _spans(height, tile, overlap, align):
        for x0, x1, cx0, cx1 in _spans(width, tile, overlap, align):
            yield Tile((y0, y1, x0, x1), (cy0, cy1, cx0, cx1))


def upsample_region(small: torch.Tensor, full_size: tuple[int, int],
                    box: tuple[int, int, int, int]) -> torch.Tensor:
    """The pixels ``box`` of ``small`` resized to ``full_size``, without the full-size image.

    Same values as bilinear ``F.interpolate(small, full_size, align_corners=False)`` there:
    output pixel ``i`` samples the normalised coordinate ``(i + 0.5) * 2 / size - 1``, and
    border padding reproduces interpolate's clamping at the edges.
    """
    y0, y1, x0, x1 = box
    if tuple(small.shape[-2:]) == tuple(full_size):
        return small[..., y0:y1, x0:x1]
    height, width = full_size
    gy = (torch.arange(y0, y1, dtype=torch.float64) + 0.5) * 2 / height - 1
    gx = (torch.arange(x0, x1, dtype=torch.float64) + 0.5) * 2 / width - 1
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1).float().unsqueeze(0)
    return F.grid_sample(small, grid, mode="bilinear", padding_mode="border",
                         align_corners=False)


@dataclass(frozen=True)
class GlobalPass:
    """The global pass of one image: ``small``, the input downscaled to the global size, and
    ``image``, GR's output for it; both ``(1, 3, h, w)`` in [0, 1]."""

    small: torch.Tensor
    image: torch.Tensor


def _as_rgb(rgb: np.ndarray) -> np.ndarray:
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB array, got shape {rgb.shape}")
    return np.ascontiguousarray(rgb, dtype=np.float32)


class OutputExistsError(FileExistsError):
    """The output file exists and overwriting was not asked for."""


def _load_model(model: str | Path | MRVAE) -> MRVAE:
    return model if isinstance(model, MRVAE) else load(model)


class Enhancer:
    """A loaded model and the tiled engine around it.

    Args:
        model: a preset name (its shipped weights), a weights path, or an :class:`MRVAE`.
        device: "cpu", "cuda" or "auto".
        tile: side of the tiles DR works on; peak memory grows with ``tile ** 2``, not with the
            image.
        overlap: pixels of context read around each tile; ``None`` uses DR's receptive radius,
            which makes tiled and untiled results agree.
        global_size: long side of the image copy the global pass (FPDC + GR) sees.
        backend: "torch" (or another name in :data:`BACKENDS`), or a :class:`Backend` object.
        workers: tiles processed at once, each on one thread (on a busy CPU this beats
            splitting every operation across threads, which waits at each operation for the
            slowest thread); ``None``: the torch thread count for a CPU backend (torch, onnx),
            else 1 (then each tile uses the backend's own threads).
        refine: the refinement after the network (:class:`mrvae.engine.refine.Refinement`); ``None``
            returns the network's output unchanged.
        exposure: stops (EV) relative to the automatic exposure, within ``±3``
            (:func:`mrvae.engine.exposure.apply_exposure` on GR's output, which DR follows). The
            automatic exposure is the network's, moved by the refinement's trim for dark photos
            (:func:`mrvae.engine.refine.exposure_trim`).

    Raises:
        mrvae.nn.model.WeightsError: the weights cannot be loaded.
        ValueError: a bad device or setting.
    """

    def __init__(self, model: str | Path | MRVAE = "lite", device: str | torch.device = "auto",
                 tile: int = DEFAULT_TILE, overlap: int | None = None,
                 global_size: int = DEFAULT_GLOBAL_SIZE, backend: str | Backend = "torch",
                 workers: int | None = None, refine: Refinement | None = Refinement(),
                 exposure: float = 0.0) -> None:
        if tile < 1 or global_size < 1 or (overlap is not None and overlap < 0):
            raise ValueError(f"bad settings: tile={tile}, overlap={overlap}, "
                             f"global_size={global_size}")
        self.model = _load_model(model)
        if isinstance(backend, str):
            if backend not in BACKENDS:
                raise ValueError(f"unknown backend {backend!r}; choose from {sorted(BACKENDS)}")
            backend = BACKENDS[backend](self.model, device)
        self.backend = backend
        self.tile = tile
        self.overlap = receptive_radius(self.model) if overlap is None else overlap
        self.global_size = global_size
        if workers is None:
            on_cpu = getattr(backend, "device", None) == torch.device("cpu")  # torch, onnx
            workers = torch.get_num_threads() if on_cpu else 1
        self.workers = max(1, workers)
        self.refine = refine
        self.exposure = check_exposure(exposure)

    def with_exposure(self, exposure: float) -> Enhancer:
        """This enhancer (same model, backend and settings) at another exposure."""
        other = copy.copy(self)
        other.exposure = check_exposure(exposure)
        return other

    def global_pass(self, rgb: np.ndarray) -> GlobalPass:
        """FPDC + GR on a copy of float32 ``(H, W, 3)`` RGB with long side ``global_size``:
        the whole photo's exposure and colour decision, computed once per image."""
        rgb = _as_rgb(rgb)
        full = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0)
        small = resize(full, global_size_for(*rgb.shape[:2], self.global_size))
        return GlobalPass(small, self.backend.global_image(small).clamp(0.0, 1.0))

    def enhance_array(self, rgb: np.ndarray, global_pass: GlobalPass | None = None
                      ) -> np.ndarray:
        """Enhance float32 ``(H, W, 3)`` RGB in [0, 1]; returns a new float32 ``(H, W, 3)``.

        ``global_pass`` replaces this image's own :meth:`global_pass` (e.g. one smoothed over
        the frames of a video); the exposure applies to it too. Memory beyond the input and
        the output is bounded by the tile and ``global_size``.
        """
        rgb = _as_rgb(rgb)
        height, width = rgb.shape[:2]
        # A (1, 3, H, W) view of the HWC array: channels-last strides, no copy.
        full = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0)
        decision = global_pass or self.global_pass(rgb)
        small_low = decision.small[0].permute(1, 2, 0).numpy()
        refine = self.refine
        keep, sigma, exposure = None, 0.0, self.exposure
        if refine is not None and (refine.keep or refine.detail > 0):
            sigma = noise_sigma(rgb)
        if refine is not None and (refine.keep or refine.trim):  # from the network's exposure
            auto_gain = brightening(small_low, decision.image[0].permute(1, 2, 0).numpy(),
                                    refine.tone_side)
            if refine.keep:
                keep = keep_weight(auto_gain, small_low, sigma, refine)
            exposure += exposure_trim(small_low, auto_gain, refine)
        if exposure:
            decision = replace(decision, image=apply_exposure(decision.image, exposure))
        gr_small = decision.image
        out = np.empty_like(rgb)
        weight, margin, gain_small = 0.0, 0, None
        if refine is not None and refine.detail > 0:
            gain = brightening(small_low, gr_small[0].permute(1, 2, 0).numpy(), refine.tone_side)
            weight = detail_weight(sigma, float(np.median(gain)), refine)
            margin = refine.detail_radius if weight > 0 else 0
            gain_small = torch.from_numpy(gain.astype(np.float32))[None, None]

        def enhance_tile(tile: Tile) -> None:  # tiles write disjoint parts of ``out``
            y0, y1, x0, x1 = tile.context
            detail = self.backend.detail(full[..., y0:y1, x0:x1],
                                         upsample_region(gr_small, (height, width), tile.context))
            enhanced = detail[0].permute(1, 2, 0).numpy()
            if weight > 0:
                gain = upsample_region(gain_small, (height, width), tile.context)[0, 0, ..., None]
                enhanced = restore_detail(rgb[y0:y1, x0:x1], enhanced, gain.numpy(), weight,
                                          refine.detail_sigma)
            rows, cols = tile.crop
            cy0, cy1, cx0, cx1 = tile.core
            out[cy0:cy1, cx0:cx1] = enhanced[rows, cols]

        layout = list(tiles(height, width, self.tile, self.overlap + margin,
                            tile_alignment(self.model)))
        workers = min(self.workers, len(layout))
        if workers == 1:
            for tile in layout:
                enhance_tile(tile)
        else:  # one torch thread per worker (the thread count is per thread under OpenMP)
            with ThreadPoolExecutor(workers, initializer=torch.set_num_threads,
                                    initargs=(1,)) as pool:
                list(pool.map(enhance_tile, layout))
        tone = order_preserving_gain(rgb, out, small_low, refine) \
            if refine is not None and refine.tone else None

        def strip(plane: np.ndarray, start: int, stop: int) -> np.ndarray:
            """Rows ``start:stop`` of a small ``(h, w)`` map at full size, ``(rows, W, 1)``."""
            return upsample_region(torch.from_numpy(plane)[None, None], (height, width),
                                   (start, stop, 0, width))[0, 0, ..., None].numpy()

        for start in range(0, height if tone is not None or keep is not None else 0, self.tile):
            stop = min(height, start + self.tile)  # strips: no full-size map is ever made
            if tone is not None:
                out[start:stop] *= strip(tone, start, stop)
            if keep is not None:  # the input, at the same exposure, where GR barely brightens
                base = rgb[start:stop]
                if exposure:
                    base = apply_exposure(torch.from_numpy(base).permute(2, 0, 1)[None],
                                          exposure)[0].permute(1, 2, 0).numpy()
                out[start:stop] = base + strip(keep, start, stop) * (out[start:stop] - base)
        return np.clip(out, 0.0, 1.0, out=out)

    def enhance_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Enhance float32 ``(H, W, C)`` pixels, C = 1 (gray in, gray out) or 3."""
        if pixels.shape[2] == 1:
            enhanced = self.enhance_array(np.repeat(pixels, 3, axis=2))
            return cv2.cvtColor(enhanced, cv2.COLOR_RGB2GRAY)[:, :, None]
        return self.enhance_array(pixels)

    def __call__(self, image: ImageT) -> ImageT:
        """Enhance a numpy array, PIL image or torch tensor; returns the same kind.

        numpy: uint8, uint16 or float in [0, 1], shaped ``(H, W)``, ``(H, W, 3)`` or
        ``(H, W, 4)`` (alpha passed through untouched). PIL: any mode (palette and CMYK come back
        as RGB/RGBA). torch: ``(3, H, W)`` or ``(B, 3, H, W)`` float in [0, 1] (or uint8).
        """
        if isinstance(image, np.ndarray):
            return self._enhance_numpy(image)
        if isinstance(image, Image.Image):
            return self._enhance_pil(image)
        if isinstance(image, torch.Tensor):
            return self._enhance_tensor(image)
        raise TypeError(f"cannot enhance a {type(image).__name__}; pass a numpy array, "
                        "a PIL image or a torch tensor")

    def _enhance_numpy(self, image: np.ndarray) -> np.ndarray:
        if image.ndim == 2:
            return self._enhance_numpy(image[:, :, None])[:, :, 0]
        if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4):
            raise ValueError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image, "
                             f"got shape {image.shape}")
        scale = _full_scale(image.dtype)
        has_alpha = image.shape[2] in (2, 4)
        colour = image[:, :, :-1] if has_alpha else image
        enhanced = self.enhance_pixels(np.clip(colour.astype(np.float32) / scale, 0.0, 1.0))
        if np.issubdtype(image.dtype, np.integer):
            enhanced = np.round(enhanced * scale)
        enhanced = enhanced.astype(image.dtype)
        # Alpha is copied bit for bit, never through float.
        return np.concatenate([enhanced, image[:, :, -1:]], axis=2) if has_alpha else enhanced

    def _enhance_pil(self, image: Image.Image) -> Image.Image:
        raw = _pil_to_array(image)[0]
        enhanced = self._enhance_numpy(raw[:, :, 0] if raw.shape[2] == 1 else raw)
        result = Image.fromarray(enhanced)
        result.info.update({k: v for k, v in image.info.items()
                            if k in ("icc_profile", "exif", "dpi")})
        return result

    def _enhance_tensor(self, image: torch.Tensor) -> torch.Tensor:
        if image.ndim == 4:
            return torch.stack([self._enhance_tensor(one) for one in image])
        if image.ndim != 3 or image.shape[0] not in (1, 3, 4):
            raise ValueError(f"expected a (3, H, W) or (B, 3, H, W) tensor, "
                             f"got shape {tuple(image.shape)}")
        array = image.detach().cpu()
        if array.dtype == torch.bfloat16:  # numpy has no bfloat16
            array = array.float()
        enhanced = self._enhance_numpy(array.permute(1, 2, 0).numpy())
        return torch.from_numpy(enhanced).permute(2, 0, 1).to(image.device, image.dtype)

    def enhance_file(self, src: str | Path, dst: str | Path, quality: int = 95,
                     overwrite: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS,
                     compare: str | Path | None = None) -> LoadedImage:
        """Read ``src``, enhance it and write ``dst`` (format from its suffix) atomically,
        keeping the bit depth, alpha, gray/colour, EXIF and ICC profile where the format can.

        Args:
            compare: also write a side-by-side input | output image there.

        Returns:
            The enhanced image (pixels replaced, metadata of the source).

        Raises:
            mrvae.io.images.ImageReadError: ``src`` cannot be read.
            OutputExistsError: ``dst`` (or ``compare``) exists and ``overwrite`` is false.
            OSError: ``dst`` cannot be written.
            ValueError: an unsupported output format.
        """
        src, dst = Path(src), Path(dst)
        format_of(dst)
        for target in (dst, compare):
            if target is not None and Path(target).exists() and not overwrite:
                raise OutputExistsError(f"{target}: output exists (use --overwrite to replace it)")
        image = read_image(src, max_pixels)
        enhanced = self.enhance_pixels(image.pixels)
        if compare is not None:
            write_image(compare, side_by_side(image.pixels, enhanced), quality=quality,
                        icc=image.icc_profile)
        write_image(dst, enhanced, image.bit_depth, image.alpha, quality, image.exif,
                    image.icc_profile)
        image.pixels = enhanced
        return image

    def enhance_video(self, src: str | Path, dst: str | Path,
                      settings: VideoSettings | None = None, overwrite: bool = False,
                      progress: Callable[[int, int | None], None] | None = None
                      ) -> VideoResult:
        """Enhance a video file, streaming, with the exposure and colour smoothed over time:
        see :func:`mrvae.engine.video.enhance_video` (needs the ``video`` extra, PyAV)."""
        from mrvae.engine.video import (  # optional dependency: loaded on use
            VideoSettings,
            enhance_video,
        )

        return enhance_video(self, src, dst, settings or VideoSettings(), overwrite, progress)


def _full_scale(dtype: np.dtype) -> float:
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    if np.issubdtype(dtype, np.floating):
        return 1.0
    raise TypeError(f"unsupported pixel type {dtype}; use uint8, uint16 or float")


def side_by_side(before: np.ndarray, after: np.ndarray, side: int = COMPARE_SIDE) -> np.ndarray:
    """``before | after`` next to each other, each downscaled to a long side of ``side``."""
    halves = [fit_long_side(img, side) for img in (before, after)]
    return np.concatenate([half.reshape(*half.shape[:2], -1) for half in halves], axis=1)


@functools.lru_cache(maxsize=4)
def _cached_enhancer(model: str | Path | MRVAE, settings: tuple[tuple[str, Any], ...]
                     ) -> Enhancer:
    return Enhancer(model, **dict(settings))


def enhance(image: ImageT, model: str | Path | MRVAE = "lite", **settings: Any) -> ImageT:
    """Enhance one image (numpy, PIL or torch, see :meth:`Enhancer.__call__`) in one call.

    The :class:`Enhancer` for a model and settings is built once and reused.
    """
    return _cached_enhancer(model, tuple(sorted(settings.items())))(image)


# ----------------------------------------------------------------------------------------------
# Batches: which files to read, where each output goes, and running them.

GLOB_CHARS = frozenset("*?[")
OUTPUT_FORMATS = {"png": ".png", "jpg": ".jpg", "jpeg": ".jpg", "tiff": ".tif", "tif": ".tif",
                  "webp": ".webp", "bmp": ".bmp", "heic": ".heic", "avif": ".avif"}


@dataclass(frozen=True)
class Job:
    """One image to enhance: read ``src``, write ``dst`` (and a side-by-side ``compare``)."""

    src: Path
    dst: Path
    compare: Path | None = None


@dataclass(frozen=True)
class JobResult:
    """What happened to one input. ``status`` is "done", "skipped" or "failed"; ``message`` is
    the one-line reason for the last two; ``megapixels`` counts the enhanced pixels."""

    source: str
    status: str
    message: str = ""
    seconds: float = 0.0
    megapixels: float = 0.0


def _expand(item: str, recursive: bool) -> tuple[list[tuple[Path, Path]], str]:
    """``(file, base folder)`` pairs for one INPUT argument, or an error message."""
    path = Path(item)
    if path.is_file():
        return [(path, path.parent)], ""
    if path.is_dir():
        found = list_images(path, recursive, videos=True)
        if not found:
            return [], f"{path}: folder contains no images or videos" + (
                "" if recursive else " (use --recursive to look in subfolders)")
        return [(p, path) for p in found], ""
    if GLOB_CHARS & set(item):
        base = Path(*[part for part in itertools.takewhile(
            lambda part: not GLOB_CHARS & set(part), path.parts)])
        found = sorted(Path(p) for p in glob.glob(item, recursive=True))
        found = [p for p in found if p.is_file() and (is_image_file(p) or is_video_file(p))]
        if not found:
            return [], f"{item}: no image or video matches this pattern"
        return [(p, base) for p in found], ""
    return [], f"{path}: no such file or directory"


def plan_jobs(inputs: list[str], out: Path | None = None, recursive: bool = False,
              suffix: str = "_enhanced", fmt: str = "same", compare: bool = False
              ) -> tuple[list[Job], list[JobResult]]:
    """Expand INPUT arguments (files, folders, globs) into jobs.

    Outputs go beside each input when ``out`` is None; to ``out`` itself when there is one input
    file and ``out`` has an image or video suffix; else into the folder ``out``, keeping each
    file's path relative to its input folder (or to the fixed part of its glob). Names get
    ``suffix``; the format of photos is ``fmt`` (a name from :data:`OUTPUT_FORMATS`) or the
    input's own ("same"; 16-bit TIFF for a camera RAW); videos keep their container where
    :mod:`mrvae.engine.video` writes it, else get .mp4, and no ``compare`` image.

    Returns:
        The jobs, and a failed :class:`JobResult` for each input that yields none (missing path,
        folder without images, pattern matching nothing, an output colliding with another).

    Raises:
        ValueError: an unknown format, or a file ``out`` for several inputs.
    """
    if fmt != "same" and fmt not in OUTPUT_FORMATS:
        raise ValueError(f"unknown output format {fmt!r}; choose from same, "
                         f"{', '.join(OUTPUT_FORMATS)}")
    pairs, failures = [], []
    for item in inputs:
        found, error = _expand(item, recursive)
        pairs += found
        if error:
            failures.append(JobResult(item, "failed", error))
    single_file = len(inputs) == 1 and len(pairs) == 1 and Path(inputs[0]).is_file()
    out_is_file = out is not None and not out.is_dir() and (is_image_file(out)
                                                            or is_video_file(out))
    if out_is_file and not single_file:
        raise ValueError(f"{out}: an output file needs exactly one input file; "
                         "give a folder for several")
    jobs, taken = [], {}
    for src, base in pairs:
        if is_video_file(src):
            ext = src.suffix if src.suffix.lower() in VIDEO_CONTAINERS else ".mp4"
        else:
            ext = OUTPUT_FORMATS[fmt] if fmt != "same" else same_format_suffix(src)
        name = f"{src.stem}{suffix}{ext}"
        if out is None:
            dst = src.parent / name
        elif out_is_file:
            dst = out
        else:
            dst = out / src.relative_to(base).parent / name
        key = dst.resolve()
        if key == src.resolve():
            failures.append(JobResult(str(src), "failed", f"{src}: the output would replace "
                                      "the input; give a --suffix or an output folder"))
        elif key in taken:
            failures.append(JobResult(str(src), "failed", f"{src}: output {dst} is already "
                                      f"written for {taken[key]}"))
        else:
            taken[key] = src
            compare_path = (dst.with_name(f"{dst.stem}_compare{dst.suffix}")
                            if compare and not is_video_file(src) else None)
            jobs.append(Job(src, dst, compare_path))
    return jobs, failures


def run_job(enhancer: Enhancer, job: Job, quality: int = 95, overwrite: bool = False,
            max_pixels: int = DEFAULT_MAX_PIXELS, video: VideoSettings | None = None,
            frame_progress: Callable[[Path, int, int | None], None] | None = None
            ) -> JobResult:
    """Enhance one photo or video; every expected problem becomes a skipped or failed result.

    ``video`` and ``frame_progress`` (called with the source, frames done and expected) go to
    :meth:`Enhancer.enhance_video`.
    """
    start = time.perf_counter()
    try:
        job.dst.parent.mkdir(parents=True, exist_ok=True)
        if is_video_file(job.src):
            progress = functools.partial(frame_progress, job.src) if frame_progress else None
            megapixels = enhancer.enhance_video(job.src, job.dst, video, overwrite,
                                                progress).megapixels
        else:
            image = enhancer.enhance_file(job.src, job.dst, quality, overwrite, max_pixels,
                                          job.compare)
            megapixels = image.pixels.shape[0] * image.pixels.shape[1] / 1e6
    except OutputExistsError as exc:
        return JobResult(str(job.src), "skipped", str(exc))
    except ImageReadError as exc:
        return JobResult(str(job.src), "failed", str(exc))
    except OSError as exc:
        where = exc.filename or job.dst
        return JobResult(str(job.src), "failed",
                         f"{where}: cannot write the output ({exc.strerror or exc})")
    except (ValueError, MemoryError, ImportError) as exc:
        return JobResult(str(job.src), "failed", f"{job.src}: {exc or type(exc).__name__}")
    return JobResult(str(job.src), "done", seconds=time.perf_counter() - start,
                     megapixels=megapixels)


def run_jobs(enhancer: Enhancer, jobs: list[Job], parallel: int = 1,
             **settings: Any) -> Iterator[JobResult]:
    """Run jobs, ``parallel`` images at a time (threads sharing the model and the cores), and
    yield results as they finish; ``settings`` go to :func:`run_job`.

    Give the enhancer ``workers=threads_per_job(parallel)`` so the tiles share the cores too.
    """
    if parallel <= 1:
        yield from (run_job(enhancer, job, **settings) for job in jobs)
        return
    with ThreadPoolExecutor(parallel, initializer=torch.set_num_threads,
                            initargs=(threads_per_job(parallel),)) as pool:
        futures = [pool.submit(run_job, enhancer, job, **settings) for job in jobs]
        yield from (future.result() for future in as_completed(futures))


def threads_per_job(parallel: int) -> int:
    """Threads for each of ``parallel`` images enhanced at once."""
    return max(1, torch.get_num_threads() // max(1, parallel))
