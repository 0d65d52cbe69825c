"""Docs that run: every shell command of README.md and docs/*.md, executed as a user would.

Each fenced ``bash`` block is split into commands (``\\`` continuations joined, ``# comments``
dropped), and each command is one test, named ``FILE:LINE``. The commands of a block run in
order, in one temporary working directory laid out like a checkout (copies of ``examples/``,
``configs/`` and ``scripts/``, ``src`` linked for the configs' weight paths, ``../shared``
linked when it exists), with a private ``HOME`` (holding a Ray token in ``~/.ray/auth_token``)
and this interpreter's scripts first on ``PATH``. The placeholder inputs the block names
(``photo.jpg``, ``shots/``, ``night.dng``, ``clip.mp4``, ``LOL/eval15``, ...) are made small
first (:data:`PLACEHOLDERS`). An ``export`` carries over to the block's next commands.

Every command ends one of three ways:

- it **runs verbatim** and must exit with status 0;
- it runs as a **bounded variant** derived here, in :data:`RULES`, where the command as written
  runs for minutes to hours, blocks, or would touch the machine beyond the test (training gets
  ``--set steps=2`` and small batches, ``mrvae eval`` on ../shared data gets ``--limit 1``,
  ``mrvae serve`` is started, asked for ``/api/health`` and stopped, ``ray start --head`` runs
  with ``--block`` and the block's ``ray stop`` ends that process only: ``ray stop`` itself
  stops every Ray on the machine, other people's included);
- it is **skipped**, where the markdown says so, with the reason, in a comment on the line
  before its block: ``<!-- docs-test: skip (REASON) -->`` for the whole block, or
  ``<!-- docs-test: skip `TEXT` (REASON) -->`` for its commands that contain TEXT (package
  installs, a cluster of several machines, a GPU, Chromium, the test suite itself).

Commands that read ../shared data (and the training and fitting runs, whose configs do) are
marked ``shared`` and skipped without it; long ones are marked ``slow``.

docs/RESULTS.md's "Reproduce" block is parsed like the others but skipped as a whole by its
own comment: it is the research log's record of how each table was made at its release
(commit hashes, old module paths, `git checkout` of old files), runs of minutes to hours each,
not instructions for users; the commands users copy (train, eval, enhance) are the README's and
docs' own, which run here.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import stop_process

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL = {"bash", "sh", "shell"}
TIMEOUT_S = 600  # one command, bounded

# --- parsing ---------------------------------------------------------------------------------

FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[ \t]*$")
CLOSE = re.compile(r"^[ \t]*```[ \t]*$")
ANNOTATION = re.compile(r"^[ \t]*<!--\s*docs-test:(?P<body>.*?)-->[ \t]*$")
SKIP = re.compile(r"^\s*skip(?:\s+`(?P<text>[^`]+)`)?\s*\((?P<reason>.*)\)\s*$")


@dataclass(frozen=True)
class Skip:
    """A ``docs-test: skip`` comment: the commands it covers (all, or those containing
    ``text``) and why."""

    line: int
    text: str | None
    reason: str


@dataclass(frozen=True)
class Command:
    doc: str  # path relative to the repository
    line: int  # where the command starts
    text: str  # continuations joined, comments dropped

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


@dataclass(frozen=True)
class Block:
    doc: str
    line: int  # the opening fence
    commands: tuple[Command, ...]
    skips: tuple[Skip, ...]
    problems: tuple[str, ...] = ()  # annotations that do not parse

    def skip_reason(self, command: Command) -> str | None:
        for skip in self.skips:
            if skip.text is None or skip.text in command.text:
                return skip.reason
        return None


def split_commands(lines: list[str], first_line: int, doc: str) -> list[Command]:
    """The commands of a shell block, as bash reads them: a newline ends a command unless it
    is escaped (``\\``) or quoted; ``#`` at the start of a word begins a comment."""
    text = "\n".join(lines) + "\n"
    commands: list[Command] = []
    current: list[str] = []
    start: int | None = None
    line, quote, i = first_line, None, 0
    while i < len(text):
        char = text[i]
        if quote is not None:
            current.append(char)
            if char == "\\" and quote == '"' and i + 1 < len(text):
                current.append(text[i + 1])
                line += text[i + 1] == "\n"
                i += 1
            elif char == quote:
                quote = None
            line += char == "\n"
        elif char == "\\" and text[i + 1:i + 2] == "\n":  # continuation
            i += 2
            line += 1
            while i < len(text) and text[i] in " \t":
                i += 1
            if current and current[-1] not in " \t":
                current.append(" ")
            continue
        elif char == "\\":
            current.append(text[i:i + 2])
            i += 1
        elif char in "'\"":
            quote = char
            current.append(char)
        elif char == "#" and (not current or current[-1] in " \t"):
            while text[i] != "\n":
                i += 1
            continue
        elif char == "\n":
            command = "".join(current).strip()
            if command:
                assert start is not None
                commands.append(Command(doc, start, command))
            current, start = [], None
            line += 1
        else:
            if start is None and not char.isspace():
                start = line
            current.append(char)
        i += 1
    assert quote is None, f"{doc}:{first_line}: unterminated quote in a shell block"
    return commands


