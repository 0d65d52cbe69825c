"""Video containers through PyAV (FFmpeg's libraries): opening, decoding, H.264 streams, audio.

What :mod:`mrvae.engine.video` needs to stream a video frame by frame: reading with one-line
errors (:class:`VideoReadError`), the output muxer of a suffix, a video stream that keeps the
source's timestamps, rotation and colour tags, and the audio copied packet for packet or
re-encoded to AAC when the output container cannot hold its codec.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from fractions import Fraction
from io import BytesIO
from pathlib import Path

import numpy as np

from mrvae.io.files import VIDEO_CONTAINERS
from mrvae.io.pixels import ImageReadError

try:
    import av
except ImportError as exc:  # an optional dependency: photos work without it
    raise ImportError("video needs PyAV: pip install 'mrvae[video]'") from exc


class VideoReadError(ImageReadError):
    """A file that cannot be read as a video; the message names the file and the reason.

    An :class:`~mrvae.io.pixels.ImageReadError`, so whatever handles unreadable inputs handles it.
    """


def reason(exc: Exception) -> str:
    """The one-line reason of an OS or FFmpeg error."""
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
        raise VideoReadError(f"{path}: not a readable video ({reason(exc)})") from exc
    if video_stream(container) is None:
        has_audio = bool(container.streams.audio)
        container.close()
        raise VideoReadError(f"{path}: no video stream" + (" (audio only)" if has_audio else ""))
    return container


def video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream | None:
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
        stream = video_stream(container)
        for frame in container.decode(stream):
            yield frame.to_ndarray(format="rgb24")


def decode_packet(stream: av.video.stream.VideoStream, packet: av.Packet, src: Path, done: int
            ) -> list[av.VideoFrame]:
    """The frames of one packet; ``done`` frames so far, for the error message."""
    try:
        return stream.decode(packet)
    except av.FFmpegError as exc:
        raise VideoReadError(f"{src}: corrupt video data after {done} frames "
                             f"({reason(exc)})") from exc


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


class AudioTrack:
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


def add_video_stream(sink: av.container.OutputContainer, source: av.video.stream.VideoStream,
                     first: av.VideoFrame, rate: Fraction, crf: int, preset: str
                     ) -> av.video.stream.VideoStream:
    """An H.264 stream in ``sink`` for frames like ``first``, with ``source``'s timestamps,
    aspect, rotation and colour tags; ``crf`` and ``preset`` are x264's."""
    stream = sink.add_stream("libx264", rate=rate)
    stream.width, stream.height = first.width, first.height
    # 4:2:0 needs even sides; 4:4:4 keeps odd sizes exact
    stream.pix_fmt = "yuv420p" if first.width % 2 == 0 and first.height % 2 == 0 else "yuv444p"
    stream.time_base = source.time_base  # the source's timestamps, untouched
    stream.codec_context.time_base = source.time_base
    stream.options = {"crf": str(crf), "preset": preset}
    if source.codec_context.sample_aspect_ratio:
        stream.codec_context.sample_aspect_ratio = source.codec_context.sample_aspect_ratio
    if first.rotation:
        stream.set_display_rotation(first.rotation)
    if frame_matrix(first) is not None:  # the source's colour tags, so players read it alike
        for tag in ("colorspace", "color_primaries", "color_trc"):
            setattr(stream.codec_context, tag, getattr(source.codec_context, tag))
    return stream


def frame_matrix(frame: av.VideoFrame) -> int | None:
    """The frame's YUV matrix when it is tagged with one that swscale converts (BT.709,
    BT.601, ...); None leaves FFmpeg's defaults, which untagged files are decoded with."""
    colorspaces = {int(c) for c in av.video.reformatter.Colorspace}
    return int(frame.colorspace) if int(frame.colorspace) in colorspaces else None


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Float ``pixels`` in [0, 1] as uint8, rounded (scaled in place)."""
    pixels *= 255.0
    pixels += 0.5
    return pixels.astype(np.uint8)  # pixels are in [0, 1]: truncation after +0.5 rounds
