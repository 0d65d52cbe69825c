"""Enhancing videos with an :class:`~mrvae.engine.enhancer.Enhancer`: streaming, flicker-free, audio kept.

Frames flow decode -> enhance -> encode one at a time through PyAV (FFmpeg's libraries), so
memory does not grow with the clip's length. The output keeps the frame count, size, timestamps
(hence the frame rate, constant or variable), rotation and the container's metadata; the video
is H.264; the audio is copied packet for packet where the output container can hold its codec,
else re-encoded to AAC. The file appears only once complete (:func:`mrvae.io.images.atomic_file`).

Temporal stability. A photo model run frame by frame flickers: each frame gets its own exposure
and colour. The global pass still runs on every frame (its image must follow the motion, since
DR reads it pixel by pixel), but the decision it implies -- the per-channel gain
``mean(GR) / mean(input)`` on the small copy, in log units -- is smoothed by an exponential moving
average with a time constant of :attr:`VideoSettings.smoothing` seconds, and each frame's GR
image is rescaled to the smoothed gain. The average restarts at a scene cut or a sudden light
change (a lamp switched on), detected as a large mean change of log luma between consecutive
16 x 16 thumbnails of the small copies, and when the light drifts away from its own moving
average (a light ramping up faster than the average follows): those are followed at once
instead of faded into.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from io import BytesIO
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mrvae.engine.enhancer import Enhancer, GlobalPass, OutputExistsError
from mrvae.io.images import VIDEO_CONTAINERS, ImageReadError, atomic_file

try:
    import av
except ImportError as exc:  # an optional dependency: photos work without it
    raise ImportError("video needs PyAV: pip install 'mrvae[video]'") from exc

X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                "slower", "veryslow")
THUMBNAIL = 16  # side of the scene-cut thumbnails: averages sensor noise away
_LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)  # BT.601
_GAIN_EPS = 1.0 / 255.0  # floor of the means in the gain
_CUT_EPS = 4.0 / 255.0  # floor of the thumbnails' luma: dark noise must not look like a cut
DEFAULT_FPS = 30.0  # when a stream does not say
TRUNCATED = 0.9  # frames covering less than this share of the announced duration: truncated


class VideoReadError(ImageReadError):
    """A file that cannot be read as a video; the message names the file and the reason.

    An :class:`~mrvae.io.images.ImageReadError`, so whatever handles unreadable inputs handles it.
    """


@dataclass(frozen=True)
class VideoSettings:
    """How a video is encoded and smoothed.

    Args:
        crf: H.264 constant rate factor, 0 (lossless) .. 51; 18 looks like the source,
            each +6 about halves the size.
        preset: x264 speed preset (ultrafast .. veryslow); faster: bigger files at one quality.
        smoothing: time constant, in seconds, of the moving average of the exposure and colour
            decision; 0 decides every frame alone.
        scene_cut: mean absolute change of log luma between consecutive frames' thumbnails
            above which the average restarts (0.3: about a third brighter or darker).
        light_change: change of the frame's mean log luma from its moving average (same time
            constant) above which the average restarts: light changing faster than the average
            follows (0.2: about a fifth).
        audio: keep the audio track.
    """

    crf: int = 18
    preset: str = "medium"
    smoothing: float = 0.4
    scene_cut: float = 0.3
    light_change: float = 0.2
    audio: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.crf <= 51:
            raise ValueError(f"bad crf {self.crf}; use 0 (lossless) to 51")
        if self.preset not in X264_PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose from "
                             f"{', '.join(X264_PRESETS)}")
        if self.smoothing < 0 or self.scene_cut <= 0 or self.light_change <= 0:
            raise ValueError(f"bad smoothing settings: {self}")


@dataclass(frozen=True)
class VideoResult:
    """What :func:`enhance_video` wrote: ``audio`` is "copied", "re-encoded" or "none";
    ``scene_cuts`` counts the restarts of the smoothing after the first frame."""

    frames: int
    width: int
    height: int
    fps: float
    audio: str
    scene_cuts: int

    @property
    def megapixels(self) -> float:
        return self.frames * self.width * self.height / 1e6


# ----------------------------------------------------------------------------------------------
# Temporal smoothing of the global decision


@dataclass(frozen=True)
class Decision:
    """The smoothing state after a frame: ``log_gain``, the smoothed per-channel log gain
    ``(3,)``; ``thumbnail``, the frame's ``(16, 16)`` log luma; ``light``, the moving average of
    the thumbnails' mean log luma; ``cut``: the average restarted at this frame (the first
    frame, a scene cut or a light change)."""

    log_gain: np.ndarray
    thumbnail: np.ndarray
    light: float
    cut: bool


def log_gain(decision: GlobalPass) -> np.ndarray:
    """Per-channel log gain a global pass implies: ``log mean(GR) - log mean(small)``, ``(3,)``.

    Means of whole channels, not of pixel ratios: dark pixels' noise cancels out.
    """
    def means(image: torch.Tensor) -> np.ndarray:
        return image.double().mean(dim=(0, 2, 3)).numpy()

    return np.log(means(decision.image) + _GAIN_EPS) - np.log(means(decision.small) + _GAIN_EPS)


def thumbnail(small: torch.Tensor) -> np.ndarray:
    """``(16, 16)`` log luma of a ``(1, 3, h, w)`` image (area averages)."""
    light = (small * _LUMA).sum(dim=1, keepdim=True)
    return np.log(F.adaptive_avg_pool2d(light, THUMBNAIL)[0, 0].double().numpy() + _CUT_EPS)


def smoothing_weight(fps: float, seconds: float) -> float:
    """Weight of the newest frame in an exponential moving average with time constant
    ``seconds`` at ``fps`` frames per second (1: no smoothing)."""
    return 1.0 if seconds <= 0 else 1.0 - math.exp(-1.0 / (fps * seconds))


def smooth_global(decision: GlobalPass, previous: Decision | None, weight: float,
                  scene_cut: float, light_change: float = math.inf
                  ) -> tuple[GlobalPass, Decision]:
    """One step of the moving average: ``decision`` (this frame's own global pass) with its GR
    image rescaled, channel by channel, to the smoothed gain; and the new state.

    The average restarts (the frame keeps its own decision) on the first frame, when the mean
    absolute change of log luma from the previous frame's thumbnail exceeds ``scene_cut``, and
    when the thumbnail's mean log luma is more than ``light_change`` away from its moving
    average.
    """
    gain, thumb = log_gain(decision), thumbnail(decision.small)
    light = float(thumb.mean())
    cut = (previous is None or float(np.abs(thumb - previous.thumbnail).mean()) > scene_cut
           or abs(light - previous.light) > light_change)
    if cut:
        smoothed = gain
    else:
        smoothed = previous.log_gain + weight * (gain - previous.log_gain)
        light = previous.light + weight * (light - previous.light)
    factor = torch.from_numpy(np.exp(smoothed - gain)).float().view(1, 3, 1, 1)
    image = (decision.image * factor).clamp(0.0, 1.0)
    return GlobalPass(decision.small, image), Decision(smoothed, thumb, light, cut)


# ----------------------------------------------------------------------------------------------
# Reading


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def open_video(path: str | Path) -> av.container.InputContainer:
    """Open a video file for decoding (close it, or use it in a ``with`` block).

    Raises:
        VideoReadError: missing, empty or unreadable file, or no video stream (audio only).
    """
    path = Path(path)
    if not path.exists():
        raise VideoReadError(f"{path}: no such file")
    if path.is_dir():
        raise VideoReadError(f"{path}: is a directory, not a video")
    if path.stat().st_size == 0:
        raise VideoReadError(f"{path}: empty file (0 bytes)")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.FFmpegError as exc:
        raise VideoReadError(f"{path}: not a readable video ({_reason(exc)})") from exc
    if _video_stream(container) is None:
        has_audio = bool(container.streams.audio)
        container.close()
        raise VideoReadError(f"{path}: no video stream" + (" (audio only)" if has_audio else ""))
    return container


def _video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream | None:
    """The first video stream that is not a cover picture (music files carry those)."""
    return next((s for s in container.streams.video
                 if not s.disposition & av.stream.Disposition.attached_pic), None)


def announced_seconds(container: av.container.InputContainer,
                      stream: av.video.stream.VideoStream) -> float | None:
    """The video's duration as the file's headers announce it (the stream's, else Matroska's
    DURATION tag, else the container's), or None."""
    if stream.duration:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION", "")  # "HH:MM:SS.nnnnnnnnn"
    if tag.count(":") == 2:
        hours, minutes, secs = tag.split(":")
        with contextlib.suppress(ValueError):
            return int(hours) * 3600 + int(minutes) * 60 + float(secs)
    return container.duration / av.time_base if container.duration else None


def read_frames(path: str | Path) -> Iterator[np.ndarray]:
    """The frames of a video, one at a time, as uint8 ``(H, W, 3)`` RGB (as stored: rotation
    metadata is not applied).

    Raises:
        VideoReadError: see :func:`open_video`.
    """
    with open_video(path) as container:
        stream = _video_stream(container)
        for frame in container.decode(stream):
            yield frame.to_ndarray(format="rgb24")


def flicker(brightness: Sequence[float]) -> float:
    """Mean frame-to-frame absolute change of the frames' mean brightness, relative to the mean
    brightness (0 for a steady clip)."""
    values = np.asarray(brightness, np.float64)
    return float(np.abs(np.diff(values)).mean() / max(values.mean(), 1e-12))


def _decode(stream: av.video.stream.VideoStream, packet: av.Packet, src: Path, done: int
            ) -> list[av.VideoFrame]:
    try:
        return stream.decode(packet)
    except av.FFmpegError as exc:
        raise VideoReadError(f"{src}: corrupt video data after {done} frames "
                             f"({_reason(exc)})") from exc


# ----------------------------------------------------------------------------------------------
# Writing


def output_format(path: str | Path) -> str:
    """FFmpeg's muxer for an output video suffix (containers that hold H.264).

    Raises:
        ValueError: another suffix.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in VIDEO_CONTAINERS:
        raise ValueError(f"{path}: unsupported output video container {suffix or '(none)'}; "
                         f"use one of {', '.join(VIDEO_CONTAINERS)}")
    return VIDEO_CONTAINERS[suffix]


def can_copy_codec(container_format: str, stream: av.stream.Stream) -> bool:
    """Whether a ``container_format`` file can hold ``stream``'s packets as they are (tried on
    an in-memory file: FFmpeg checks when it writes the header)."""
    probe = av.open(BytesIO(), "w", format=container_format)
    try:
        probe.add_stream_from_template(stream)
        probe.start_encoding()
        return True
    except (av.FFmpegError, ValueError):
        return False
    finally:
        with contextlib.suppress(av.FFmpegError):
            probe.close()


class _AudioTrack:
    """The source's audio into the sink: packets copied, or decoded and re-encoded to AAC when
    the container cannot hold the codec. Packets wait until :meth:`start` adds the stream, after
    the video stream (added once the first frame is decoded): the header is written at the
    first mux, and the video comes first in the file."""

    def __init__(self, sink: av.container.OutputContainer, source: av.audio.AudioStream,
                 container_format: str) -> None:
        self.sink, self.source = sink, source
        self.copy = can_copy_codec(container_format, source)
        self.stream: av.audio.AudioStream | None = None
        self.waiting: list[av.Packet] = []

    def push(self, packet: av.Packet) -> None:
        if self.stream is None:
            self.waiting.append(packet)
        else:
            self._write(packet)

    def start(self) -> None:
        if self.copy:
            self.stream = self.sink.add_stream_from_template(self.source)
        else:
            self.stream = self.sink.add_stream("aac", rate=self.source.rate)
            # AAC refuses unordered layouts ("1 channels"): name the usual ones
            channels = self.source.codec_context.channels
            self.stream.layout = {1: "mono", 2: "stereo"}.get(channels, self.source.layout)
        for packet in self.waiting:
            self._write(packet)
        self.waiting = []

    def finish(self) -> None:
        if not self.copy:
            self._write(None)

    def _write(self, packet: av.Packet | None) -> None:
        if self.copy:
            if packet is not None and packet.dts is not None:  # not the demuxer's flush packet
                packet.stream = self.stream
                self.sink.mux(packet)
            return
        frames = self.source.decode(packet) if packet is not None else [None]
        for frame in frames:
            if frame is not None:
                frame.pts = None  # the encoder counts samples itself
            self.sink.mux(self.stream.encode(frame))


def _add_video_stream(sink: av.container.OutputContainer, source: av.video.stream.VideoStream,
                      first: av.VideoFrame, rate: Fraction, settings: VideoSettings
                      ) -> av.video.stream.VideoStream:
    stream = sink.add_stream("libx264", rate=rate)
    stream.width, stream.height = first.width, first.height
    # 4:2:0 needs even sides; 4:4:4 keeps odd sizes exact
    stream.pix_fmt = "yuv420p" if first.width % 2 == 0 and first.height % 2 == 0 else "yuv444p"
    stream.time_base = source.time_base  # the source's timestamps, untouched
    stream.codec_context.time_base = source.time_base
    stream.options = {"crf": str(settings.crf), "preset": settings.preset}
    if source.codec_context.sample_aspect_ratio:
        stream.codec_context.sample_aspect_ratio = source.codec_context.sample_aspect_ratio
    if first.rotation:
        stream.set_display_rotation(first.rotation)
    if _matrix(first) is not None:  # the source's colour tags, so players read it alike
        for tag in ("colorspace", "color_primaries", "color_trc"):
            setattr(stream.codec_context, tag, getattr(source.codec_context, tag))
    return stream


def _matrix(frame: av.VideoFrame) -> int | None:
    """The frame's YUV matrix when it is tagged with one that swscale converts (BT.709,
    BT.601, ...); None leaves FFmpeg's defaults, which untagged files are decoded with."""
    colorspaces = {int(c) for c in av.video.reformatter.Colorspace}
    return int(frame.colorspace) if int(frame.colorspace) in colorspaces else None


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    pixels *= 255.0
    pixels += 0.5
    return pixels.astype(np.uint8)  # pixels are in [0, 1]: truncation after +0.5 rounds