def parse_doc(path: Path) -> tuple[list[Block], list[str]]:
    """The shell blocks of a markdown file, and the ``docs-test`` comments not directly above
    one (as problems)."""
    doc = str(path.relative_to(REPO))
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    attached: set[int] = set()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if CLOSE.match(lines[j])), None)
        assert end is not None, f"{doc}:{i + 1}: unclosed code fence"
        if opening["lang"] in SHELL:
            indent = len(opening["indent"])
            body = [text[indent:] if text[:indent].isspace() else text.lstrip()
                    for text in lines[i + 1:end]]
            skips, problems = [], []
            j = i - 1
            while j >= 0 and (match := ANNOTATION.match(lines[j])):
                attached.add(j)
                skip = SKIP.match(match["body"])
                if skip and skip["reason"].strip():
                    skips.append(Skip(j + 1, skip["text"], skip["reason"].strip()))
                else:
                    problems.append(f"{doc}:{j + 1}: not `skip (REASON)` or "
                                    f"`skip `TEXT` (REASON)`: {lines[j].strip()}")
                j -= 1
            blocks.append(Block(doc, i + 1, tuple(split_commands(body, i + 2, doc)),
                                tuple(reversed(skips)), tuple(problems)))
        i = end + 1
    orphans = [f"{doc}:{n + 1}: a docs-test comment must sit on the line before a shell block"
               for n, text in enumerate(lines) if "docs-test:" in text and n not in attached]
    return blocks, orphans


def all_blocks() -> list[Block]:
    return [block for path in DOCS for block in parse_doc(path)[0]]


# --- bounded variants ------------------------------------------------------------------------

# Two steps of the config's run with tiny batches and crops, validated once, at the end.
TRAIN_BOUND = ("--no-progress --set steps=2 --set data.batch_size=2 --set data.crop=64 "
               "--set data.workers=0 --set data.val_samples=2 --set data.val_crop=64 "
               "--set val_interval=2 --set checkpoint_interval=2 --set log_interval=1 "
               "--set val_images=1 --set scene.batch_size=1 --set scene.side=64")
# A paired source (LOL in lite_v4) is scored on its whole validation split at each validation:
# more than a minute on 2 busy cores. The bounded run reads it from a small folder of pairs
# named as LOL's (1-2 in its validation split, 21-24 in its training split).
PAIRED_SAMPLE = "paired_sample"
# `mrvae eval` on a whole test set of ../shared: its first image, at most 160 pixels long.
EVAL_BOUND = "--limit 1 --max-side 160"


@dataclass(frozen=True)
class Rule:
    """How a command matching ``pattern`` runs, if not verbatim, and its marks."""

    name: str
    pattern: re.Pattern[str]
    why: str
    run: Callable[[BlockRun, Command], None] | None = None  # None: verbatim
    shared: bool = False  # reads ../shared without naming it
    slow: bool = False


