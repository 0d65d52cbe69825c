"""Camera RAW files: decoding with LibRaw (``rawpy``), the exposure chosen in linear light, and
synthetic DNGs (for tests and the RAW-vs-JPEG benchmark).

A RAW holds 12-14 linear bits per photosite. It is decoded to 16-bit linear sRGB with the
camera's white balance and no automatic brightening; a very dark shot is then brightened a
little in linear light, where the shadows still hold their detail (:class:`RawDevelop`), and
only then encoded with the sRGB curve, as floats, for the network. An 8-bit JPEG of the same
shot has already crushed those shadows.

:func:`mrvae.io.decode.read_image` sends the suffixes in
:data:`mrvae.io.files.RAW_EXTENSIONS` here.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from fractions import Fraction
from io import BytesIO

import exifread
import numpy as np
import rawpy
import tifffile
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from mrvae.io.pixels import DEFAULT_MAX_PIXELS, ImageReadError, LoadedImage, fit_long_side

# The clean photos the network learned from have a log-average linear luminance ("key") of about
# 0.1; its training inputs are those photos 2-5 stops darker. Three stops down is their middle.
NORMAL_KEY = 0.1
# Added to the luminance before the log-average, as a share of its mean: black and noise-floor
# pixels must not drag the key to zero, and the key still scales with the exposure.
KEY_FLOOR = 0.02
LUMA = np.array([0.2126, 0.7152, 0.0722], np.float32)  # Rec. 709 / sRGB luminance of linear RGB
EXIF_IFD = 0x8769


@dataclass(frozen=True)
class RawDevelop:
    """How a RAW becomes the network's input.

    The shot keeps the camera's exposure, brightened in linear light (where the shadows still
    hold their bits) by at most ``max_push`` stops towards ``stops``, and never darkened: since
    0.4.1 the network decides the exposure itself, and a scene's own brightness tells it how
    bright the result should be (a fixed key for every shot scored 0.7-2.6 dB worse; chosen on
    photos outside the held-out split, RESULTS.md).

    Attributes:
        stops: exposure, relative to a normal one (key ``NORMAL_KEY``), that darker shots are
            brightened towards.
        max_push: the most stops a shot is brightened by (``math.inf``: up to ``stops``).
        demosaic: LibRaw's demosaicing algorithm (a :class:`rawpy.DemosaicAlgorithm` name).
    """

    stops: float = -3.0
    max_push: float = 1.0
    demosaic: str = "AHD"

    @property
    def target_key(self) -> float:
        return NORMAL_KEY * 2.0**self.stops

    def gain(self, linear: np.ndarray) -> float:
        """The linear gain for the shot ``linear`` (as :func:`exposure_gain` takes it)."""
        return float(np.clip(exposure_gain(linear, self.target_key), 1.0, 2.0**self.max_push))


def srgb_to_linear(srgb: np.ndarray) -> np.ndarray:
    """The sRGB transfer curve inverted (IEC 61966-2-1); any shape, values in [0, 1]."""
    srgb = np.asarray(srgb, np.float32)
    return np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    """The sRGB transfer curve (IEC 61966-2-1); any shape, values clipped to [0, 1]."""
    linear = np.clip(np.asarray(linear, np.float32), 0.0, 1.0)
    return np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)


def _reason(exc: Exception) -> str:
    """LibRaw's message (rawpy passes it as bytes)."""
    message = exc.args[0] if exc.args else type(exc).__name__
    return message.decode(errors="replace") if isinstance(message, bytes) else str(message)


def open_raw(data: bytes, name: str, max_pixels: int) -> rawpy.RawPy:
    """Open a RAW held in memory (nothing decoded yet); close it when done.

    Raises:
        ImageReadError: unsupported format or variant, corrupt data, no colour data, or more
            than ``max_pixels`` pixels.
    """
    try:
        raw = rawpy.imread(BytesIO(data))
    except rawpy.LibRawFileUnsupportedError:
        raise ImageReadError(f"{name}: not a RAW format LibRaw can read (unsupported camera or "
                             "variant)") from None
    except rawpy.LibRawError as exc:
        raise ImageReadError(f"{name}: corrupt or truncated RAW data ({_reason(exc)})"
                             ) from None
    sizes = raw.sizes
    if sizes.width * sizes.height > max_pixels:
        raw.close()
        raise ImageReadError(f"{name}: {sizes.width}x{sizes.height} = "
                             f"{sizes.width * sizes.height / 1e6:.0f} MP exceeds the limit of "
                             f"{max_pixels / 1e6:.0f} MP")
    if raw.num_colors < 3 or sizes.width * sizes.height == 0:
        raw.close()
        raise ImageReadError(f"{name}: RAW without colour data (monochrome sensor or no colour "
                             "filter); not supported")
    return raw


