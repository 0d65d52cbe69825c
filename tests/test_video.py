"""Videos: streaming decode -> enhance -> encode, what the output keeps, the temporal smoothing,
and one clear error for every kind of bad input."""

from __future__ import annotations

import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

av = pytest.importorskip("av")

from mrvae.apps.cli import app  # noqa: E402
from mrvae.engine.backends import TorchBackend  # noqa: E402
from mrvae.engine.decision import GlobalPass  # noqa: E402
from mrvae.engine.enhancer import Enhancer  # noqa: E402
from mrvae.engine.jobs import plan_jobs  # noqa: E402
from mrvae.engine.refine import Refinement  # noqa: E402
from mrvae.engine.video import (  # noqa: E402
    VideoSettings,
    enhance_video,
    flicker,
    smooth_global,
    smoothing_weight,
)
from mrvae.io.encode import write_image  # noqa: E402
from mrvae.io.files import OutputExistsError  # noqa: E402
from mrvae.io.video import VideoReadError, read_frames  # noqa: E402
from mrvae.nn.model import MRVAE, create_model, from_pretrained  # noqa: E402

WIDTH, HEIGHT = 64, 48


# --- clips made here -------------------------------------------------------------------------


def scene(astronaut: np.ndarray, level: float, frames: int, seed: int = 0) -> list[np.ndarray]:
    """``frames`` uint8 frames of one still dark scene at mean level ``level`` (of the
    astronaut's), each with its own sensor noise."""
    base = astronaut[:HEIGHT, 32:32 + WIDTH].astype(np.float32) * level
    rng = np.random.default_rng(seed)
    return [np.clip(base + rng.normal(0, 2, base.shape), 0, 255).astype(np.uint8)
            for _ in range(frames)]


def write_clip(path: Path, frames: list[np.ndarray], fps: int = 25, codec: str = "libx264",
               audio: str | None = None, rotation: int = 0) -> Path:
    """A clip of ``frames`` (uint8 RGB), with a tone of as many seconds in ``audio`` (codec)."""
    with av.open(str(path), "w") as container:
        video = container.add_stream(codec, rate=fps)
        video.height, video.width = frames[0].shape[:2]
        video.pix_fmt = "yuv420p"
        if rotation:
            video.set_display_rotation(rotation)
        sound = container.add_stream(audio, rate=8000) if audio else None
        if sound is not None:
            sound.layout = "mono"
        for i, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if sound is not None:
            samples = len(frames) * 8000 // fps
            tone = (np.sin(np.arange(samples) / 5) * 8000).astype(np.int16)[None]
            chunk = av.AudioFrame.from_ndarray(tone, format="s16", layout="mono")
            chunk.sample_rate, chunk.pts = 8000, 0
            container.mux(sound.encode(chunk))
            container.mux(sound.encode(None))
    return path


def brightness(path: Path) -> np.ndarray:
    return np.array([frame.mean() / 255 for frame in read_frames(path)])


def packets(path: Path, kind: str) -> list[bytes]:
    with av.open(str(path)) as container:
        stream = getattr(container.streams, kind)[0]
        return [bytes(p) for p in container.demux(stream) if p.size]


def leftovers(folder: Path) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name.startswith("."))


# --- stand-in networks -----------------------------------------------------------------------


class AutoExposure:
    """A stand-in network whose decision is plain to see: GR scales the image to a mean of
    ``target`` (times a random jitter per call: an unstable decision), DR returns GR."""

    def __init__(self, target: float = 0.4, jitter: float = 0.0, seed: int = 0) -> None:
        self.target, self.jitter = target, jitter
        self.rng = np.random.default_rng(seed)

    def global_image(self, x_small: torch.Tensor) -> torch.Tensor:
        target = self.target * (1 + self.rng.uniform(-self.jitter, self.jitter))
        return (x_small * target / x_small.mean().clamp_min(1e-3)).clamp(0, 1)

    def detail(self, x_tile: torch.Tensor, gr_tile: torch.Tensor) -> torch.Tensor:
        return gr_tile.clone()