def enhance_video(enhancer: Enhancer, src: str | Path, dst: str | Path,
                  settings: VideoSettings = VideoSettings(), overwrite: bool = False,
                  progress: Callable[[int, int | None], None] | None = None) -> VideoResult:
    """Enhance the video ``src`` into ``dst`` (.mp4, .m4v, .mov or .mkv), atomically.

    Args:
        enhancer: the engine; its settings (tiles, global size, refinement...) apply to every
            frame.
        settings: encoding and temporal smoothing.
        progress: called before the first frame and after each with the frames done and the
            frames expected (None when the container does not say).

    Raises:
        VideoReadError: ``src`` cannot be read, has no video, or is truncated or corrupt.
        OutputExistsError: ``dst`` exists and ``overwrite`` is false.
        ValueError: an unsupported output container, or the video cannot be encoded.
        OSError: ``dst`` cannot be written.
    """
    src, dst = Path(src), Path(dst)
    container_format = output_format(dst)
    if dst.exists() and not overwrite:
        raise OutputExistsError(f"{dst}: output exists (use --overwrite to replace it)")
    with open_video(src) as source, atomic_file(dst) as handle, \
            av.open(handle, "w", format=container_format) as sink:
        try:
            return _transcode(enhancer, source, sink, container_format, src, settings,
                              progress)
        except VideoReadError:
            raise
        except av.FFmpegError as exc:
            raise ValueError(f"cannot encode the video ({_reason(exc)})") from exc