def _train(session: BlockRun, command: Command) -> None:
    import yaml

    bound = TRAIN_BOUND
    config = re.search(r"--config (\S+)", command.text)
    assert config is not None
    sources = (yaml.safe_load((session.cwd / config[1]).read_text())["data"]
               .get("sources", []))
    if any(source["kind"] == "paired" for source in sources):
        if not (session.cwd / PAIRED_SAMPLE).is_dir():
            _pairs(session.cwd / PAIRED_SAMPLE, (1, 2, 21, 22, 23, 24), 128)
        sources = [{**source, "root": PAIRED_SAMPLE} if source["kind"] == "paired" else source
                   for source in sources]
        bound += f" --set 'data.sources={json.dumps(sources)}'"
    session.shell(command, f"{command.text} {bound}")


def _eval_limited(session: BlockRun, command: Command) -> None:
    session.shell(command, f"{command.text} {EVAL_BOUND}")


def _ablation(session: BlockRun, command: Command) -> None:
    text = command.text.replace("configs/ablation/*.yaml", "configs/ablation/base.yaml")
    text = re.sub(r"--steps \d+", "--steps 1", text)
    assert text != command.text, "the ablation variant changed nothing"
    session.shell(command, f"{text} {EVAL_BOUND}")


def _fit_niqe(session: BlockRun, command: Command) -> None:
    session.shell(command, f"{command.text} --out niqe_pristine.npz")
    assert (session.cwd / "niqe_pristine.npz").stat().st_size > 1000


def _after_setup(session: BlockRun, command: Command) -> None:
    session.shell(command, command.text.split("&&", 1)[1].strip())


def _serve(session: BlockRun, command: Command) -> None:
    port = session.start_server(command, command.text)
    session.stop(f"serve:{port}")


def _with_server(session: BlockRun, command: Command) -> None:
    port = session.start_server(command, "mrvae serve")
    session.shell(command, command.text.replace("127.0.0.1:8000", f"127.0.0.1:{port}"))
    if match := re.search(r"\s-o\s+(\S+)", command.text):
        head = (session.cwd / match[1]).read_bytes()[:4]
        assert head[:2] == b"\xff\xd8" or head == b"\x89PNG", f"{match[1]}: not an image"


def _ray_head(session: BlockRun, command: Command) -> None:
    for option in ("--port", "--ray-client-server-port"):
        if match := re.search(rf"{option}[ =](\d+)", command.text):
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", int(match[1])))
                except OSError:
                    pytest.fail(f"port {match[1]} ({option}) is taken on this machine: "
                                f"another Ray head?")
    session.start(command, "ray", f"exec {command.text} --block", "Ray runtime started")


def _ray_stop(session: BlockRun, command: Command) -> None:
    assert "ray" in session.background, "`ray stop` without a `ray start --head` before it"
    session.stop("ray")


RULES = [
    Rule("setup", re.compile(r"^bash scripts/setup\.sh && "),
         "scripts/setup.sh installs packages (pip, apt-get): this environment is the one it "
         "made (.ci/run runs it first); the command after it runs", _after_setup),
    Rule("train", re.compile(r"^(mrvae|torchrun .*-m mrvae) train --config "),
         f"a training run of minutes to hours: 2 steps with `{TRAIN_BOUND}`, paired sources "
         f"read from {PAIRED_SAMPLE}/", _train, shared=True, slow=True),
    Rule("resume", re.compile(r"^mrvae train --resume "),
         "continues the run above (bounded there): verbatim", shared=True, slow=True),
    Rule("ablation", re.compile(r"^mrvae eval --ablation "),
         f"trains 9 variants for 500 steps each: base.yaml alone, 1 step, {EVAL_BOUND}",
         _ablation, shared=True, slow=True),
    Rule("eval", re.compile(r"^mrvae eval .*\.\./shared/"),
         f"scores every method on a whole test set (minutes): {EVAL_BOUND}", _eval_limited,
         slow=True),
    Rule("fit_niqe", re.compile(r"^python scripts/fit_niqe\.py"),
         "rewrites the shipped NIQE model in src/: --out niqe_pristine.npz here instead",
         _fit_niqe, shared=True, slow=True),
    Rule("serve", re.compile(r"^mrvae serve\b"),
         "serves until stopped: started on a free port, GET /api/health, stopped", _serve),
    Rule("server", re.compile(r"http://127\.0\.0\.1:8000/"),
         "talks to `mrvae serve`: one started on a free port for it", _with_server),
    Rule("ray head", re.compile(r"^ray start --head .*--node-ip-address 127\.0\.0\.1"),
         "starts Ray's daemons: run with --block in the background, so that the block's "
         "`ray stop` can end them alone", _ray_head, slow=True),
    Rule("ray stop", re.compile(r"^ray stop$"),
         "stops every Ray instance of the machine (other tests' too): ends the "
         "`ray start --head --block` above instead", _ray_stop, slow=True),
    Rule("ray", re.compile(r"--engine ray"), "starts Ray workers: verbatim", slow=True),
]


