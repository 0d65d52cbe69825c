"""Synthesis of (low-light, normal-light) training pairs from normal-light photos.

Every image here is a float tensor ``(B, C, H, W)`` with values in [0, 1]; the functions are pure
apart from the random numbers, which always come from an explicit ``torch.Generator`` so that a
seed reproduces a pair exactly.

Two recipes:

* ``"paper"`` -- the MR-VAE recipe (see ``docs/METHOD.md``). Order of operations:
  1. darken by gamma, ``low = img ** gamma`` (one gamma per brightness level);
  2. Gaussian blur with standard deviation ``blur_sigma`` pixels (optics blur before the sensor);
  3. additive noise, its strength tied to the level by :func:`noise_sigma_for_level`
     (darker level -> larger sigma), Gaussian or signal-dependent Poisson-Gaussian;
  4. clip to [0, 1].
* ``"realistic"`` -- closer to a camera: exposure cut in linear light (optionally uneven across
  the frame), a white-balance cast, optics blur, Poisson-Gaussian sensor noise in linear light,
  then the sRGB tone curve and 8-bit quantisation (JPEG artifacts are added by the data pipeline,
  which works on arrays).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Literal

import kornia
import torch
import torch.nn.functional as F

NoiseModel = Literal["gaussian", "poisson_gaussian"]
NoiseMapping = Literal["linear", "exponential"]
Recipe = Literal["paper", "realistic"]


@dataclass(frozen=True)
class DegradeConfig:
    """Parameters of the synthesis. Defaults are the paper's recipe.

    Attributes:
        recipe: ``"paper"`` (gamma darkening) or ``"realistic"`` (linear-light exposure cut).
        gammas: one darkening gamma per brightness level, mild to very dark (``paper`` recipe).
        stops: one exposure cut in photographic stops per level (``realistic`` recipe).
        blur_sigma: Gaussian blur standard deviation in pixels; 0 disables blur.
        noise_model: ``"gaussian"`` (additive, fixed sigma per level) or ``"poisson_gaussian"``
            (shot noise whose variance grows with the signal plus read noise).
        noise_mapping: how the noise sigma follows the level, see :func:`noise_sigma_for_level`.
        noise_scale: sigma in 8-bit units per unit of level strength (release: 10 * gamma).
        read_noise_fraction: with ``poisson_gaussian``, share of the sigma that is read noise;
            the rest sets the shot-noise gain.
        uneven_light: ``realistic`` only: strength (in stops) of a smooth random exposure map, so
            one frame holds brighter and darker regions.
        color_cast: ``realistic`` only: maximum per-channel white-balance gain error (0.2 = +-20%).
        jpeg_quality: ``(low, high)`` range of JPEG quality applied by the data pipeline, or None.
        highlight_keep: ``realistic`` only: ``(low, high)`` linear luminance over which the
            exposure cut fades out, so bright parts (sky, lamps) keep their exposure while the
            shadows are cut (a backlit or high-contrast scene); None cuts everything.
        lamps: up to this many light sources painted into the clean photo before the recipe
            runs (:func:`add_lamps`; the pair's target keeps them); 0 paints none.
    """

    recipe: Recipe = "paper"
    gammas: tuple[float, ...] = (2.0, 3.0, 4.0, 5.0)
    stops: tuple[float, ...] = (2.0, 3.0, 4.0, 5.0)
    blur_sigma: float = 1.0
    noise_model: NoiseModel = "gaussian"
    noise_mapping: NoiseMapping = "linear"
    noise_scale: float = 10.0
    read_noise_fraction: float = 0.5
    uneven_light: float = 0.0
    color_cast: float = 0.0
    jpeg_quality: tuple[int, int] | None = None
    highlight_keep: tuple[float, float] | None = None
    lamps: int = 0

    @property
    def num_levels(self) -> int:
        return len(self.gammas) if self.recipe == "paper" else len(self.stops)

    def level_strength(self, level: int) -> float:
        """Darkness of a level as one number: the gamma (paper) or 1 + stops / 2 (realistic)."""
        if not 0 <= level < self.num_levels:
            raise ValueError(f"level {level} out of range 0..{self.num_levels - 1}")
        if self.recipe == "paper":
            return float(self.gammas[level])
        return 1.0 + float(self.stops[level]) / 2.0

    def to_dict(self) -> dict:
        return asdict(self)


def noise_sigma_for_level(strength: float, scale: float = 10.0,
                          mapping: NoiseMapping = "linear") -> float:
    """Noise standard deviation (in [0, 1] units) for a darkness level.

    The method ties noise to brightness: the darker the level, the noisier the image.
    ``linear``: ``sigma = scale * strength / 255`` -- the release's table (sigma = 10 * gamma in
    8-bit units). ``exponential``: ``sigma = scale * (exp(strength / 2) - 1) / 255``, which grows
    faster for the darkest levels (the release's alternative column).
    """
    if strength <= 0:
        raise ValueError("level strength must be positive")
    if mapping == "linear":
        return scale * strength / 255.0
    if mapping == "exponential":
        return scale * (math.exp(strength / 2.0) - 1.0) / 255.0
    raise ValueError(f"unknown noise mapping {mapping!r}")


def darken_gamma(img: torch.Tensor, gamma: float) -> torch.Tensor:
    """Gamma darkening ``img ** gamma`` (gamma > 1 darkens). Shape kept."""
    if gamma <= 0:
        raise ValueError("gamma must be positive")
    return img.clamp(0.0, 1.0) ** gamma


def gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur, standard deviation ``sigma`` pixels, reflect-padded; 0 is a no-op."""
    if sigma <= 0:
        return img
    radius = max(1, math.ceil(3.0 * sigma))
    size = 2 * radius + 1
    # kornia's reflect padding needs the image to be larger than the kernel radius.
    if min(img.shape[-2:]) <= radius:
        pad = radius - min(img.shape[-2:]) + 1
        padded = F.pad(img, (pad, pad, pad, pad), mode="replicate")
        out = kornia.filters.gaussian_blur2d(padded, (size, size), (sigma, sigma), "reflect")
        return out[..., pad:-pad, pad:-pad]
    return kornia.filters.gaussian_blur2d(img, (size, size), (sigma, sigma), "reflect")


def add_gaussian_noise(img: torch.Tensor, sigma: float,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Additive white Gaussian noise of standard deviation ``sigma`` (not clipped)."""
    noise = torch.randn(img.shape, generator=generator, dtype=img.dtype, device=img.device)
    return img + sigma * noise


def add_poisson_gaussian_noise(img: torch.Tensor, shot_gain: float, read_sigma: float,
                               generator: torch.Generator | None = None) -> torch.Tensor:
    """Signal-dependent sensor noise: variance ``shot_gain * img + read_sigma ** 2``.

    The heteroscedastic Gaussian approximation of Poisson shot noise plus Gaussian read noise
    (Foi et al. 2008); exact enough at the photon counts of real sensors and much cheaper.
    """
    std = torch.sqrt(shot_gain * img.clamp(min=0.0) + read_sigma**2)
    noise = torch.randn(img.shape, generator=generator, dtype=img.dtype, device=img.device)
    return img + std * noise


def _noise(img: torch.Tensor, sigma: float, config: DegradeConfig,
           generator: torch.Generator | None) -> torch.Tensor:
    if config.noise_model == "gaussian":
        return add_gaussian_noise(img, sigma, generator)
    if config.noise_model == "poisson_gaussian":
        read_sigma = sigma * config.read_noise_fraction
        # Choose the gain so that the total std at mid-grey signal (0.25) equals ``sigma``.
        shot_gain = max(sigma**2 - read_sigma**2, 0.0) / 0.25
        return add_poisson_gaussian_noise(img, shot_gain, read_sigma, generator)
    raise ValueError(f"unknown noise model {config.noise_model!r}")


def smooth_random_field(shape: tuple[int, int, int], generator: torch.Generator | None,
                        cells: int = 4, device: torch.device | str = "cpu") -> torch.Tensor:
    """A smooth random map ``(B, 1, H, W)`` in [-1, 1]: bicubic upsampling of a coarse grid."""
    batch, height, width = shape
    coarse = torch.rand((batch, 1, cells, cells), generator=generator, device=device) * 2 - 1
    field_map = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)
    return field_map.clamp(-1.0, 1.0)


def add_lamps(img: torch.Tensor, count: int,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Paint ``count`` light sources into photos ``(B, 3, H, W)``, for night scenes with lamps.

    Each lamp is a disc of radius 1.5..6 pixels, warm white to sodium orange, 2..8 times
    brighter than white in linear light (so its core clips to white, as in a real night photo),
    with a glow that falls off as ``(1 + (d / r)^2)^-p``, ``p`` in 1.5..2.5, beyond the disc. The
    light adds to the photo's in linear light; the result is clipped to [0, 1].
    """
    batch, _, height, width = img.shape

    def uniform(low: float, high: float) -> torch.Tensor:
        draw = torch.rand((batch, count, 1, 1), generator=generator, device=img.device)
        return (low + (high - low) * draw).to(img.dtype)

    centre_y, centre_x = uniform(0, height - 1), uniform(0, width - 1)
    radius = torch.exp(uniform(math.log(1.5), math.log(6.0)))
    power, intensity = uniform(1.5, 2.5), uniform(2.0, 8.0)
    colour = torch.cat([torch.ones_like(radius), uniform(0.75, 1.0), uniform(0.45, 1.0)],
                       dim=2)[..., 0]  # (B, count, 3): red, green, blue
    yy = torch.arange(height, dtype=img.dtype, device=img.device).view(1, 1, height, 1)
    xx = torch.arange(width, dtype=img.dtype, device=img.device).view(1, 1, 1, width)
    beyond = (torch.hypot(yy - centre_y, xx - centre_x) - radius).clamp(min=0.0) / radius
    falloff = intensity * (1.0 + beyond * beyond) ** -power  # (B, count, H, W)
    light = torch.einsum("bkhw,bkc->bchw", falloff, colour)
    linear = kornia.color.rgb_to_linear_rgb(img.clamp(0.0, 1.0)) + light
    return kornia.color.linear_rgb_to_rgb(linear.clamp(0.0, 1.0))


def synthesize(img: torch.Tensor, level: int, config: DegradeConfig | None = None,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
    """Make the low-light version of a normal-light image.

    Args:
        img: normal-light image ``(B, C, H, W)`` or ``(C, H, W)`` in [0, 1].
        level: brightness level index, 0 (mild) .. ``config.num_levels - 1`` (darkest).
        config: the recipe; the paper's by default.
        generator: source of randomness; seed it for reproducible output.

    Returns:
        ``(low, info)``: the low-light image, same shape and dtype, clipped to [0, 1], and a dict
        of the parameters used (level, gamma or stops, noise sigma, blur sigma, ...).
    """
    config = config or DegradeConfig()
    unbatched = img.dim() == 3
    x = img.unsqueeze(0) if unbatched else img
    if x.dim() != 4:
        raise ValueError(f"expected (B, C, H, W) or (C, H, W), got shape {tuple(img.shape)}")
    strength = config.level_strength(level)
    sigma = noise_sigma_for_level(strength, config.noise_scale, config.noise_mapping)
    info: dict = {"recipe": config.recipe, "level": level, "noise_sigma": sigma,
                  "noise_model": config.noise_model, "blur_sigma": config.blur_sigma}
    if config.recipe == "paper":
        gamma = config.gammas[level]
        info["gamma"] = gamma
        low = darken_gamma(x, gamma)
        low = gaussian_blur(low, config.blur_sigma)
        low = _noise(low, sigma, config, generator)
    elif config.recipe == "realistic":
        low = _realistic(x, level, config, generator, sigma, info)
    else:
        raise ValueError(f"unknown recipe {config.recipe!r}")
    low = low.clamp(0.0, 1.0).to(img.dtype)
    return (low.squeeze(0) if unbatched else low), info


def _realistic(x: torch.Tensor, level: int, config: DegradeConfig,
               generator: torch.Generator | None, sigma: float, info: dict) -> torch.Tensor:
    """Camera-like darkening: linear light, exposure map, cast, blur, sensor noise, tone curve."""
    batch, channels, height, width = x.shape
    stops = config.stops[level]
    info["stops"] = stops
    linear = kornia.color.rgb_to_linear_rgb(x.clamp(0.0, 1.0)) if channels == 3 else x ** 2.2
    exposure_stops = torch.full((batch, 1, height, width), -stops, dtype=x.dtype, device=x.device)
    if config.uneven_light > 0:
        field_map = smooth_random_field((batch, height, width), generator, device=x.device)
        exposure_stops = exposure_stops + config.uneven_light * field_map.to(x.dtype)
    if config.highlight_keep is not None:
        # The cut fades with brightness: gain and luminance both rise, so the map stays monotone.
        low, high = config.highlight_keep
        keep = ((linear.mean(dim=1, keepdim=True) - low) / (high - low)).clamp(0.0, 1.0)
        exposure_stops = exposure_stops * (1.0 - keep * keep * (3.0 - 2.0 * keep))
    linear = linear * torch.pow(2.0, exposure_stops)
    if config.color_cast > 0 and channels == 3:
        gains = 1.0 + config.color_cast * (
            torch.rand((batch, 3, 1, 1), generator=generator, device=x.device) * 2 - 1)
        linear = linear * gains.to(x.dtype)
        info["color_gains"] = gains.flatten().tolist()
    linear = gaussian_blur(linear, config.blur_sigma)
    # Sensor noise lives in linear light; scale sigma from the sRGB-referred value.
    linear = _noise(linear, sigma / 4.0, config, generator).clamp(0.0, 1.0)
    srgb = kornia.color.linear_rgb_to_rgb(linear) if channels == 3 else linear ** (1 / 2.2)
    return torch.round(srgb.clamp(0.0, 1.0) * 255.0) / 255.0


# A good camera in dim light: the realistic pipeline with little noise and blur, so a model also
# learns to keep fine detail when the input is not noisy (most real dark photos).
_REALISTIC_CLEAN = DegradeConfig(
    recipe="realistic", stops=(1.5, 2.5, 3.5, 4.5), blur_sigma=0.3,
    noise_model="poisson_gaussian", noise_scale=1.5, read_noise_fraction=0.4,
    uneven_light=1.0, color_cast=0.1, jpeg_quality=(85, 98))

PRESETS: dict[str, DegradeConfig] = {
    "paper": DegradeConfig(),
    "realistic": DegradeConfig(
        recipe="realistic", stops=(2.0, 3.0, 4.0, 5.0), blur_sigma=0.6,
        noise_model="poisson_gaussian", noise_scale=6.0, read_noise_fraction=0.4,
        uneven_light=1.0, color_cast=0.15, jpeg_quality=(70, 98)),
    "realistic_clean": _REALISTIC_CLEAN,
    # Nearly even light (+-1/4 stop): most pairs then ask for a lift of the whole frame, not for
    # evening out the scene's own light.
    "realistic_even": replace(_REALISTIC_CLEAN, uneven_light=0.25),
    # A well-exposed photo as its own target (a little sensor noise and JPEG): the model learns
    # to leave good photos alone.
    "well_exposed": replace(_REALISTIC_CLEAN, stops=(0.0,), blur_sigma=0.0, noise_scale=0.5,
                            uneven_light=0.0, color_cast=0.0, jpeg_quality=(90, 98)),
    # Backlit and night scenes: shadows cut by 2-5 stops, bright parts (sky, light sources)
    # kept, so the model learns to lift the dark parts without blowing the highlights.
    "backlit": replace(_REALISTIC_CLEAN, stops=(2.0, 3.0, 4.0, 5.0), uneven_light=0.5,
                       highlight_keep=(0.15, 0.7)),
}
# Night scenes with lamps: backlit, with up to five light sources painted in first, so the model
# learns to keep a lamp's clipped core white and to lift the dark around it like the rest.
PRESETS["night_lamps"] = replace(PRESETS["backlit"], lamps=5)
