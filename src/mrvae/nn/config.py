"""The network's configuration: :class:`ModelConfig` and the named presets (:data:`PRESETS`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal


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
            the full-resolution input; :mod:`mrvae.nn.operator`), or ``"affine"`` (a
            ``grid_size x grid_size x grid_depth`` bilateral grid of 3 x 4 colour transforms,
            sliced by a learned guide of ``curve_knots`` pieces; :mod:`mrvae.nn.bilateral`).
            With an operator, ``global_colour`` adds the latent-wide shift to its logits. Not
            in the paper.
        grid_size: cells per side of the operator's grid.
        curve_knots: linear pieces of each curve and of the guide.
        grid_depth: cells of the affine grid along the guide intensity.
    """

    widths: tuple[int, ...] = (64, 128, 256, 512)
    latent_dim: int = 1024
    detail_width: int = 64
    residual_blocks: int = 5
    global_colour: bool = False
    half_width: int = 0
    half_blocks: int = 2
    noise_radius: int = 0
    operator: Literal["image", "curves", "affine"] = "image"
    grid_size: int = 16
    curve_knots: int = 16
    grid_depth: int = 8

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if not self.widths or min(self.widths) < 1 or self.latent_dim < 1:
            raise ValueError(f"invalid model config {self}")
        if (self.detail_width < 2 or self.residual_blocks < 0 or self.half_width < 0
                or self.half_blocks < 0 or self.noise_radius < 0):
            raise ValueError(f"invalid model config {self}")
        if (self.operator not in ("image", "curves", "affine") or self.grid_size < 2
                or self.curve_knots < 1 or self.grid_depth < 1):
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
# Fields of GR's output head alone: weights of a model with another head can start the encoder,
# GR's decoder and DR of one with this head (the head starts as initialised).
HEAD_FIELDS = ("operator", "grid_size", "curve_knots", "grid_depth")

# The preset whose shipped weights `mrvae enhance`, `mrvae.enhance` and the web app use.
DEFAULT_MODEL = "bilateral"

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
    # Model v3: lite's widths, GR predicts a 16 x 16 x 8 bilateral grid of affine colour
    # transforms; its encoder, GR decoder and DR can start from lite's weights.
    "bilateral": ModelConfig(widths=(16, 32, 96, 192), latent_dim=256, detail_width=16,
                             residual_blocks=2, global_colour=True, operator="affine"),
    # For tests and smoke runs only.
    "tiny": ModelConfig(widths=(8, 16), latent_dim=16, detail_width=8, residual_blocks=1),
}