def rule_of(command: Command) -> Rule | None:
    return next((rule for rule in RULES if rule.pattern.search(command.text)), None)


def needs_shared(command: Command) -> bool:
    rule = rule_of(command)
    return "../shared" in command.text or (rule is not None and rule.shared)


# --- placeholder inputs ----------------------------------------------------------------------


def _photo(name: str = "astronaut", width: int = 96, level: float = 0.25) -> np.ndarray:
    """A small photo from scikit-image's samples, float32 in [0, 1], darkened by ``level``."""
    import cv2
    from skimage import data

    image = getattr(data, name)()
    height = round(image.shape[0] * width / image.shape[1]) // 2 * 2
    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image / 255.0 * level, dtype=np.float32)


def _write(path: Path, pixels: np.ndarray, **options: int) -> None:
    from mrvae.io.encode import write_image

    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, pixels, **options)


def _dng(path: Path, name: str = "chelsea") -> None:
    from mrvae.io import raw

    linear = raw.srgb_to_linear(_photo(name, 96, 1.0)) * 2.0**-4  # 4 stops under
    sensor = raw.Sensor()
    mosaic = raw.capture(linear, sensor, np.random.default_rng(0))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw.encode_dng(mosaic, sensor, make="DocsCam", model="D1",
                                    exposure_time=1 / 30, iso=3200))


def _clip(path: Path, frames: int = 6, audio: bool = False) -> None:
    """A dark H.264 clip of 64 x 48 pixels at 25 frames/s, with an AAC tone if ``audio``."""
    import av

    pixels = (_photo("astronaut", 64) * 255).astype(np.uint8)[:48]
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=25)
        video.height, video.width = pixels.shape[:2]
        video.pix_fmt = "yuv420p"
        sound = container.add_stream("aac", rate=8000) if audio else None
        if sound is not None:
            sound.layout = "mono"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.roll(pixels, i, axis=1), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if sound is not None:
            tone = (np.sin(np.arange(frames * 320) / 5) * 8000).astype(np.int16)[None]
            chunk = av.AudioFrame.from_ndarray(tone, format="s16", layout="mono")
            chunk.sample_rate, chunk.pts = 8000, 0
            container.mux(sound.encode(chunk))
            container.mux(sound.encode(None))