class Identity:
    """GR and DR give the input back: the output shows what the pipeline itself does."""

    def global_image(self, x_small: torch.Tensor) -> torch.Tensor:
        return x_small.clone()

    def detail(self, x_tile: torch.Tensor, gr_tile: torch.Tensor) -> torch.Tensor:
        return x_tile.clone()


@pytest.fixture(scope="module")
def tiny(tiny_weights: Path) -> MRVAE:
    return from_pretrained(tiny_weights)


@pytest.fixture(scope="module")
def enhancer(tiny: MRVAE) -> Enhancer:
    return Enhancer(tiny, "cpu", tile=64, global_size=32)


def stand_in(tiny: MRVAE, backend: object) -> Enhancer:
    return Enhancer(tiny, "cpu", tile=64, global_size=32, backend=backend, refine=None)


@pytest.fixture()
def clip(tmp_path: Path, astronaut: np.ndarray) -> Path:
    """12 frames at 15 fps, rotated 90 degrees, with AAC audio."""
    return write_clip(tmp_path / "clip.mp4", scene(astronaut, 0.3, 12), fps=15, audio="aac",
                      rotation=90)


# --- what the output keeps -------------------------------------------------------------------


def test_keeps_frames_size_rate_timestamps_and_rotation(enhancer: Enhancer, clip: Path,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    result = enhancer.enhance_video(clip, out)
    assert (result.frames, result.width, result.height, result.fps) == (12, WIDTH, HEIGHT, 15)
    with av.open(str(clip)) as source, av.open(str(out)) as written:
        before = list(source.decode(video=0))
        after = list(written.decode(video=0))
        assert written.streams.video[0].average_rate == 15
        assert written.streams.video[0].codec_context.name == "h264"
    assert len(after) == len(before) == 12
    assert [f.time for f in after] == [f.time for f in before]
    assert {(f.width, f.height, f.rotation) for f in after} == {(WIDTH, HEIGHT, 90)}
    assert not leftovers(tmp_path)


def test_enhances_the_frames(enhancer: Enhancer, clip: Path, tmp_path: Path) -> None:
    enhancer.enhance_video(clip, tmp_path / "out.mp4")
    for before, after in zip(read_frames(clip), read_frames(tmp_path / "out.mp4"), strict=True):
        expected = enhancer.enhance_array(before.astype(np.float32) / 255) * 255
        assert np.abs(after.astype(np.float32) - expected).mean() < 6  # H.264 at crf 18


def test_pipeline_keeps_the_picture(tiny: MRVAE, clip: Path, tmp_path: Path) -> None:
    """With a network that changes nothing, the output is the input up to coding loss: no
    colour conversion shift, no flip, no offset."""
    stand_in(tiny, Identity()).enhance_video(clip, tmp_path / "out.mp4")
    for before, after in zip(read_frames(clip), read_frames(tmp_path / "out.mp4"), strict=True):
        difference = after.astype(np.float32) - before
        assert np.abs(difference.mean(axis=(0, 1))).max() < 1.5  # per-channel mean shift
        assert np.abs(difference).mean() < 4


def test_colour_tags_are_kept(tiny: MRVAE, tmp_path: Path) -> None:
    """An HD-style BT.709 clip stays BT.709 (players would otherwise guess), colours intact."""
    bars = np.repeat(np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [180, 180, 60]],
                              np.uint8), 16, axis=0)[None].repeat(HEIGHT, axis=0)
    source = tmp_path / "bt709.mp4"
    with av.open(str(source), "w") as container:
        video = container.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.codec_context.colorspace = video.codec_context.color_primaries = 1  # BT.709
        frame = av.VideoFrame.from_ndarray(bars, format="rgb24").reformat(
            format="yuv420p", dst_colorspace=1)
        frame.colorspace, frame.pts, frame.time_base = 1, 0, Fraction(1, 25)
        container.mux(video.encode(frame))
        container.mux(video.encode(None))
    stand_in(tiny, Identity()).enhance_video(source, tmp_path / "out.mp4")
    with av.open(str(tmp_path / "out.mp4")) as written:
        assert written.streams.video[0].codec_context.colorspace == 1
    after = next(read_frames(tmp_path / "out.mp4")).astype(np.float32)
    assert np.abs(after[8:-8, 4::16] - bars[8:-8, 4::16]).max() < 6