def decode_linear(raw: rawpy.RawPy, name: str, demosaic: str = "AHD") -> np.ndarray:
    """Demosaic an open RAW to uint16 ``(H, W, 3)`` linear sRGB: the camera's white balance, no
    automatic brightening, 65535 = the sensor's white level, orientation applied.

    Raises:
        ImageReadError: LibRaw cannot decode the data (truncated, corrupt).
    """
    try:
        return raw.postprocess(output_bps=16, gamma=(1, 1), no_auto_bright=True,
                               use_camera_wb=True, output_color=rawpy.ColorSpace.sRGB,
                               demosaic_algorithm=rawpy.DemosaicAlgorithm[demosaic])
    except (rawpy.LibRawError, rawpy.NotSupportedError) as exc:
        raise ImageReadError(f"{name}: corrupt or truncated RAW data ({_reason(exc)})"
                             ) from None


def exposure_gain(linear: np.ndarray, target_key: float) -> float:
    """The gain that brings the log-average luminance (the photographic "key") of linear RGB
    ``(H, W, 3)`` (float in [0, 1], or uint16 with 65535 = 1) to ``target_key``.

    The log-average follows the bulk of the scene, not a few lamps or the noise floor.
    """
    small = fit_long_side(linear, 256).astype(np.float32)
    if linear.dtype == np.uint16:
        small /= 65535.0
    return target_key / scene_key(small)


def scene_key(linear: np.ndarray) -> float:
    """Log-average luminance of linear RGB ``(H, W, 3)``; ``scene_key(g * x)`` is
    ``g * scene_key(x)``."""
    luminance = linear @ LUMA
    floor = KEY_FLOOR * float(luminance.mean()) + 1e-12
    return float(np.exp(np.mean(np.log(luminance + floor))))


def develop(linear: np.ndarray, gain: float) -> np.ndarray:
    """uint16 linear ``(H, W, 3)`` times ``gain`` -> float32 sRGB ``(H, W, 3)`` in [0, 1].

    Through a table of the 65536 codes: exact, and no full-size float temporaries.
    """
    table = linear_to_srgb(np.arange(65536, dtype=np.float32) * np.float32(gain / 65535.0))
    return table.astype(np.float32)[linear]


def _rational(value: float | Fraction) -> IFDRational:
    fraction = Fraction(value).limit_denominator(100_000)
    return IFDRational(fraction.numerator, fraction.denominator)


def camera_exif(data: bytes, raw: rawpy.RawPy) -> bytes | None:
    """EXIF for the developed photo: camera, lens, exposure and date.

    Exposure and date come from LibRaw (every format it reads); the camera's name, and the date
    where there is one, from the file's own tags (``exifread``: TIFF-based RAWs such as DNG,
    NEF, CR2, ARW). The orientation is 1: LibRaw has turned the pixels upright.
    """
    try:
        tags = exifread.process_file(BytesIO(data), details=False)
    except Exception:  # broken tags should not cost the photo
        tags = {}

    def text(*keys: str) -> str | None:
        for key in keys:
            if key in tags and str(tags[key]).strip():
                return str(tags[key]).strip()
        return None

    exif = Image.Exif()
    for tag, value in ((0x010F, text("Image Make")), (0x0110, text("Image Model")),
                       (0x0131, text("Image Software")), (0x8298, text("Image Copyright"))):
        if value:
            exif[tag] = value
    exif[0x0112] = 1
    sub = exif.get_ifd(EXIF_IFD)
    other, lens = raw.other, raw.lens
    date = text("EXIF DateTimeOriginal", "Image DateTimeOriginal", "Image DateTime")
    if date is None and other.timestamp.year > 1970:  # 1970: LibRaw found no date
        date = other.timestamp.strftime("%Y:%m:%d %H:%M:%S")
    if date:
        exif[0x0132] = date
        sub[0x9003] = date
    for tag, value in ((0x829A, other.shutter_speed), (0x829D, other.aperture),
                       (0x920A, other.focal_length)):
        if value > 0:
            sub[tag] = _rational(value)
    iso = other.iso_speed or next((float(tags[key].values[0]) for key in (
        "EXIF ISOSpeedRatings", "Image ISOSpeedRatings") if key in tags and tags[key].values), 0)
    if iso > 0:
        sub[0x8827] = round(iso)
    if lens.model:
        sub[0xA434] = lens.model
    return exif.tobytes()


def read_raw(data: bytes, name: str = "<bytes>", max_pixels: int = DEFAULT_MAX_PIXELS,
             settings: RawDevelop = RawDevelop()) -> LoadedImage:
    """Decode a camera RAW into the network's input: float32 sRGB ``(H, W, 3)`` exposed in
    linear light as ``settings`` say (see :class:`RawDevelop`), 16 bits deep, with its EXIF.

    Raises:
        ImageReadError: unsupported format or variant, corrupt or truncated data, no colour
            data, or more than ``max_pixels`` pixels (checked before decoding).
    """
    raw = open_raw(data, name, max_pixels)
    try:
        linear = decode_linear(raw, name, settings.demosaic)
        exif = camera_exif(data, raw)
    finally:
        raw.close()
    pixels = develop(linear, settings.gain(linear))
    return LoadedImage(pixels=pixels, bit_depth=16, exif=exif, format="RAW")


