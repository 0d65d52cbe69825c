"""Videos through the :class:`~mrvae.engine.enhancer.Enhancer`: streaming, no flicker, audio kept.

Frames stream decode -> enhance -> encode through PyAV (:mod:`mrvae.io.video`): the next frame
is decoded and the last one encoded on two threads while the network works on this one, and no
more frames than that are held, so memory does not grow with the clip's length. The output
keeps the frame count, size, timestamps (hence the frame rate, constant or variable), rotation
and the container's metadata; the video is H.264; the audio is copied packet for packet where
the output container can hold its codec, else re-encoded to AAC. The file appears only once
complete (:func:`mrvae.io.files.atomic_file`).

Temporal stability. A photo model run frame by frame flickers: each frame gets its own exposure
and colour. The global pass still runs on every frame (its image must follow the motion, since
DR reads it pixel by pixel; for a model whose GR predicts an operator, the network runs on every
``operator_every``-th frame and on cuts, and the frames between apply its last operator to
their own pixels), but the decision it implies -- the per-channel gain
``mean(GR) / mean(input)`` on the small copy, in log units -- is smoothed by an exponential moving
average with a time constant of :attr:`VideoSettings.smoothing` seconds, and each frame's GR
image is rescaled to the smoothed gain. The average restarts at a scene cut or a sudden light
change (a lamp switched on), detected as a large mean change of log luma between consecutive
16 x 16 thumbnails of the small copies, and when the light drifts away from its own moving
average (a light ramping up faster than the average follows): those are followed at once
instead of faded into.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import av
import numpy as np
import torch
import torch.nn.functional as F
from kornia.color import rgb_to_grayscale

from mrvae.engine.decision import GlobalPass
from mrvae.io.files import atomic_file, refuse_existing
from mrvae.io.video import (
    AudioTrack,
    VideoReadError,
    add_video_stream,
    announced_seconds,
    decode_packet,
    frame_matrix,
    open_video,
    output_format,
    reason,
    to_uint8,
    video_stream,
)

if TYPE_CHECKING:
    from mrvae.engine.enhancer import Enhancer

T = TypeVar("T")
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                "slower", "veryslow")
THUMBNAIL = 16  # side of the scene-cut thumbnails: averages sensor noise away
_GAIN_EPS = 1.0 / 255.0  # floor of the means in the gain
_CUT_EPS = 4.0 / 255.0  # floor of the thumbnails' luma: dark noise must not look like a cut
DEFAULT_FPS = 30.0  # when a stream does not say
TRUNCATED = 0.9  # frames covering less than this share of the announced duration: truncated


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
        operator_every: for a model whose GR predicts an operator (the default model), the
            network's global pass runs on every ``operator_every``-th frame; the frames between
            apply the last operator to their own small copy (a scene cut or light change runs
            it at once). Within the smoothing's time constant, and a quarter of a 720p frame's
            time. 1: every frame.
        audio: keep the audio track.
    """

    crf: int = 18
    preset: str = "medium"
    smoothing: float = 0.4
    scene_cut: float = 0.3
    light_change: float = 0.2
    operator_every: int = 3
    audio: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.crf <= 51:
            raise ValueError(f"bad crf {self.crf}; use 0 (lossless) to 51")
        if self.preset not in X264_PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose from "
                             f"{', '.join(X264_PRESETS)}")
        if (self.smoothing < 0 or self.scene_cut <= 0 or self.light_change <= 0
                or self.operator_every < 1):
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


def prefetch(items: Iterator[T]) -> Iterator[T]:
    """``items``, each one produced on a thread of its own while the one before is used."""
    end = object()
    with ThreadPoolExecutor(1, thread_name_prefix="mrvae-decode") as reader:
        ahead = reader.submit(next, items, end)
        while (item := ahead.result()) is not end:
            ahead = reader.submit(next, items, end)
            yield item


# ----------------------------------------------------------------------------------------------
# Temporal smoothing


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
    light = rgb_to_grayscale(small)  # BT.601
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
    scale = factor if decision.operator is not None else None  # applied tile by tile
    return (GlobalPass(decision.small, image, decision.operator, scale),
            Decision(smoothed, thumb, light, cut))


def flicker(brightness: Sequence[float]) -> float:
    """Mean frame-to-frame absolute change of the frames' mean brightness, relative to the mean
    brightness (0 for a steady clip)."""
    values = np.asarray(brightness, np.float64)
    return float(np.abs(np.diff(values)).mean() / max(values.mean(), 1e-12))



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
    refuse_existing(dst, overwrite)
    with open_video(src) as source, atomic_file(dst) as handle, \
            av.open(handle, "w", format=container_format) as sink:
        try:
            return _transcode(enhancer, source, sink, container_format, src, settings,
                              progress)
        except VideoReadError:
            raise
        except av.FFmpegError as exc:
            raise ValueError(f"cannot encode the video ({reason(exc)})") from exc