def test_audio_is_copied_packet_for_packet(enhancer: Enhancer, clip: Path, tmp_path: Path
                                           ) -> None:
    result = enhancer.enhance_video(clip, tmp_path / "out.mkv")
    assert result.audio == "copied"
    assert packets(tmp_path / "out.mkv", "audio") == packets(clip, "audio")


def test_audio_the_container_cannot_hold_is_reencoded(enhancer: Enhancer, astronaut: np.ndarray,
                                                      tmp_path: Path) -> None:
    source = write_clip(tmp_path / "old.avi", scene(astronaut, 0.3, 10), codec="mpeg4",
                        audio="pcm_mulaw")  # MPEG-4 part 2 + mu-law: no mu-law in MP4
    result = enhancer.enhance_video(source, tmp_path / "out.mp4")
    assert (result.frames, result.audio) == (10, "re-encoded")
    with av.open(str(tmp_path / "out.mp4")) as written:
        sound = written.streams.audio[0]
        assert sound.codec_context.name == "aac"
        assert float(written.duration / av.time_base) == pytest.approx(10 / 25, abs=0.2)


def test_no_audio_when_asked(enhancer: Enhancer, clip: Path, tmp_path: Path) -> None:
    result = enhancer.enhance_video(clip, tmp_path / "out.mp4", VideoSettings(audio=False))
    assert result.audio == "none"
    with av.open(str(tmp_path / "out.mp4")) as written:
        assert not written.streams.audio


def test_odd_sizes_are_kept(enhancer: Enhancer, astronaut: np.ndarray, tmp_path: Path) -> None:
    frames = [f[:47, :63] for f in scene(astronaut, 0.3, 4)]
    source = write_clip(tmp_path / "odd.mkv", frames, codec="ffv1")
    assert enhancer.enhance_video(source, tmp_path / "out.mkv").width == 63
    assert {f.shape for f in read_frames(tmp_path / "out.mkv")} == {(47, 63, 3)}


def test_quality_option_sets_the_size(tiny: MRVAE, clip: Path, tmp_path: Path) -> None:
    # the input's texture restored onto the untrained network's output: detail that the quality
    # setting must pay for (kept as is, the smooth dark input compresses alike at any quality)
    enhancer = Enhancer(tiny, "cpu", tile=64, global_size=32,
                        refine=Refinement(detail=1.0, keep=False))
    sizes = []
    for crf in (10, 40):
        enhancer.enhance_video(clip, tmp_path / f"{crf}.mp4", VideoSettings(crf=crf, audio=False))
        sizes.append((tmp_path / f"{crf}.mp4").stat().st_size)
    assert sizes[0] > 1.5 * sizes[1]


# --- atomic output ---------------------------------------------------------------------------


def test_an_interrupted_run_leaves_nothing(enhancer: Enhancer, clip: Path, tmp_path: Path
                                           ) -> None:
    def interrupt(done: int, total: int | None) -> None:
        if done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        enhance_video(enhancer, clip, tmp_path / "out.mp4", progress=interrupt)
    assert sorted(os.listdir(tmp_path)) == ["clip.mp4"]


def test_a_failure_keeps_the_old_output(enhancer: Enhancer, clip: Path, tmp_path: Path) -> None:
    old = tmp_path / "out.mp4"
    old.write_bytes(b"old")
    with pytest.raises(OutputExistsError):
        enhancer.enhance_video(clip, old)

    def fail(done: int, total: int | None) -> None:
        if done == 3:
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        enhancer.enhance_video(clip, old, overwrite=True, progress=fail)
    assert old.read_bytes() == b"old"
    assert not leftovers(tmp_path)


# --- bad input -------------------------------------------------------------------------------


