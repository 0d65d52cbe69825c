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
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors
from torch import nn

from mrvae.io.files import write_bytes_atomic
from mrvae.nn.blocks import (
    HalfResolutionBranch,
    NoiseConditioning,
    ResidualBlock,
    conv_relu,
    pad_to_multiple,
    resize,
)
from mrvae.nn.operator import CurveGridHead, MonotoneGuide
from mrvae.nn.operator import apply_operator as apply_curve_grid

WEIGHTS_DIR = Path(__file__).parent / "weights"


@dataclass(frozen=True)
class ModelConfig:
    """Width and depth of the network.

    Attributes:
        widths: channels of each encoder stage; its length is the depth (the release: 4 stages).
        latent_dim: channels of the latent mean / log-variance maps at ``1 / 2 ** depth`` scale.
        detail_width: channels inside the DR residual network.
        residual_blocks: number of DR residual blocks.
        global_colour: GR gets a scene-level exposure and white-balance correction: a per-channel
            shift of its output logits predicted from the latent averaged over the whole image
            (the convolutions alone see about 100 px; this sees the entire photo). Not in the
            paper.
        half_width: channels of DR's half-resolution branch (:class:`HalfResolutionBranch`);
            0 leaves it out. Not in the paper.
        half_blocks: residual blocks of that branch.
        noise_radius: DR's features are modulated by the input's local noise level and
            brightness, measured in windows of ``2 * noise_radius + 1`` pixels
            (:class:`NoiseConditioning`); 0 leaves it out. Not in the paper.
        operator: what GR outputs: ``"image"`` (the paper: a small image, upsampled) or
            ``"curves"`` (a ``grid_size x grid_size`` grid of per-channel monotone tone curves of
            ``curve_knots`` pieces, read through a learned guide of as many pieces, applied to
            the full-resolution input; :mod:`mrvae.nn.operator`). With ``"curves"``,
            ``global_colour`` adds the latent-wide shift to the curves' logits. Not in the paper.
        grid_size: cells per side of the curve grid.
        curve_knots: linear pieces of each curve and of the guide.
    """

    widths: tuple[int, ...] = (64, 128, 256, 512)
    latent_dim: int = 1024
    detail_width: int = 64
    residual_blocks: int = 5
    global_colour: bool = False
    half_width: int = 0
    half_blocks: int = 2
    noise_radius: int = 0
    operator: Literal["image", "curves"] = "image"
    grid_size: int = 16
    curve_knots: int = 16

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if not self.widths or min(self.widths) < 1 or self.latent_dim < 1:
            raise ValueError(f"invalid model config {self}")
        if (self.detail_width < 2 or self.residual_blocks < 0 or self.half_width < 0
                or self.half_blocks < 0 or self.noise_radius < 0):
            raise ValueError(f"invalid model config {self}")
        if (self.operator not in ("image", "curves") or self.grid_size < 2
                or self.curve_knots < 1):
            raise ValueError(f"invalid model config {self}")

    @property
    def depth(self) -> int:
        return len(self.widths)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["widths"] = list(self.widths)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**data)


# Fields whose parts start as a no-op (zero-initialised outputs), so trained weights of a model
# without them can start a model with them (``train``'s ``model.init_weights``).
GROWABLE_FIELDS = ("global_colour", "half_width", "half_blocks", "noise_radius")

PRESETS: dict[str, ModelConfig] = {
    # The authors' release: 64..512 channels, latent 1024, five residual blocks.
    "paper": ModelConfig(),
    # CPU preset: wide where the resolution is low (cheap), narrow at full resolution (costly).
    # Two residual blocks keep 12 MP under 10 s on a 2-core CPU (benchmarks/bench_enhance.py).
    # Since 0.4.0 with the scene-level colour head (0.3.0's weights load as their card says).
    "lite": ModelConfig(widths=(16, 32, 96, 192), latent_dim=256, detail_width=16,
                        residual_blocks=2, global_colour=True),
    # Model v3 (experimental): lite's widths, GR predicts a 16 x 16 grid of 16-piece tone curves.
    "grid": ModelConfig(widths=(16, 32, 96, 192), latent_dim=256, detail_width=16,
                        residual_blocks=2, global_colour=True, operator="curves"),
    # For tests and smoke runs only.
    "tiny": ModelConfig(widths=(8, 16), latent_dim=16, detail_width=8, residual_blocks=1),
}


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
    """

    detail: torch.Tensor
    global_image: torch.Tensor
    mean: torch.Tensor
    logvar: torch.Tensor
    latent: torch.Tensor
    target_mean: torch.Tensor | None = None


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
            self.head = CurveGridHead(config.widths, config.latent_dim, config.grid_size,
                                      config.curve_knots, config.global_colour)
            self.guide = MonotoneGuide(config.curve_knots)
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
        x, stages = latent, []
        for up, block, skip in zip(self.ups, self.blocks, reversed(skips), strict=True):
            x = up(F.interpolate(x, size=skip.shape[-2:], mode="nearest"))
            x = block(torch.cat([x, skip], dim=1))
            stages.append(x)
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
        inputs = torch.cat([global_image, features], dim=1)
        x = self.identity(inputs)
        if self.noise is not None:
            if image is None:
                raise ValueError("this DR reads the input photo's noise: pass image")
            x = self.noise(image, x)
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
        the operator ``(B, 3, curve_knots + 1, grid_size, grid_size)`` covers the whole photo
        ``x`` shows, at any resolution (:meth:`apply_operator`). ``size``: the photo's
        ``(h, w)`` when ``x`` is it padded at the bottom and right (default: all of ``x``).

        Raises:
            ValueError: this model's GR outputs an image (``operator="image"``).
        """
        if not self.predicts_operator:
            raise ValueError("this model's GR outputs an image, not an operator")
        mean, logvar, latent, skips = self._latent(x, sample)
        stages = self.global_reconstruction.decode(latent, skips)
        operator = self.global_reconstruction.head(stages, latent, size or tuple(x.shape[-2:]))
        return operator, mean, logvar, latent

    def apply_operator(self, operator: torch.Tensor, x: torch.Tensor,
                       box: tuple[int, int] = (0, 0),
                       full_size: tuple[int, int] | None = None) -> torch.Tensor:
        """The global image of a tile: ``operator`` applied to ``x (B, 3, h, w)``, the tile of
        the full-resolution photo (``full_size (H, W)``, default ``(h, w)``) whose top-left
        pixel is ``box (top, left)``. Per pixel, so tiles give exactly the whole image's values.
        """
        return apply_curve_grid(operator, self.global_reconstruction.guide(x), box, full_size)

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
        if self.predicts_operator:
            operator, mean, logvar, latent = self.global_operator(resize(low, small), sample)
            global_image = self.apply_operator(operator, low)
        else:
            global_small, mean, logvar, latent = self.reconstruct_global(resize(low, small),
                                                                         sample)
            global_image = resize(global_small, full)
        detail = self.reconstruct_detail(low, global_image)
        target_mean = None
        if target is not None:
            target_mean = self.encode(resize(target, small))[0]
        return MRVAEOutput(detail, global_image, mean, logvar, latent, target_mean)


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


def shipped_weights(name: str = "lite") -> Path:
    """Path of the weights shipped in the package for a preset."""
    return WEIGHTS_DIR / f"mrvae_{name}.safetensors"


def load(name_or_path: str | Path = "lite", map_location: str | torch.device = "cpu") -> MRVAE:
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