def _transcode(enhancer: Enhancer, source: av.container.InputContainer,
               sink: av.container.OutputContainer, container_format: str, src: Path,
               settings: VideoSettings, progress: Callable[[int, int | None], None] | None
               ) -> VideoResult:
    video_in = video_stream(source)
    video_in.thread_type = "AUTO"  # FFmpeg's own decoding threads
    rate = video_in.average_rate or video_in.guessed_rate or Fraction(DEFAULT_FPS)
    seconds = announced_seconds(source, video_in)
    expected = video_in.frames or (round(seconds * float(rate)) if seconds else None)
    audio = (AudioTrack(sink, source.streams.audio[0], container_format)
             if settings.audio and source.streams.audio else None)
    sink.metadata.update({k: v for k, v in source.metadata.items() if k != "encoder"})
    weight = smoothing_weight(float(rate), settings.smoothing)
    video_out, matrix, state, done, cuts, first_pts, last_pts = None, None, None, 0, 0, 0, None
    operator, since = None, 0  # the network's last operator, and the frames that used it

    def items() -> Iterator[tuple[av.VideoFrame | None, av.Packet | None]]:
        """The source in file order: ``(frame, None)`` per decoded frame, ``(None, packet)``
        per audio packet."""
        for packet in source.demux(*[s for s in (video_in, audio and audio.source) if s]):
            if audio is not None and packet.stream is audio.source:
                yield None, packet
            elif packet.stream is video_in:
                yield from ((frame, None) for frame in decode_packet(video_in, packet, src, done))

    def start(first: av.VideoFrame) -> tuple[av.video.stream.VideoStream, int | None]:
        stream = add_video_stream(sink, video_in, first, rate, settings.crf, settings.preset)
        if audio is not None:
            audio.start()
        return stream, frame_matrix(first)

    def encode(pixels: np.ndarray, pts: int) -> None:
        enhanced = av.VideoFrame.from_ndarray(to_uint8(pixels), format="rgb24")
        if matrix is not None:  # back to YUV with the matrix the frame was decoded with
            enhanced = enhanced.reformat(format=video_out.pix_fmt, dst_colorspace=matrix)
            enhanced.colorspace = matrix
        enhanced.pts, enhanced.time_base = pts, video_in.time_base
        sink.mux(video_out.encode(enhanced))

    if progress is not None:
        progress(0, expected)
    # Decoding runs one item ahead on a thread of its own; the sink has one thread too (its only
    # user, so audio and video stay in order), encoding a frame while the next is enhanced.
    with ThreadPoolExecutor(1, thread_name_prefix="mrvae-encode") as encoder:
        pending: list[Future[Any]] = []
        for frame, packet in prefetch(items()):
            if packet is not None:
                pending.append(encoder.submit(audio.push, packet))
                continue
            if video_out is None:
                video_out, matrix = encoder.submit(start, frame).result()
            pixels = frame.to_ndarray(format="rgb24", width=video_out.width,
                                      height=video_out.height).astype(np.float32)
            pixels *= 1.0 / 255.0
            reuse = operator is not None and since < settings.operator_every
            own = enhancer.global_pass(pixels, operator if reuse else None)
            decision, following = smooth_global(own, state, weight, settings.scene_cut,
                                                settings.light_change)
            if reuse and following.cut:  # a new scene gets its own operator at once
                reuse, own = False, enhancer.global_pass(pixels)
                decision, following = smooth_global(own, state, weight, settings.scene_cut,
                                                    settings.light_change)
            state = following
            operator, since = (operator, since + 1) if reuse else (own.operator, 1)
            cuts += state.cut and done > 0
            enhanced = enhancer.enhance_array(pixels, decision)
            # the source's timestamps (variable frame rates stay so); made increasing if broken
            pts = frame.pts if frame.pts is not None else round(done / rate / video_in.time_base)
            if last_pts is None:
                first_pts = pts
            last_pts = pts if last_pts is None or pts > last_pts else last_pts + 1
            for future in pending:  # at most one frame waits to be encoded
                future.result()
            pending = [encoder.submit(encode, enhanced, last_pts)]
            done += 1
            if progress is not None:
                progress(done, expected)
        for future in pending:
            future.result()
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
