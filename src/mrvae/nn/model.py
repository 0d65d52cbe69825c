"""The MR-VAE network: FPDC encoder, GR global reconstruction, DR detail reconstruction.

Images are float tensors ``(B, 3, H, W)`` in [0, 1]. Any ``H, W`` works: the encoder input is
padded to a multiple of ``2 ** depth`` and the outputs are cropped back.

The global branch (FPDC + GR) can run on a downscaled copy of the input (``global_scale < 1``)
while DR works at full resolution; this is how large photos are enhanced in tiles with one
consistent exposure, and training sees it too so that DR learns to refine an upsampled GR.

With ``ModelConfig.operator == "curves"`` (preset ``grid``) GR's output is not an image but an
operator (:mod:`mrvae.nn.operator`: a grid of local monotone tone curves) that
:meth:`MRVAE.apply_operator` applies to the full-resolution input, tile by tile if need be; the
result is the "global image" the losses and DR see, so DR's job narrows to noise and blur.
With ``operator == "affine"`` (preset ``bilateral``) the operator is a bilateral grid of affine
colour transforms instead (:mod:`mrvae.nn.bilateral`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors
from torch import nn

from mrvae.io.files import write_bytes_atomic
from mrvae.nn.bilateral import LuminanceGuide, affine_operator, apply_affine_grid, grey_ramp
from mrvae.nn.blocks import (
    HalfResolutionBranch,
    NoiseConditioning,
    ResidualBlock,
    conv_relu,
    pad_to_multiple,
    resize,
)
from mrvae.nn.config import DEFAULT_MODEL, PRESETS, ModelConfig
from mrvae.nn.operator import GridHead, MonotoneGuide, curve_operator
from mrvae.nn.operator import apply_operator as apply_curve_grid

WEIGHTS_DIR = Path(__file__).parent / "weights"


@dataclass
class MRVAEOutput:
    """What :class:`MRVAE` returns; all images ``(B, 3, H, W)`` in [0, 1].

    Attributes:
        detail: DR output, the final enhanced image.
        global_image: GR output (correct exposure, rough detail), at input resolution; with
            ``operator="curves"`` GR's operator applied to the input.
        mean, logvar: latent statistics of the low-light input ``(B, latent, h, w)``.
        latent: the latent fed to GR (a sample in training, the mean otherwise).
        target_mean: latent mean of the ground truth through the same encoder, when given.
        grey_ramp: with ``operator="affine"``, the operator's output for a grey ramp at every
            cell centre ``(B, 3, levels, G, G)`` (:func:`~mrvae.nn.bilateral.grey_ramp`), for
            the order loss.
    """

    detail: torch.Tensor
    global_image: torch.Tensor
    mean: torch.Tensor
    logvar: torch.Tensor
    latent: torch.Tensor
    target_mean: torch.Tensor | None = None
    grey_ramp: torch.Tensor | None = None


class FPDCEncoder(nn.Module):
    """Feature probability distribution capture: stages of conv-conv-pool, then mean/logvar heads.

    ``stem`` is the first stage; its full-resolution features also feed DR.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        stages, cin = [], 3
        for width in config.widths:
            stages.append(nn.Sequential(*conv_relu(cin, width), *conv_relu(width, width)))
            cin = width
        self.stages = nn.ModuleList(stages)
        last = config.widths[-1]
        latent = config.latent_dim
        self.mean_head = nn.Sequential(*conv_relu(last, latent),
                                       nn.Conv2d(latent, latent, 3, padding=1))
        self.logvar_head = nn.Sequential(*conv_relu(last, latent),
                                         nn.Conv2d(latent, latent, 3, padding=1))

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """First-stage features ``(B, widths[0], H, W)``."""
        return self.stages[0](x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """``x (B, 3, H, W)``, H and W multiples of ``2 ** depth`` -> mean, logvar, skips."""
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        return self.mean_head(x), self.logvar_head(x).clamp(-20.0, 10.0), skips


class GlobalReconstruction(nn.Module):
    """GR decoder: per stage, upsample x2 + conv, concatenate the skip, two convs; then 1x1 +
    sigmoid (``operator="image"``), or the curve grid's head and guide (``"curves"``)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        ups, blocks, cin = [], [], config.latent_dim
        for width in reversed(config.widths):
            ups.append(nn.Sequential(*conv_relu(cin, width)))
            blocks.append(nn.Sequential(*conv_relu(2 * width, width), *conv_relu(width, width)))
            cin = width
        self.ups = nn.ModuleList(ups)
        self.blocks = nn.ModuleList(blocks)
        if config.operator == "curves":
            self.head = GridHead(config.widths, config.latent_dim, config.grid_size,
                                 3 * config.curve_knots, config.global_colour)
            self.guide = MonotoneGuide(config.curve_knots)
            return
        if config.operator == "affine":
            self.head = GridHead(config.widths, config.latent_dim, config.grid_size,
                                 12 * config.grid_depth, config.global_colour)
            self.guide = LuminanceGuide(config.curve_knots)
            return
        self.to_rgb = nn.Conv2d(config.widths[0], 3, 1)
        self.colour = None
        if config.global_colour:
            self.colour = nn.Sequential(nn.Linear(config.latent_dim, 64), nn.ReLU(inplace=True),
                                        nn.Linear(64, 3))
            nn.init.zeros_(self.colour[-1].weight)  # starts as no correction
            nn.init.zeros_(self.colour[-1].bias)

    def decode(self, latent: torch.Tensor, skips: list[torch.Tensor]) -> list[torch.Tensor]:
        """The output of every decoder stage, coarsest first ``(B, widths[-1], ...)`` to finest
        ``(B, widths[0], H, W)``."""
        # The decoder may hold a lower precision than the encoder and the head (the engine's
        # bfloat16, TorchBackend); its stages come back in the latent's precision.
        decoder = self.ups[0][0].weight.dtype
        x, stages = latent.to(decoder), []
        for up, block, skip in zip(self.ups, self.blocks, reversed(skips), strict=True):
            x = up(F.interpolate(x, size=skip.shape[-2:], mode="nearest"))
            x = block(torch.cat([x, skip.to(decoder)], dim=1))
            stages.append(x.to(latent.dtype))
        return stages

    def forward(self, latent: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        """The image ``(B, 3, H, W)`` of the padded input's size (``operator="image"``)."""
        logits = self.to_rgb(self.decode(latent, skips)[-1])
        if self.colour is not None:  # one shift per channel: exposure and white balance
            logits = logits + self.colour(latent.mean(dim=(2, 3)))[:, :, None, None]
        return torch.sigmoid(logits)


class DetailReconstruction(nn.Module):
    """DR: residual refinement of [GR output, first-stage encoder features] into the final image."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        cin, width = 3 + config.widths[0], config.detail_width
        self.identity = nn.Conv2d(cin, width, 1)
        self.noise = NoiseConditioning(width, config.noise_radius) if config.noise_radius else None
        self.blocks = nn.Sequential(*[ResidualBlock(width) for _ in range(config.residual_blocks)])
        self.half_resolution = (
            HalfResolutionBranch(width, config.half_width, config.half_blocks)
            if config.half_width else None)
        self.fuse = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.PReLU(width),
                                  nn.Conv2d(width, cin, 1))
        self.head = nn.Sequential(nn.Conv2d(cin, width // 2, 3, padding=1), nn.PReLU(width // 2),
                                  nn.Conv2d(width // 2, 3, 1))

    def forward(self, global_image: torch.Tensor, features: torch.Tensor,
                image: torch.Tensor | None = None) -> torch.Tensor:
        """``image`` is the input photo, which :class:`NoiseConditioning` (when on) reads."""
        # DR may run in a lower precision than its inputs (the engine's bfloat16 on CPUs that
        # compute it natively, TorchBackend); in training all is float32.
        body = self.identity.weight.dtype
        inputs = torch.cat([global_image.to(body), features.to(body)], dim=1)
        x = self.identity(inputs)
        if self.noise is not None:
            if image is None:
                raise ValueError("this DR reads the input photo's noise: pass image")
            x = self.noise(image, x).to(body)
        x = self.blocks(x)
        if self.half_resolution is not None:
            x = x + self.half_resolution(x)
        x = self.fuse(x) + inputs  # long skip
        return torch.sigmoid(self.head(x))


class MRVAE(nn.Module):
    """Multiple Reconstruction VAE: FPDC encoder -> GR decoder -> DR refinement."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        self.encoder = FPDCEncoder(self.config)
        self.global_reconstruction = GlobalReconstruction(self.config)
        self.detail_reconstruction = DetailReconstruction(self.config)

    @property
    def multiple(self) -> int:
        return 2 ** self.config.depth

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Latent mean, log-variance and skips of ``x`` (padded internally)."""
        return self.encoder(pad_to_multiple(x, self.multiple))

    @property
    def predicts_operator(self) -> bool:
        """GR outputs an operator (:meth:`global_operator`), not an image."""
        return self.config.operator != "image"

    def _latent(self, x: torch.Tensor, sample: bool
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        mean, logvar, skips = self.encode(x)
        latent = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar) if sample else mean
        return mean, logvar, latent, skips

    def global_operator(self, x: torch.Tensor, sample: bool = False,
                        size: tuple[int, int] | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """FPDC + GR on the small copy ``x (B, 3, h, w)`` -> (operator, mean, logvar, latent);
        the operator (curves: ``(B, 3, curve_knots + 1, grid_size, grid_size)``, affine:
        ``(B, 12, grid_depth, grid_size, grid_size)``) covers the whole photo
        ``x`` shows, at any resolution (:meth:`apply_operator`). ``size``: the photo's
        ``(h, w)`` when ``x`` is it padded at the bottom and right (default: all of ``x``).

        Raises:
            ValueError: this model's GR outputs an image (``operator="image"``).
        """
        if not self.predicts_operator:
            raise ValueError("this model's GR outputs an image, not an operator")
        mean, logvar, latent, skips = self._latent(x, sample)
        stages = self.global_reconstruction.decode(latent, skips)
        logits = self.global_reconstruction.head(stages, latent, size or tuple(x.shape[-2:]))
        operator = (affine_operator(logits, self.config.grid_depth)
                    if self.config.operator == "affine" else curve_operator(logits))
        return operator, mean, logvar, latent

    def apply_operator(self, operator: torch.Tensor, x: torch.Tensor,
                       box: tuple[int, int] = (0, 0),
                       full_size: tuple[int, int] | None = None) -> torch.Tensor:
        """The global image of a tile: ``operator`` applied to ``x (B, 3, h, w)``, the tile of
        the full-resolution photo (``full_size (H, W)``, default ``(h, w)``) whose top-left
        pixel is ``box (top, left)``. Per pixel, so tiles give exactly the whole image's values.
        """
        guide = self.global_reconstruction.guide(x)
        if self.config.operator == "affine":
            return apply_affine_grid(operator, x, guide, box, full_size)
        return apply_curve_grid(operator, guide, box, full_size)

    def reconstruct_global(self, x: torch.Tensor, sample: bool = False
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """GR on ``x`` at its own resolution -> (global image, mean, logvar, latent)."""
        if self.predicts_operator:
            operator, mean, logvar, latent = self.global_operator(x, sample)
            return self.apply_operator(operator, x), mean, logvar, latent
        mean, logvar, latent, skips = self._latent(x, sample)
        image = self.global_reconstruction(latent, skips)
        return image[..., : x.shape[-2], : x.shape[-1]], mean, logvar, latent

    def reconstruct_detail(self, x: torch.Tensor, global_image: torch.Tensor) -> torch.Tensor:
        """DR on ``x`` with a GR image of the same size; local, so it can run tile by tile."""
        return self.detail_reconstruction(global_image, self.encoder.stem(x), x)

    def forward(self, low: torch.Tensor, target: torch.Tensor | None = None,
                sample: bool | None = None, global_scale: float = 1.0) -> MRVAEOutput:
        """Enhance ``low (B, 3, H, W)``.

        Args:
            target: ground truth; when given, its latent mean (same encoder, shared weights) is
                returned for the hidden-variable content loss.
            sample: draw the latent with the reparameterisation trick; defaults to
                ``self.training`` (eval is deterministic: the latent mean).
            global_scale: run FPDC + GR on the input resized by this factor (<= 1); an
                operator is applied to the full-resolution input.
        """
        sample = self.training if sample is None else sample
        full = low.shape[-2:]
        small = (max(1, round(full[0] * global_scale)), max(1, round(full[1] * global_scale)))
        ramp = None
        if self.predicts_operator:
            operator, mean, logvar, latent = self.global_operator(resize(low, small), sample)
            global_image = self.apply_operator(operator, low)
            if self.config.operator == "affine":
                ramp = grey_ramp(operator, self.global_reconstruction.guide)
        else:
            global_small, mean, logvar, latent = self.reconstruct_global(resize(low, small),
                                                                         sample)
            global_image = resize(global_small, full)
        detail = self.reconstruct_detail(low, global_image)
        target_mean = None
        if target is not None:
            target_mean = self.encode(resize(target, small))[0]
        return MRVAEOutput(detail, global_image, mean, logvar, latent, target_mean, ramp)


def native_bfloat16(device: torch.device) -> bool:
    """The device is a CPU that computes bfloat16 natively (AMX or AVX-512 BF16); elsewhere
    oneDNN emulates it, slower than float32."""
    if device.type != "cpu":
        return False
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # private: may go away
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def mixed_precision(device: torch.device, enabled: bool = True) -> torch.dtype | None:
    """The autocast type training uses on ``device``: float16 on a GPU (with a gradient
    scaler), bfloat16 on a CPU that computes it natively (about twice as fast per step as
    float32 on AMX), else ``None`` (float32 throughout)."""
    if not enabled:
        return None
    if device.type == "cuda":
        return torch.float16
    return torch.bfloat16 if native_bfloat16(device) else None


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else the CPU.

    Raises:
        ValueError: an unknown device name, or CUDA asked for but not available.
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {device!r}; use cpu, cuda or auto") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for, but PyTorch sees no CUDA GPU; use cpu or auto")
    return resolved


def create_model(name_or_config: str | ModelConfig = "lite", **overrides: Any) -> MRVAE:
    """A fresh (untrained) model from a preset name or config; keyword overrides change fields."""
    if isinstance(name_or_config, str):
        if name_or_config not in PRESETS:
            raise ValueError(f"unknown model preset {name_or_config!r}; "
                             f"choose from {sorted(PRESETS)}")
        config = PRESETS[name_or_config]
    else:
        config = name_or_config
    if overrides:
        config = ModelConfig.from_dict({**config.to_dict(), **overrides})
    return MRVAE(config)


class WeightsError(ValueError):
    """Weights that cannot be loaded: missing, corrupt, or not matching the model config."""


def save_pretrained(model: MRVAE, path: str | Path, card: dict[str, Any] | None = None,
                    half: bool = False) -> Path:
    """Write ``path`` (.safetensors) and a model card ``path.json`` beside it (atomically)."""
    path = Path(path).with_suffix(".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    write_bytes_atomic(path, save_safetensors(state))
    card = {**(card or {}), "config": model.config.to_dict()}
    write_bytes_atomic(path.with_suffix(".json"), json.dumps(card, indent=2).encode())
    return path


def read_card(path: str | Path) -> dict[str, Any]:
    """The model card (JSON) beside a weights file."""
    card_path = Path(path).with_suffix(".json")
    if not card_path.exists():
        raise WeightsError(f"{path}: no model card {card_path.name} beside the weights")
    try:
        return json.loads(card_path.read_text())
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{card_path}: invalid JSON ({exc.msg})") from exc


def load_matching(model: MRVAE, state: dict[str, torch.Tensor]) -> list[str]:
    """Load ``state`` into ``model`` where the model grew new parts (e.g. ``global_colour``):
    every tensor of ``state`` must fit; returns the names of the model's tensors left as
    initialised.

    Raises:
        RuntimeError: ``state`` has tensors the model lacks, or of other shapes.
    """
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise RuntimeError(f"unexpected tensors {unexpected[:3]}")
    return list(missing)


def from_pretrained(path: str | Path, map_location: str | torch.device = "cpu") -> MRVAE:
    """Load weights (safetensors, never pickle) and the config from the card beside them.

    Raises:
        WeightsError: missing, corrupt or wrong-shaped weights, or a bad card.
    """
    path = Path(path)
    if path.is_dir():
        candidates = sorted(path.glob("*.safetensors"))
        if len(candidates) != 1:
            raise WeightsError(f"{path}: expected one .safetensors file, found {len(candidates)}")
        path = candidates[0]
    if not path.exists():
        raise WeightsError(f"{path}: no such weights file")
    card = read_card(path)
    try:
        model = MRVAE(ModelConfig.from_dict(card["config"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"{path}: bad model config in card ({exc})") from exc
    try:
        state = load_file(str(path), device=str(map_location))
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise WeightsError(f"{path}: corrupt weights file ({exc})") from exc
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v
                               for k, v in state.items()})
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise WeightsError(f"{path}: weights do not match the model config "
                           f"({first[1].strip() if len(first) > 1 else first[0]})") from exc
    model.card = card  # type: ignore[attr-defined]
    return model.eval()


def shipped_weights(name: str = DEFAULT_MODEL) -> Path:
    """Path of the weights shipped in the package for a preset."""
    return WEIGHTS_DIR / f"mrvae_{name}.safetensors"


def load(name_or_path: str | Path = DEFAULT_MODEL,
         map_location: str | torch.device = "cpu") -> MRVAE:
    """A ready model: a preset name loads the shipped weights, anything else is a path.

    Raises:
        WeightsError: no shipped weights for that preset, or the file cannot be loaded.
    """
    if isinstance(name_or_path, str) and name_or_path in PRESETS:
        path = shipped_weights(name_or_path)
        if not path.exists():
            raise WeightsError(f"no trained weights are shipped for preset {name_or_path!r} "
                               f"(expected {path.name}); train one with `mrvae train`")
        return from_pretrained(path, map_location)
    return from_pretrained(name_or_path, map_location)