def _transcode(enhancer: Enhancer, source: av.container.InputContainer,
               sink: av.container.OutputContainer, container_format: str, src: Path,
               settings: VideoSettings, progress: Callable[[int, int | None], None] | None
               ) -> VideoResult:
    video_in = _video_stream(source)
    video_in.thread_type = "AUTO"  # FFmpeg's own decoding threads
    rate = video_in.average_rate or video_in.guessed_rate or Fraction(DEFAULT_FPS)
    seconds = announced_seconds(source, video_in)
    expected = video_in.frames or (round(seconds * float(rate)) if seconds else None)
    audio = (_AudioTrack(sink, source.streams.audio[0], container_format)
             if settings.audio and source.streams.audio else None)
    sink.metadata.update({k: v for k, v in source.metadata.items() if k != "encoder"})
    weight = smoothing_weight(float(rate), settings.smoothing)
    video_out, matrix, state, done, cuts, first_pts, last_pts = None, None, None, 0, 0, 0, None

    def frames() -> Iterator[av.VideoFrame]:
        for packet in source.demux(*[s for s in (video_in, audio and audio.source) if s]):
            if audio is not None and packet.stream is audio.source:
                audio.push(packet)
            elif packet.stream is video_in:
                yield from _decode(video_in, packet, src, done)

    if progress is not None:
        progress(0, expected)
    for frame in frames():
        if video_out is None:
            video_out = _add_video_stream(sink, video_in, frame, rate, settings)
            matrix = _matrix(frame)
            if audio is not None:
                audio.start()
        pixels = frame.to_ndarray(format="rgb24", width=video_out.width,
                                  height=video_out.height).astype(np.float32)
        pixels *= 1.0 / 255.0
        decision, state = smooth_global(enhancer.global_pass(pixels), state, weight,
                                        settings.scene_cut, settings.light_change)
        cuts += state.cut and done > 0
        enhanced = av.VideoFrame.from_ndarray(
            _to_uint8(enhancer.enhance_array(pixels, decision)), format="rgb24")
        if matrix is not None:  # back to YUV with the matrix the frame was decoded with
            enhanced = enhanced.reformat(format=video_out.pix_fmt, dst_colorspace=matrix)
            enhanced.colorspace = matrix
        # the source's timestamps (variable frame rates stay so); made increasing if broken
        pts = frame.pts if frame.pts is not None else round(done / rate / video_in.time_base)
        if last_pts is None:
            first_pts = pts
        last_pts = pts if last_pts is None or pts > last_pts else last_pts + 1
        enhanced.pts, enhanced.time_base = last_pts, video_in.time_base
        sink.mux(video_out.encode(enhanced))
        done += 1
        if progress is not None:
            progress(done, expected)
    if video_out is None:
        raise VideoReadError(f"{src}: no video frame could be decoded (corrupt or truncated)")
    covered = float((last_pts - first_pts) * video_in.time_base) + 1 / float(rate)
    announced = announced_seconds(source, video_in)
    if announced and covered < TRUNCATED * announced:
        raise VideoReadError(f"{src}: truncated or corrupt (decoded {done} frames, "
                             f"{covered:.2f} s of {announced:.2f} s)")
    sink.mux(video_out.encode(None))
    if audio is not None:
        audio.finish()
    return VideoResult(done, video_out.width, video_out.height, float(rate),
                       "none" if audio is None else "copied" if audio.copy else "re-encoded",
                       cuts)
