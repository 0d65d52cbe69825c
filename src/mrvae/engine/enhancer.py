"""The engine: one photo of any size through the network, in memory bounded by the tile.

:meth:`Enhancer.enhance_array` is one straight pipeline:

1. **global decision** (:mod:`mrvae.engine.decision`): FPDC + GR on a copy of the whole photo
   downscaled to ``global_size``, so the whole scene decides the exposure and colour once; then
   the exposure: the user's EV plus what the refinement stages add (the trim for dark photos);
2. **local pass**, tile by tile (:mod:`mrvae.engine.tiling`): GR's image is upsampled to each
   tile's pixels only (or GR's operator is applied to them) and DR refines the tile, read with
   enough context that tiles agree with the untiled result, at the photo's denoising strength
   (:mod:`mrvae.engine.denoise`); each stage's tile step follows (the detail step);
3. **whole-image stages** (:mod:`mrvae.engine.stages`), in order, strip by strip (sharpen, tone,
   keep).

Decoding and encoding around it are :meth:`Enhancer.enhance_file`'s (:mod:`mrvae.io`). The
network runs behind a two-call :class:`~mrvae.engine.backends.Backend` (PyTorch or ONNX
Runtime); videos (:mod:`mrvae.engine.video`) and batches (:mod:`mrvae.engine.batch`) are
built over this class and never copy its loop.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import cv2
import numpy as np
import torch
from PIL import Image

from mrvae.engine.backends import BACKENDS, Backend
from mrvae.engine.decision import (
    GlobalPass,
    Photo,
    as_image,
    as_pixels,
    as_rgb,
    global_pass,
    global_region,
)
from mrvae.engine.denoise import Denoise, blend
from mrvae.engine.exposure import check_exposure
from mrvae.engine.refine import MODEL_REFINEMENT, Refinement, model_refinement
from mrvae.engine.stages import Step, refinement_stages
from mrvae.engine.tiling import Tile, receptive_radius, tile_alignment, tiles
from mrvae.io.decode import pil_to_array, read_image
from mrvae.io.encode import PNG_LEVEL, write_image
from mrvae.io.files import format_of, refuse_existing
from mrvae.io.pixels import DEFAULT_MAX_PIXELS, LoadedImage, fit_long_side
from mrvae.nn.config import DEFAULT_MODEL
from mrvae.nn.model import MRVAE, load

if TYPE_CHECKING:
    from mrvae.engine.video import VideoResult, VideoSettings

# 256 px tiles: a tile's full-resolution activations stay in the CPU's cache. Against 512 on 2
# cores: 720p about 25 % faster, 12 MP 7 % faster and 20 % less memory; the same output.
DEFAULT_TILE = 256
DEFAULT_GLOBAL_SIZE = 512
COMPARE_SIDE = 2048  # long side of each half of a --compare image

ImageT = TypeVar("ImageT", np.ndarray, Image.Image, torch.Tensor)


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
        refine: the refinement after the network: a :class:`mrvae.engine.refine.Refinement`
            as it is; a mapping of settings, the model's own refinement
            (:func:`mrvae.engine.refine.model_refinement`: its card's) with those changed
            (``{"detail": 1.0}``; the default, empty, changes none); ``None`` returns the
            network's output unchanged.
        denoise: DR's denoising strength for a model whose GR predicts an operator
            (:class:`mrvae.engine.denoise.Denoise`; by default it follows the noise the
            brightening makes visible); models whose GR outputs an image ignore it.
        exposure: stops (EV) relative to the automatic exposure, within ``±3``
            (:func:`mrvae.engine.exposure.apply_exposure` on GR's output, which DR follows). The
            automatic exposure is the network's, moved by the refinement's trim for dark photos
            where the refinement has it on (:func:`mrvae.engine.refine.exposure_trim`).

    Raises:
        mrvae.nn.model.WeightsError: the weights cannot be loaded.
        ValueError: a bad device or setting.
    """

    def __init__(self, model: str | Path | MRVAE = DEFAULT_MODEL,
                 device: str | torch.device = "auto", tile: int = DEFAULT_TILE,
                 overlap: int | None = None,
                 global_size: int = DEFAULT_GLOBAL_SIZE, backend: str | Backend = "torch",
                 workers: int | None = None,
                 refine: Refinement | Mapping[str, Any] | None = MODEL_REFINEMENT,
                 exposure: float = 0.0, denoise: Denoise = Denoise()) -> None:
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
        if isinstance(refine, Mapping):
            refine = model_refinement(getattr(self.model, "card", None), refine)
        self.refine = refine
        self.stages = refinement_stages(refine)
        self.exposure = check_exposure(exposure)
        self.denoise = denoise

    def with_exposure(self, exposure: float) -> Enhancer:
        """This enhancer (same model, backend and settings) at another exposure."""
        other = copy.copy(self)
        other.exposure = check_exposure(exposure)
        return other

    def global_pass(self, rgb: np.ndarray, operator: torch.Tensor | None = None
                    ) -> GlobalPass:
        """FPDC + GR on a copy of float32 ``(H, W, 3)`` RGB with long side ``global_size``:
        the whole photo's exposure and colour decision, computed once per image (or an
        earlier pass's ``operator`` applied to it: :func:`mrvae.engine.decision.global_pass`)."""
        return global_pass(self.backend, as_rgb(rgb), self.global_size, operator)

    def enhance_array(self, rgb: np.ndarray, global_pass: GlobalPass | None = None
                      ) -> np.ndarray:
        """Enhance float32 ``(H, W, 3)`` RGB in [0, 1]; returns a new float32 ``(H, W, 3)``.

        ``global_pass`` replaces this image's own :meth:`global_pass` (e.g. one smoothed over
        the frames of a video); the exposure applies to it too. Memory beyond the input and
        the output is bounded by the tile and ``global_size``.
        """
        photo = self.decide(as_rgb(rgb), global_pass)
        steps = [step for stage in self.stages if (step := stage.plan(photo)) is not None]
        out = self.local_pass(photo, steps)
        for step in steps:
            step.finish(photo, out)
        return np.clip(out, 0.0, 1.0, out=out)

    def decide(self, rgb: np.ndarray, decision: GlobalPass | None = None) -> Photo:
        """The global decision: the network's (or ``decision``), at this enhancer's exposure
        plus what the stages add."""
        photo = Photo(rgb, decision or self.global_pass(rgb))
        return photo.with_exposure(self.exposure + sum(stage.exposure(photo)
                                                       for stage in self.stages))

    def local_pass(self, photo: Photo, steps: list[Step]) -> np.ndarray:
        """DR tile by tile (at the photo's denoising strength; not run on a tile whose strength
        is 0 everywhere), each tile followed by the steps' tile steps; returns ``(H, W, 3)``."""
        full = as_image(photo.rgb)
        out = np.empty_like(photo.rgb)
        strength = self.denoise.plan(photo)

        def enhance_tile(tile: Tile) -> None:  # tiles write disjoint parts of ``out``
            y0, y1, x0, x1 = tile.context
            x_tile = full[..., y0:y1, x0:x1]
            global_tile = global_region(self.backend, photo, x_tile, tile.context)
            share = None if strength is None else strength(tile.context)  # None: all 1
            if share is not None and not share.any():  # DR's output would be discarded
                detail = global_tile
            else:
                detail = self.backend.detail(x_tile, global_tile)
                if share is not None:
                    detail = blend(global_tile, detail, share)
            enhanced = as_pixels(detail)
            for step in steps:
                enhanced = step.tile(photo, tile.context, enhanced)
            rows, cols = tile.crop
            cy0, cy1, cx0, cx1 = tile.core
            out[cy0:cy1, cx0:cx1] = enhanced[rows, cols]

        margin = max((step.margin for step in steps), default=0)
        layout = list(tiles(*photo.size, self.tile, self.overlap + margin,
                            tile_alignment(self.model)))
        workers = min(self.workers, len(layout))
        if workers == 1:
            for tile in layout:
                enhance_tile(tile)
        else:  # one torch thread per worker (the thread count is per thread under OpenMP)
            with ThreadPoolExecutor(workers, initializer=torch.set_num_threads,
                                    initargs=(1,)) as pool:
                list(pool.map(enhance_tile, layout))
        return out

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
        raw = pil_to_array(image)[0]
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
                     compare: str | Path | None = None, png_level: int = PNG_LEVEL
                     ) -> LoadedImage:
        """Read ``src``, enhance it and write ``dst`` (format from its suffix) atomically,
        keeping the bit depth, alpha, gray/colour, EXIF and ICC profile where the format can.

        Args:
            compare: also write a side-by-side input | output image there.
            png_level: PNG compression (:func:`mrvae.io.encode.encode_image`).

        Returns:
            The enhanced image (pixels replaced, metadata of the source).

        Raises:
            mrvae.io.pixels.ImageReadError: ``src`` cannot be read.
            OutputExistsError: ``dst`` (or ``compare``) exists and ``overwrite`` is false.
            OSError: ``dst`` cannot be written.
            ValueError: an unsupported output format.
        """
        image = read_for_output(src, dst, overwrite, max_pixels, compare)
        return write_enhanced(image, self.enhance_pixels(image.pixels), dst, quality, compare,
                              png_level)

    def enhance_video(self, src: str | Path, dst: str | Path,
                      settings: VideoSettings | None = None, overwrite: bool = False,
                      progress: Callable[[int, int | None], None] | None = None
                      ) -> VideoResult:
        """Enhance a video file, streaming, with the exposure and colour smoothed over time:
        see :func:`mrvae.engine.video.enhance_video` (needs the ``video`` extra, PyAV)."""
        from mrvae.engine.video import VideoSettings, enhance_video

        return enhance_video(self, src, dst, settings or VideoSettings(), overwrite, progress)