def make_bad(kind: str, folder: Path, astronaut: np.ndarray) -> Path:
    if kind == "missing":
        return folder / "missing.mp4"
    path = folder / f"{kind}.mkv"
    if kind == "zero-length":
        path.write_bytes(b"")
    elif kind == "not a video":
        path.write_bytes(np.random.default_rng(0).bytes(4000))
    elif kind in ("truncated", "corrupt"):
        data = write_clip(folder / "good.mkv", scene(astronaut, 0.3, 40)).read_bytes()
        (folder / "good.mkv").unlink()
        if kind == "truncated":
            data = data[:len(data) // 2]
        else:  # the packet data of the second half overwritten
            data = data[:len(data) // 2] + bytes(len(data) - len(data) // 2)
        path.write_bytes(data)
    elif kind == "audio only":
        with av.open(str(path), "w") as container:
            sound = container.add_stream("aac", rate=8000)
            sound.layout = "mono"
            chunk = av.AudioFrame.from_ndarray(np.zeros((1, 8000), np.float32), format="flt",
                                               layout="mono")
            chunk.sample_rate, chunk.pts = 8000, 0
            container.mux(sound.encode(chunk))
            container.mux(sound.encode(None))
    return path


BAD = {"missing": "no such file", "zero-length": "empty file", "not a video": "not a readable",
       "truncated": "truncated", "corrupt": "corrupt", "audio only": "no video stream (audio"}


@pytest.mark.parametrize("kind", BAD)
def test_bad_input_gets_one_clear_error(enhancer: Enhancer, astronaut: np.ndarray,
                                        tmp_path: Path, kind: str) -> None:
    source = make_bad(kind, tmp_path, astronaut)
    with pytest.raises(VideoReadError) as error:
        enhancer.enhance_video(source, tmp_path / "out.mp4")
    message = str(error.value)
    assert message.startswith(str(source)) and BAD[kind] in message and "\n" not in message
    assert not (tmp_path / "out.mp4").exists() and not leftovers(tmp_path)


def test_bad_settings(enhancer: Enhancer, clip: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="crf"):
        VideoSettings(crf=60)
    with pytest.raises(ValueError, match="preset"):
        VideoSettings(preset="quick")
    with pytest.raises(ValueError, match="container"):
        enhancer.enhance_video(clip, tmp_path / "out.webm")


# --- the command line ------------------------------------------------------------------------


def run_cli(weights: Path, *args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["enhance", "--model", str(weights), "--device", "cpu",
                                      "--global-size", "32", "--tile", "64", "--no-progress",
                                      *map(str, args)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def test_cli_one_video(tiny_weights: Path, clip: Path, tmp_path: Path) -> None:
    code, output = run_cli(tiny_weights, clip, "-o", tmp_path / "out.mov", "--crf", "23")
    assert code == 0, output
    assert len(list(read_frames(tmp_path / "out.mov"))) == 12


def test_cli_mixed_folder_goes_on_past_bad_files(tiny_weights: Path, astronaut: np.ndarray,
                                                  tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    write_image(folder / "photo.png", astronaut[:HEIGHT, :WIDTH] / 255 * 0.3)
    write_clip(folder / "night.avi", scene(astronaut, 0.3, 6), codec="mpeg4")
    write_clip(folder / "dash.mov", scene(astronaut, 0.3, 6), audio="aac")
    (folder / "empty.mp4").write_bytes(b"")
    make_bad("audio only", folder, astronaut).rename(folder / "song.webm")
    code, output = run_cli(tiny_weights, folder, "-o", tmp_path / "out", "--compare")
    assert code == 1
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 2
    assert any("empty.mp4" in e and "empty file" in e for e in errors)
    assert any("song.webm" in e and "audio only" in e for e in errors)
    assert "done 3, skipped 0, failed 2" in output
    assert sorted(os.listdir(tmp_path / "out")) == [
        "dash_enhanced.mov", "night_enhanced.mp4", "photo_enhanced.png",
        "photo_enhanced_compare.png"]
    assert len(list(read_frames(tmp_path / "out" / "night_enhanced.mp4"))) == 6


def test_cli_bad_option_is_one_line(tiny_weights: Path, clip: Path, tmp_path: Path) -> None:
    code, output = run_cli(tiny_weights, clip, "-o", tmp_path / "o.mp4", "--video-preset", "x")
    assert code == 1 and output.strip().startswith("error: unknown preset 'x'")
    code, output = run_cli(tiny_weights, clip, "-o", tmp_path / "o.webm")
    assert code == 1 and "unsupported output video container .webm" in output
    assert sorted(os.listdir(tmp_path)) == ["clip.mp4"]


def test_cli_operator_every_reaches_the_video_settings(tiny_weights: Path, clip: Path,
                                                       tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import mrvae.engine.video as video_module

    seen: list[int] = []

    class Recording(VideoSettings):
        def __post_init__(self) -> None:
            seen.append(self.operator_every)
            super().__post_init__()

    monkeypatch.setattr(video_module, "VideoSettings", Recording)
    code, output = run_cli(tiny_weights, clip, "-o", tmp_path / "o.mp4", "--operator-every", "1")
    assert code == 0, output
    assert seen == [1]
    code, output = run_cli(tiny_weights, clip, "-o", tmp_path / "p.mp4", "--operator-every", "0")
    assert code == 2 and "--operator-every" in output and not (tmp_path / "p.mp4").exists()


def test_plan_jobs_names_video_outputs(tmp_path: Path) -> None:
    for name in ("a.MOV", "b.webm", "c.avi", "d.png"):
        (tmp_path / name).write_bytes(b"x")
    jobs, failures = plan_jobs([str(tmp_path)], fmt="jpg", compare=True)
    assert not failures
    assert {job.dst.name: job.compare is not None for job in jobs} == {
        "a_enhanced.MOV": False, "b_enhanced.mp4": False, "c_enhanced.mp4": False,
        "d_enhanced.jpg": True}


# --- temporal smoothing ----------------------------------------------------------------------


def test_smoothing_removes_the_flicker_of_frame_by_frame_decisions(
        tiny: MRVAE, astronaut: np.ndarray, tmp_path: Path) -> None:
    """A network whose exposure jitters by +-20 % per frame on a steady clip: frame by frame,
    the output flickers with it; smoothed, most of it is gone."""
    source = write_clip(tmp_path / "steady.mp4", scene(astronaut, 0.15, 30))
    outputs = {}
    for seconds in (0.0, 0.4):
        out = tmp_path / f"{seconds}.mp4"
        result = stand_in(tiny, AutoExposure(jitter=0.2)).enhance_video(
            source, out, VideoSettings(smoothing=seconds))
        assert result.scene_cuts == 0
        outputs[seconds] = flicker(brightness(out))
    assert outputs[0.0] > 0.05  # the stand-in does flicker
    assert outputs[0.4] < outputs[0.0] / 3


def test_a_light_change_is_followed_at_once(tiny: MRVAE, astronaut: np.ndarray, tmp_path: Path
                                            ) -> None:
    """A lamp switched on (3x the light) is a cut: the exposure adapts on that frame; with the
    cut detection off, the moving average would overexpose for several frames."""
    frames = scene(astronaut, 0.1, 10) + scene(astronaut, 0.3, 10, seed=1)
    source = write_clip(tmp_path / "lamp.mp4", frames, fps=10)
    levels = {}
    for detect in (True, False):
        out = tmp_path / f"{detect}.mp4"
        threshold = 0.3 if detect else 100.0
        result = stand_in(tiny, AutoExposure()).enhance_video(
            source, out, VideoSettings(smoothing=0.5, scene_cut=threshold,
                                       light_change=threshold))
        assert result.scene_cuts == (1 if detect else 0)
        levels[detect] = brightness(out)
    steady = levels[True][:10].mean()
    assert np.abs(levels[True] - steady).max() < 0.05 * steady  # no jump at the lamp
    assert levels[False][10] > 1.5 * steady  # the average alone lags


class CountingBackend(TorchBackend):
    """The torch backend, counting the network's global passes (operator models)."""

    def __init__(self, model: MRVAE) -> None:
        super().__init__(model, "cpu")
        self.passes = 0

    def global_operator(self, x_small: torch.Tensor) -> torch.Tensor | None:
        self.passes += 1
        return super().global_operator(x_small)


def test_an_operator_model_runs_its_global_pass_every_few_frames_and_at_cuts(
        astronaut: np.ndarray, tmp_path: Path) -> None:
    """operator_every=3 on 15 frames with a cut at frame 10: the network's passes at frames 0,
    3, 6, 9, 10 (the cut, at once) and 13; the frames between apply the last operator, and the
    picture stays that of a pass on every frame."""
    torch.manual_seed(0)
    model = create_model("tiny", operator="affine", grid_size=2, grid_depth=2).eval()
    with torch.no_grad():  # a grid that is not the identity, so each frame's pass matters
        for parameter in model.global_reconstruction.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    source = write_clip(tmp_path / "cut.mp4",
                        scene(astronaut, 0.1, 10) + scene(astronaut, 0.3, 5, seed=1), fps=10)
    outputs = {}
    for every in (1, 3):
        backend = CountingBackend(model)
        engine = Enhancer(model, "cpu", tile=64, global_size=32, backend=backend)
        out = tmp_path / f"every{every}.mp4"
        result = engine.enhance_video(source, out, VideoSettings(operator_every=every))
        assert result.scene_cuts == 1
        assert backend.passes == (15 if every == 1 else 6)
        outputs[every] = np.stack(list(read_frames(out))).astype(np.float32)
    assert np.abs(outputs[3] - outputs[1]).mean() < 1.0  # of 255: a still scene


def gp(level: float, gain: float, seed: int = 0) -> GlobalPass:
    small = torch.full((1, 3, 8, 8), level) + 0.001 * torch.rand(
        (1, 3, 8, 8), generator=torch.Generator().manual_seed(seed))
    return GlobalPass(small, (small * gain).clamp(0, 1))


def test_smooth_global_averages_the_gain_and_restarts_at_cuts() -> None:
    first, state = smooth_global(gp(0.1, 2.0), None, 0.5, 0.3)
    assert state.cut and torch.equal(first.image, gp(0.1, 2.0).image)
    second, state = smooth_global(gp(0.1, 4.0, seed=1), state, 0.5, 0.3)
    assert not state.cut
    expected_gain = np.exp((np.log(2.0) + np.log(4.0)) / 2)  # halfway in log units
    ratio = (second.image.mean() / second.small.mean()).item()
    assert ratio == pytest.approx(expected_gain, rel=0.02)
    assert torch.equal(second.small, gp(0.1, 4.0, seed=1).small)
    third, state = smooth_global(gp(0.4, 1.5, seed=2), state, 0.5, 0.3)  # lamp: 4x the light
    assert state.cut and torch.equal(third.image, gp(0.4, 1.5, seed=2).image)


def test_a_light_ramp_restarts_the_average_once_it_drifts_away() -> None:
    """8 % more light per frame: no single step is a cut, but the average falls behind."""
    cuts = {}
    for light_change in (0.2, np.inf):
        state, cuts[light_change] = None, []
        for i in range(12):
            _, state = smooth_global(gp(0.05 * 1.08 ** i, 2.0, seed=i), state, 0.1, 0.3,
                                     light_change)
            cuts[light_change].append(state.cut)
    assert cuts[np.inf] == [True] + [False] * 11
    assert 2 <= sum(cuts[0.2][1:]) <= 6  # restarts every few frames while the light ramps


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.floats(0.02, 0.5), st.floats(0.5, 3.0)), min_size=1, max_size=6))
def test_no_smoothing_is_frame_by_frame(frames: list[tuple[float, float]]) -> None:
    state = None
    for i, (level, gain) in enumerate(frames):
        own = gp(level, gain, seed=i)
        smoothed, state = smooth_global(own, state, smoothing_weight(25, 0.0), 0.3)
        torch.testing.assert_close(smoothed.image, own.image, rtol=1e-5, atol=1e-6)


def test_smoothing_weight() -> None:
    assert smoothing_weight(25, 0) == 1
    # after one time constant, a step has come 1 - 1/e of the way
    weight = smoothing_weight(25, 0.4)
    assert 1 - (1 - weight) ** 10 == pytest.approx(1 - np.exp(-1))


def test_prefetch_reads_ahead_on_another_thread_and_passes_errors_on() -> None:
    import threading

    from mrvae.engine.video import prefetch

    threads: list[str] = []

    def items() -> Iterator[int]:
        for i in range(3):
            threads.append(threading.current_thread().name)
            yield i
        raise VideoReadError("clip.mp4: corrupt video data after 3 frames")

    got = []
    with pytest.raises(VideoReadError, match="after 3 frames"):
        for item in prefetch(items()):
            got.append(item)
    assert got == [0, 1, 2]
    assert all(name.startswith("mrvae-decode") for name in threads)