def _weights(path: Path) -> None:
    """An untrained ``tiny`` model: a stand-in for a user's trained weights."""
    import torch

    from mrvae.nn.model import create_model, save_pretrained

    torch.manual_seed(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_pretrained(create_model("tiny").eval(), path, {"preset": "tiny", "version": "docs"})


def _tree(path: Path, names: dict[str, str]) -> None:
    """Dark photos (and RAW, video) under ``path``, by relative name -> sample image."""
    for relative, sample in names.items():
        target = path / relative
        if target.suffix == ".dng":
            _dng(target, sample)
        elif target.suffix in {".mp4", ".mkv", ".mov"}:
            _clip(target)
        else:
            _write(target, _photo(sample), **({"bit_depth": 16} if target.suffix == ".tif"
                                              else {}))


def _pairs(path: Path, numbers: tuple[int, ...] = (1, 2, 3), width: int = 96) -> None:
    """A paired folder in LOL's layout: low/ and high/ with the same names."""
    samples = ("astronaut", "chelsea", "coffee", "rocket")
    for i, number in enumerate(numbers):
        sample = samples[i % len(samples)]
        _write(path / "high" / f"{number}.png", _photo(sample, width, 1.0))
        _write(path / "low" / f"{number}.png", _photo(sample, width, 0.15))


# Inputs the docs name, made when a block's commands name them (relative to its directory).
PLACEHOLDERS: dict[str, Callable[[Path], None]] = {
    "photo.jpg": lambda p: _write(p, _photo("astronaut")),
    "night.jpg": lambda p: _write(p, _photo("coffee")),
    "dark.jpg": lambda p: _write(p, _photo("chelsea")),
    "IMG_0042.heic": lambda p: _write(p, _photo("rocket")),
    "night.dng": _dng,
    "shots/": lambda p: _tree(p, {"a.jpg": "astronaut", "b.png": "coffee",
                                  "sub/c.jpg": "chelsea", "sub/d.dng": "rocket"}),
    "trip/": lambda p: _tree(p, {"a.tif": "astronaut", "b.tif": "chelsea"}),
    "raw_shots/": lambda p: _tree(p, {"a.dng": "astronaut", "b.dng": "chelsea"}),
    "archive/": lambda p: _tree(p, {"2019/a.jpg": "astronaut", "2019/b.png": "coffee",
                                    "2020/c.jpg": "chelsea"}),
    "photos/": lambda p: _tree(p, {"a.jpg": "astronaut", "b.png": "chelsea"}),
    "../photos": lambda p: [_write(p / f"{n}.png", _photo(n, 128, 1.0))
                            for n in ("astronaut", "coffee")],
    "clip.mp4": lambda p: _clip(p, audio=True),
    "night.mov": _clip,
    "dashcam/": lambda p: _tree(p, {"a.jpg": "coffee", "drive.mkv": "", "park.mp4": ""}),
    "LOL/eval15": _pairs,
    "runs/lite/best.safetensors": _weights,
    "path/to/weights.safetensors": _weights,
}


def _names(command: Command, name: str) -> bool:
    return re.search(rf"(?<![\w./]){re.escape(name)}(?![\w])", command.text) is not None


def lay_out(root: Path, commands: list[Command]) -> Path:
    """A working directory for ``commands`` under ``root``: ``root/repo``, with ``root/home``
    as HOME and ``root/shared`` linked to ../shared."""
    cwd = root / "repo"
    cwd.mkdir()
    for folder in ("examples", "configs", "scripts"):
        shutil.copytree(REPO / folder, cwd / folder)
    (cwd / "src").symlink_to(REPO / "src")  # configs start from src/mrvae/nn/weights/...
    if SHARED.is_dir():
        (root / "shared").symlink_to(SHARED)
    token = root / "home" / ".ray" / "auth_token"
    token.parent.mkdir(parents=True)
    token.write_text(os.urandom(32).hex())
    token.chmod(0o600)
    for name, make in PLACEHOLDERS.items():
        if any(_names(command, name) for command in commands):
            make(cwd / name.rstrip("/"))
    return cwd


# --- running a block -------------------------------------------------------------------------


def _tail(text: str, size: int = 4000) -> str:
    return text if len(text) <= size else "...\n" + text[-size:]


@dataclass
class BlockRun:
    """One block's working directory, environment, background processes and outcomes."""

    block: Block
    cwd: Path
    env: dict[str, str]
    outcomes: dict[int, str | None] = field(default_factory=dict)  # line -> None (ok) or why
    background: dict[str, tuple[subprocess.Popen[bytes], Path]] = field(default_factory=dict)

    def shell(self, command: Command, text: str) -> None:
        """Run ``text`` in bash; keep its exports for the next commands."""
        env_file = self.cwd.parent / "env.bin"
        script = f"{text}\n__status=$?\nenv -0 > {env_file}\nexit $__status\n"
        process = subprocess.Popen(["bash", "--noprofile", "--norc", "-c", script],
                                   cwd=self.cwd, env=self.env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            output, _ = process.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
            pytest.fail(f"{command.id}: still running after {TIMEOUT_S} s: {text}\n"
                        f"{_tail(output.decode(errors='replace'))}")
        text_out = output.decode(errors="replace")
        assert process.returncode == 0, (f"{command.id}: exit status {process.returncode}: "
                                         f"{text}\n{_tail(text_out)}")
        if env_file.exists():
            pairs = (item.partition("=") for item in env_file.read_bytes().decode().split("\0"))
            self.env = {key: value for key, _, value in pairs
                        if key and key not in {"_", "SHLVL", "PWD", "OLDPWD"}}
            env_file.unlink()

    def start(self, command: Command, key: str, text: str, ready: str | Callable[[], bool],
              wait_s: float = 120) -> None:
        """Start ``text`` in the background and wait until its output says ``ready`` (or the
        callable says so)."""
        log = self.cwd.parent / f"{key.replace(':', '_')}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(["bash", "--noprofile", "--norc", "-c", text],
                                       cwd=self.cwd, env=self.env, stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        self.background[key] = (process, log)
        deadline = time.monotonic() + wait_s
        while not (ready() if callable(ready) else ready in log.read_text(errors="replace")):
            if process.poll() is not None or time.monotonic() > deadline:
                self.stop(key)
                pytest.fail(f"{command.id}: {text} did not come up (exit status "
                            f"{process.returncode})\n{_tail(log.read_text(errors='replace'))}")
            time.sleep(0.3)

    def start_server(self, command: Command, text: str) -> int:
        """``mrvae serve`` (as ``text``, its port replaced by a free one) once it answers."""
        port = free_port()
        text = re.sub(r"--port[ =]\d+", "", text).strip() + f" --port {port}"
        url = f"http://127.0.0.1:{port}/api/health"

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    return answer.status == 200 and "status" in json.load(answer)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                return False

        self.start(command, f"serve:{port}", f"exec {text}", healthy)
        return port

    def stop(self, key: str) -> None:
        process, _ = self.background.pop(key)
        if process.poll() is None:
            stop_process(process)

    def close(self) -> None:
        for key in list(self.background):
            self.stop(key)

    def through(self, command: Command) -> None:
        """Run the block's commands up to ``command`` that have not run yet, in order."""
        for earlier in self.block.commands:
            if earlier.line not in self.outcomes and self.runnable(earlier):
                try:
                    execute(self, earlier)
                except (Exception, pytest.fail.Exception) as exc:
                    self.outcomes[earlier.line] = str(exc) or type(exc).__name__
                    if earlier == command:
                        raise
                else:
                    self.outcomes[earlier.line] = None
            if earlier == command:
                break
        failed = [(line, why) for line, why in self.outcomes.items() if why is not None
                  and line <= command.line]
        if failed:
            line, why = failed[-1]
            pytest.fail(why if line == command.line
                        else f"{self.block.doc}:{line}, before this command, failed:\n{why}")

    def runnable(self, command: Command) -> bool:
        return (self.block.skip_reason(command) is None
                and (SHARED.is_dir() or not needs_shared(command)))


def execute(session: BlockRun, command: Command) -> None:
    rule = rule_of(command)
    if rule is not None and rule.run is not None:
        rule.run(session, command)
    else:
        session.shell(command, command.text)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def base_env(home: Path) -> dict[str, str]:
    """This environment with a private HOME, this interpreter's scripts (mrvae, ray,
    torchrun, python) first on PATH, and no Ray settings of the test process."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    env.update(HOME=str(home), RAY_USAGE_STATS_ENABLED="0",
               PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]))
    return env


# --- the tests -------------------------------------------------------------------------------

BLOCKS = all_blocks()


def _param(block: Block, command: Command) -> pytest.param:
    rule = rule_of(command)
    marks = []
    if needs_shared(command):
        marks += [pytest.mark.shared,
                  pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared data")]
    if rule is not None and rule.slow:
        marks.append(pytest.mark.slow)
    return pytest.param(block, command, marks=marks, id=command.id)


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[Block, BlockRun]]:
    runs: dict[Block, BlockRun] = {}
    yield runs
    for session in runs.values():
        session.close()


def _params() -> list[pytest.param]:
    """A test per command; one per block for a block skipped as a whole (its fence's line)."""
    params = []
    for block in BLOCKS:
        if any(skip.text is None for skip in block.skips):
            whole = Command(block.doc, block.line, f"({len(block.commands)} commands)")
            params.append(pytest.param(block, whole, id=whole.id))
        else:
            params += [_param(block, command) for command in block.commands]
    return params


@pytest.mark.parametrize("block, command", _params())
def test_command(block: Block, command: Command, sessions: dict[Block, BlockRun],
                 tmp_path_factory: pytest.TempPathFactory) -> None:
    reason = block.skip_reason(command)
    if reason is not None:
        pytest.skip(f"marked in {block.doc}: {reason}")
    if block not in sessions:
        root = tmp_path_factory.mktemp(re.sub(r"\W", "_", f"{block.doc}_{block.line}_"))
        runnable = [c for c in block.commands if block.skip_reason(c) is None]
        sessions[block] = BlockRun(block, lay_out(root, runnable), base_env(root / "home"))
    session = sessions[block]
    session.through(command)
    if not any(session.runnable(c) for c in block.commands if c.line > command.line):
        session.close()  # the block's last command: its background processes end


def test_docs_have_shell_blocks() -> None:
    """The parser finds the docs' commands (a change of fence style would hide them all)."""
    commands = [command for block in BLOCKS for command in block.commands]
    assert {block.doc for block in BLOCKS} >= {"README.md", "docs/CLUSTER.md",
                                               "docs/EVALUATION.md", "docs/WEB.md"}
    assert len(commands) > 60
    assert any(c.text.startswith("mrvae enhance clip.mp4 -o clip_bright.mp4") for c in commands)


def test_skips_are_well_formed_and_used() -> None:
    """Every ``docs-test`` comment is a skip with a reason, directly above a shell block, and
    covers at least one of its commands."""
    problems = []
    for path in DOCS:
        blocks, orphans = parse_doc(path)
        problems += orphans
        for block in blocks:
            problems += block.problems
            for skip in block.skips:
                if not any(skip.text is None or skip.text in c.text for c in block.commands):
                    problems.append(f"{block.doc}:{skip.line}: `{skip.text}` is in no command "
                                    f"of the block below")
    assert not problems, "\n".join(problems)


def test_every_rule_is_used() -> None:
    """Each bounded variant applies to a command still in the docs (else it is stale)."""
    runnable = [c for b in BLOCKS for c in b.commands if b.skip_reason(c) is None]
    unused = [rule.name for rule in RULES if not any(rule_of(c) == rule for c in runnable)]
    assert not unused, f"rules matching no command of the docs: {unused}"


def test_every_placeholder_is_named() -> None:
    runnable = [c for b in BLOCKS for c in b.commands if b.skip_reason(c) is None]
    unused = [name for name in PLACEHOLDERS if not any(_names(c, name) for c in runnable)]
    assert not unused, f"placeholder inputs no command names: {unused}"


def test_split_commands() -> None:
    block = ["mrvae eval --data x \\", "    --out 'a # b' \\",
             "    --grid 2   # a comment \\ not a continuation", "", "# a comment line",
             'python -c "print(1)  # inside quotes" && echo \\#', "ray stop"]
    commands = split_commands(block, 10, "X.md")
    assert [(c.line, c.text) for c in commands] == [
        (10, "mrvae eval --data x --out 'a # b' --grid 2"),
        (15, 'python -c "print(1)  # inside quotes" && echo \\#'),
        (16, "ray stop")]
    assert dataclasses.replace(commands[2], line=3).id == "X.md:3"