def _full_scale(dtype: np.dtype) -> float:
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    if np.issubdtype(dtype, np.floating):
        return 1.0
    raise TypeError(f"unsupported pixel type {dtype}; use uint8, uint16 or float")


def read_for_output(src: str | Path, dst: str | Path, overwrite: bool = False,
                    max_pixels: int = DEFAULT_MAX_PIXELS, compare: str | Path | None = None
                    ) -> LoadedImage:
    """Decode ``src`` for :meth:`Enhancer.enhance_file`, once its outputs are known writable.

    Raises:
        mrvae.io.pixels.ImageReadError: ``src`` cannot be read.
        OutputExistsError: ``dst`` (or ``compare``) exists and ``overwrite`` is false.
        ValueError: an unsupported output format.
    """
    format_of(dst)
    for target in (dst, compare):
        if target is not None:
            refuse_existing(target, overwrite)
    return read_image(src, max_pixels)


def write_enhanced(image: LoadedImage, enhanced: np.ndarray, dst: str | Path, quality: int = 95,
                   compare: str | Path | None = None, png_level: int = PNG_LEVEL
                   ) -> LoadedImage:
    """Encode ``enhanced`` (float32 ``(H, W, C)``) with ``image``'s bit depth, alpha and
    metadata to ``dst``, and ``compare`` beside it; returns ``image`` with its pixels replaced.

    Raises:
        OSError: an output cannot be written.
    """
    if compare is not None:
        write_image(compare, side_by_side(image.pixels, enhanced), quality=quality,
                    icc=image.icc_profile, png_level=png_level)
    write_image(dst, enhanced, image.bit_depth, image.alpha, quality, image.exif,
                image.icc_profile, png_level)
    image.pixels = enhanced
    return image


def side_by_side(before: np.ndarray, after: np.ndarray, side: int = COMPARE_SIDE) -> np.ndarray:
    """``before | after`` next to each other, each downscaled to a long side of ``side``."""
    halves = [fit_long_side(img, side) for img in (before, after)]
    return np.concatenate([half.reshape(*half.shape[:2], -1) for half in halves], axis=1)


@functools.lru_cache(maxsize=4)
def _cached_enhancer(model: str | Path | MRVAE, settings: tuple[tuple[str, Any], ...]
                     ) -> Enhancer:
    # a mapping (``refine={"detail": 1.0}``) was frozen to be hashable: a dict again
    return Enhancer(model, **{key: dict(value) if isinstance(value, frozenset) else value
                              for key, value in settings})


def enhance(image: ImageT, model: str | Path | MRVAE = DEFAULT_MODEL, **settings: Any) -> ImageT:
    """Enhance one image (numpy, PIL or torch, see :meth:`Enhancer.__call__`) in one call.

    The :class:`Enhancer` for a model and settings is built once and reused.
    """
    frozen = {key: frozenset(value.items()) if isinstance(value, Mapping) else value
              for key, value in settings.items()}
    return _cached_enhancer(model, tuple(sorted(frozen.items())))(image)