# ----------------------------------------------------------------------------------------------
# Synthetic RAW captures (tests, benchmarks/raw_vs_jpeg.py)

# XYZ (D65) -> linear sRGB: a DNG's ColorMatrix1 for a sensor whose channels are sRGB's.
XYZ_TO_SRGB = np.array([[3.2404542, -1.5371385, -0.4985314],
                        [-0.9692660, 1.8760108, 0.0415560],
                        [0.0556434, -0.2040259, 1.0572252]])


@dataclass(frozen=True)
class Sensor:
    """A simple camera sensor behind an RGGB Bayer filter.

    Attributes:
        bits: ADC bits (white level ``2 ** bits - 1``).
        black_level: code of no light.
        full_well: electrons at the white level (sets the shot noise).
        read_noise: read noise in electrons.
        sensitivity: relative response of the R, G, B channels (what white balance undoes).
    """

    bits: int = 14
    black_level: int = 512
    full_well: float = 20_000.0
    read_noise: float = 3.0
    sensitivity: tuple[float, float, float] = (0.55, 1.0, 0.75)

    @property
    def white_level(self) -> int:
        return 2**self.bits - 1


def bayer_mosaic(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` -> ``(H, W)`` RGGB mosaic: each photosite keeps its filter's channel."""
    mosaic = rgb[:, :, 1].copy()
    mosaic[0::2, 0::2] = rgb[0::2, 0::2, 0]
    mosaic[1::2, 1::2] = rgb[1::2, 1::2, 2]
    return mosaic


def capture(linear: np.ndarray, sensor: Sensor, rng: np.random.Generator) -> np.ndarray:
    """Photograph linear sRGB ``(H, W, 3)`` (1 = the sensor's white): the Bayer mosaic of the
    channel responses, Poisson shot noise, Gaussian read noise and the ADC -> uint16 ``(H, W)``
    codes between the black and white levels."""
    signal = bayer_mosaic(linear * np.asarray(sensor.sensitivity, np.float32))
    electrons = rng.poisson(np.clip(signal, 0.0, 1.0) * sensor.full_well).astype(np.float32)
    electrons += rng.normal(0.0, sensor.read_noise, electrons.shape).astype(np.float32)
    codes = sensor.black_level + electrons * ((sensor.white_level - sensor.black_level)
                                              / sensor.full_well)
    return np.round(np.clip(codes, 0, sensor.white_level)).astype(np.uint16)


def _rationals(values: np.ndarray, signed: bool) -> list[int]:
    pairs = [Fraction(float(v)).limit_denominator(1_000_000) for v in np.ravel(values)]
    if not signed and any(p < 0 for p in pairs):
        raise ValueError("negative value for an unsigned rational")
    return [n for p in pairs for n in (p.numerator, p.denominator)]


def encode_dng(mosaic: np.ndarray, sensor: Sensor, make: str = "mrvae",
               model: str = "synthetic sensor", exposure_time: float | None = None,
               iso: int | None = None, date: dt.datetime | None = None) -> bytes:
    """A DNG 1.4 file holding an RGGB ``mosaic`` (uint16 ``(H, W)``) of ``sensor``.

    The colour matrix says the channels are sRGB's scaled by ``sensor.sensitivity``, and the
    as-shot neutral undoes that scaling, so a raw converter gives back linear sRGB.
    """
    neutral = np.asarray(sensor.sensitivity) / max(sensor.sensitivity)
    tags = [(33421, "H", 2, (2, 2), True),                       # CFARepeatPatternDim
            (33422, "B", 4, (0, 1, 1, 2), True),                 # CFAPattern: R G / G B
            (50706, "B", 4, (1, 4, 0, 0), True),                 # DNGVersion
            (50707, "B", 4, (1, 1, 0, 0), True),                 # DNGBackwardVersion
            (50708, "s", 0, f"{make} {model}", True),            # UniqueCameraModel
            (50714, "H", 1, sensor.black_level, True),           # BlackLevel
            (50717, "H", 1, sensor.white_level, True),           # WhiteLevel
            (50721, "2i", 9, _rationals(np.diag(sensor.sensitivity) @ XYZ_TO_SRGB, True),
             True),                                              # ColorMatrix1
            (50778, "H", 1, 21, True),                           # CalibrationIlluminant1: D65
            (50728, "2I", 3, _rationals(neutral, False), True),  # AsShotNeutral
            (271, "s", 0, make, True), (272, "s", 0, model, True)]
    if exposure_time:
        tags.append((33434, "2I", 1, _rationals(np.array([exposure_time]), False), True))
    if iso:
        tags.append((34855, "H", 1, iso, True))
    if date:
        tags.append((36867, "s", 0, date.strftime("%Y:%m:%d %H:%M:%S"), True))
    stream = BytesIO()
    tifffile.imwrite(stream, mosaic.astype(np.uint16), photometric=32803, subfiletype=0,
                     extratags=tags, metadata=None)
    return stream.getvalue()
