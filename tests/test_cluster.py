"""`mrvae enhance --engine ray`: the local engine's outputs from Ray workers, resumable, with a
manifest, past bad files and dying workers. One local Ray instance (2 CPUs) serves the module,
after the tests that join a cluster started with `ray start --head` (one Ray at a time)."""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from conftest import stop_process
from test_cli_enhance import run  # `mrvae enhance` with the test model

from mrvae.engine.backends import TorchBackend
from mrvae.engine.cluster import (
    LOCAL_OBJECT_STORE_BYTES,
    MANIFEST_NAME,
    RAY_MISSING,
    TOKEN_HINT,
    ClusterConfig,
    ClusterError,
    run_cluster,
    worker_count,
)
from mrvae.engine.jobs import plan_jobs
from mrvae.io.encode import write_image
from mrvae.nn.model import load


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[ModuleType]:
    """A local Ray instance for the whole module; the CLI and run_cluster join it as it is."""
    ray = pytest.importorskip("ray")
    with pytest.MonkeyPatch.context() as env:
        # Ray (>= 2.59) turns token authentication on for a local instance (setting
        # RAY_AUTH_MODE) and saves a new token in ~/.ray unless it finds one: this one.
        env.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
        env.delenv("RAY_AUTH_MODE", raising=False)
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 object_store_memory=LOCAL_OBJECT_STORE_BYTES, logging_level=logging.ERROR)
        # The test backends below travel to the workers by value: they cannot import this
        # module.
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
        yield ray
        ray.shutdown()


@pytest.fixture()
def folder(tmp_path: Path, astronaut: np.ndarray) -> Path:
    """in/a.png, in/b.jpg, in/sub/c.png (16-bit), in/sub/d.png: small dark photos of two sizes."""
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    photo = np.ascontiguousarray(astronaut / 255.0 * 0.3, dtype=np.float32)
    write_image(root / "a.png", photo[:48, :64])
    write_image(root / "b.jpg", photo[:48, :64])
    write_image(root / "sub" / "c.png", photo[:40, :56], bit_depth=16)
    write_image(root / "sub" / "d.png", photo[8:72, 16:112])
    return root


def files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` but the manifest, by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != MANIFEST_NAME}


def manifest(path: Path) -> dict[str, dict]:
    """The manifest's records by input name."""
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return {Path(r["source"]).name: r for r in records}


# --- joining a running cluster: `ray start --head` with token authentication -----------------
# First in the module: the module's own Ray instance starts with the first test that asks for it.

# Ray keeps a cluster on 127.0.0.1 (every port on loopback) only with this set, on the head and
# on the machine that joins it; else it puts the machine's network address in place of 127.0.0.1.
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


@dataclass(frozen=True)
class Head:
    """A head node running in the background: its address, token and session logs."""

    address: str
    token: str
    logs: Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ray_env(**values: str) -> dict[str, str]:
    """This environment without Ray's settings (a local `ray.init` sets RAY_AUTH_MODE), plus
    ``values``."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_")},
            "RAY_USAGE_STATS_ENABLED": "0", **values}


@pytest.fixture(scope="class")
def head() -> Iterator[Head]:
    """A one-node cluster of 2 CPUs on 127.0.0.1 with token authentication (the token in a
    file), stopped at the end: `ray start --block` stops the node's processes when terminated
    (`ray stop` would stop every Ray on the machine)."""
    pytest.importorskip("ray")
    # Not under tmp_path: Ray's socket paths, below its temp dir, must fit in 107 bytes.
    with tempfile.TemporaryDirectory(prefix="mrvae-ray-") as tmp:
        token, token_file, log = secrets.token_hex(32), Path(tmp) / "token", Path(tmp) / "head.log"
        token_file.write_text(token)
        token_file.chmod(0o600)
        port = free_port()
        command = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
                   "--node-ip-address=127.0.0.1", f"--port={port}",
                   f"--ray-client-server-port={free_port()}", "--num-cpus=2",
                   "--include-dashboard=false", "--disable-usage-stats",
                   f"--object-store-memory={LOCAL_OBJECT_STORE_BYTES}", f"--temp-dir={tmp}/ray"]
        env = ray_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file), **LOOPBACK)
        with log.open("w") as out:
            process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while "Ray runtime started" not in log.read_text():
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            yield Head(f"127.0.0.1:{port}", token, Path(tmp, "ray", "session_latest", "logs"))
        finally:
            stop_process(process)


def enhance(env: dict[str, str], weights: Path, *args: str | Path
            ) -> tuple[subprocess.CompletedProcess[str], int]:
    """`python -m mrvae enhance` with the test model in a process of its own (Ray reads its
    token settings once per process); the result and the process id."""
    command = [sys.executable, "-m", "mrvae", "enhance", "--model", str(weights), "--device",
               "cpu", "--no-progress", *map(str, args)]
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as process:
        output, _ = process.communicate(timeout=300)
    return subprocess.CompletedProcess(command, process.returncode, output), process.pid


class TestJoiningARunningCluster:
    """The tests that use the head, which stops after them."""

    def test_a_job_joins_it_with_its_token(self, head: Head, tiny_weights: Path, folder: Path,
                                           tmp_path: Path) -> None:
        code, output = run(tiny_weights, folder, "-r", "-o", tmp_path / "local")
        assert code == 0, output
        env = ray_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=head.token, **LOOPBACK)
        result, pid = enhance(env, tiny_weights, folder, "-r", "-o", tmp_path / "ray",
                              "--engine", "ray", "--address", head.address)
        assert result.returncode == 0, result.stdout
        assert "done 4, skipped 0, failed 0" in result.stdout
        assert files(tmp_path / "ray") == files(tmp_path / "local")  # byte for byte
        records = manifest(tmp_path / "ray" / MANIFEST_NAME)
        assert len(records) == 4 and {r["status"] for r in records.values()} == {"done"}
        # The job ran on the head: its driver and its two workers (the head's 2 CPUs) left
        # their logs in the head's session, not in a Ray instance of their own.
        assert list(head.logs.glob(f"python-core-driver-*_{pid}.log"))
        workers = [log for log in head.logs.glob("worker-*.out")
                   if ":actor_name:EnhanceWorker" in log.read_text()]
        assert len(workers) == 2

    @pytest.mark.parametrize("mode, token, reason", [
        # the head's token without RAY_AUTH_MODE=token: Ray does not send it
        (None, "the head's", "Failed to connect to Ray cluster"),
        ("token", "0" * 64, "Failed to connect to Ray cluster"),
        ("token", None, "no authentication token was found"),
    ], ids=["mode-unset", "wrong-token", "no-token"])
    def test_a_refused_job_is_one_line_in_seconds(self, head: Head, tiny_weights: Path,
                                                  folder: Path, tmp_path: Path, mode: str | None,
                                                  token: str | None, reason: str) -> None:
        auth = {"RAY_AUTH_MODE": mode} if mode else {}
        if token:
            auth["RAY_AUTH_TOKEN"] = head.token if token == "the head's" else token
        env = ray_env(HOME=str(tmp_path), **auth, **LOOPBACK)  # no ~/.ray/auth_token
        started = time.monotonic()
        result, _ = enhance(env, tiny_weights, folder, "-o", tmp_path / "out", "--engine", "ray",
                            "--address", head.address)
        assert time.monotonic() - started < 30  # seconds (Ray alone tries for 20)
        assert result.returncode == 1
        # Ray logs each refused try itself; mrvae adds one line.
        [error] = [line for line in result.stdout.splitlines() if line.startswith("error:")]
        assert error.startswith(f"error: cannot join the Ray cluster at {head.address} (")
        assert reason in error and error.endswith(f"; {TOKEN_HINT}")
        assert files(tmp_path / "out") == {}  # no output, an empty manifest at most


def test_a_cluster_that_does_not_answer_is_one_line_in_seconds(tiny_weights: Path, folder: Path,
                                                               tmp_path: Path) -> None:
    pytest.importorskip("ray")
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    result, _ = enhance(ray_env(**LOOPBACK), tiny_weights, folder, "-o", tmp_path / "out",
                        "--engine", "ray", "--address", address)
    assert time.monotonic() - started < 30  # seconds (Ray alone waits minutes)
    assert result.returncode == 1
    assert result.stdout.strip().splitlines() == [
        f"error: cannot join the Ray cluster at {address} (nothing answers at {address}: "
        "Connection refused)"]
    assert files(tmp_path / "out") == {}  # no output, an empty manifest at most


# --- same outputs as the local engine, resumable ----------------------------------------------


def test_ray_engine_writes_what_the_local_engine_writes(ray_instance: ModuleType,
                                                       tiny_weights: Path, folder: Path,
                                                       tmp_path: Path) -> None:
    code, output = run(tiny_weights, folder, "-r", "-o", tmp_path / "local")
    assert code == 0, output
    code, output = run(tiny_weights, folder, "-r", "-o", tmp_path / "ray", "--engine", "ray",
                       "--workers", "2")
    assert code == 0, output
    assert "done 4, skipped 0, failed 0" in output and "images/s" in output
    local, ray_out = files(tmp_path / "local"), files(tmp_path / "ray")
    assert sorted(local) == ["a_enhanced.png", "b_enhanced.jpg", "sub/c_enhanced.png",
                             "sub/d_enhanced.png"]
    assert ray_out == local  # byte for byte, 16-bit and JPEG included
    records = manifest(tmp_path / "ray" / MANIFEST_NAME)
    assert {name: r["status"] for name, r in records.items()} == dict.fromkeys(
        ["a.png", "b.jpg", "c.png", "d.png"], "done")
    assert records["c.png"]["output"] == str(tmp_path / "ray" / "sub" / "c_enhanced.png")


def test_a_rerun_skips_every_finished_file_and_says_so(ray_instance: ModuleType,
                                                      tiny_weights: Path, folder: Path,
                                                      tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run(tiny_weights, folder, "-r", "-o", out, "--engine", "ray")[0] == 0
    (out / "sub" / "d_enhanced.png").unlink()  # an interrupted run: one file left to do
    first = files(out)
    code, output = run(tiny_weights, folder, "-r", "-o", out, "--engine", "ray")
    assert code == 0, output
    assert "done 1, skipped 3, failed 0" in output
    assert {k: v for k, v in files(out).items() if k in first} == first  # untouched
    code, output = run(tiny_weights, folder, "-r", "-o", out, "--engine", "ray")
    assert code == 0 and "done 0, skipped 4, failed 0" in output
    records = manifest(out / MANIFEST_NAME)
    assert {r["status"] for r in records.values()} == {"skipped"}
    assert all("output exists" in r["message"] for r in records.values())


# --- bad files and dying workers --------------------------------------------------------------


def test_a_bad_file_fails_alone_and_is_listed(ray_instance: ModuleType, tiny_weights: Path,
                                              folder: Path, tmp_path: Path) -> None:
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "empty.jpg").write_bytes(b"")
    out = tmp_path / "out"
    code, output = run(tiny_weights, folder, "-r", "-o", out, "--engine", "ray")
    assert code == 1
    assert "done 4, skipped 0, failed 2" in output
    assert sorted(files(out)) == ["a_enhanced.png", "b_enhanced.jpg", "sub/c_enhanced.png",
                                  "sub/d_enhanced.png"]
    records = manifest(out / MANIFEST_NAME)
    assert records["broken.png"]["status"] == records["empty.jpg"]["status"] == "failed"
    assert "broken.png" in records["broken.png"]["message"]
    assert "empty.jpg" in records["empty.jpg"]["message"]


class CrashingBackend:
    """Kills its worker process in the global pass: once (leaving ``marker``), or for every image
    ``width`` pixels wide. Small to send: the model is loaded in the worker, on first use."""

    def __init__(self, weights: Path, marker: Path | None = None, width: int | None = None
                 ) -> None:
        self.weights, self.marker, self.width = weights, marker, width
        self.device = torch.device("cpu")
        self.torch: TorchBackend | None = None

    def _backend(self) -> TorchBackend:
        if self.torch is None:
            self.torch = TorchBackend(load(self.weights), "cpu")
        return self.torch

    def global_image(self, x_small: torch.Tensor) -> torch.Tensor:
        if self.marker is not None and not self.marker.exists():
            self.marker.touch()
            os._exit(1)
        if x_small.shape[-1] == self.width:
            os._exit(1)
        return self._backend().global_image(x_small)

    def detail(self, x_tile: torch.Tensor, gr_tile: torch.Tensor) -> torch.Tensor:
        return self._backend().detail(x_tile, gr_tile)


def test_a_worker_that_dies_has_its_files_done_again(ray_instance: ModuleType,
                                                     tiny_weights: Path, folder: Path,
                                                     tmp_path: Path) -> None:
    code, _ = run(tiny_weights, folder, "-r", "-o", tmp_path / "local")
    assert code == 0
    jobs, _ = plan_jobs([str(folder)], tmp_path / "ray", recursive=True)
    marker = tmp_path / "crashed"
    backend = CrashingBackend(tiny_weights, marker=marker)
    results = list(run_cluster(jobs, tiny_weights, {"device": "cpu", "backend": backend},
                               ClusterConfig(workers=1)))
    assert marker.exists()  # the worker did die
    assert sorted(r.source for r in results) == sorted(str(job.src) for job in jobs)
    assert {r.status for r in results} == {"done"}
    assert files(tmp_path / "ray") == files(tmp_path / "local")  # nothing half-written


def test_a_file_that_keeps_killing_its_worker_fails_alone(ray_instance: ModuleType,
                                                          tiny_weights: Path, folder: Path,
                                                          tmp_path: Path) -> None:
    jobs, _ = plan_jobs([str(folder)], tmp_path / "out", recursive=True)
    backend = CrashingBackend(tiny_weights, width=56)  # sub/c.png, with sub/d.png after it
    results = {Path(r.source).name: r for r in run_cluster(
        jobs, tiny_weights, {"device": "cpu", "backend": backend},
        ClusterConfig(workers=1, task_retries=1))}
    assert results["c.png"].status == "failed"
    assert "worker died" in results["c.png"].message and "2 tries" in results["c.png"].message
    assert [results[name].status for name in ("a.png", "b.jpg", "d.png")] == ["done"] * 3
    assert sorted(files(tmp_path / "out")) == ["a_enhanced.png", "b_enhanced.jpg",
                                               "sub/d_enhanced.png"]


# --- clear lines for what cannot run -----------------------------------------------------------


def test_weights_the_workers_cannot_load_are_one_line(ray_instance: ModuleType, folder: Path,
                                                      tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not weights")
    code, output = run(bad, folder, "-o", tmp_path / "out", "--engine", "ray")
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 1 and "bad.safetensors" in errors[0]
    assert not list((tmp_path / "out").glob("*.png"))


def test_more_workers_than_the_cluster_holds_is_one_line(ray_instance: ModuleType,
                                                         tiny_weights: Path, folder: Path,
                                                         tmp_path: Path) -> None:
    code, output = run(tiny_weights, folder, "-o", tmp_path / "out", "--engine", "ray",
                       "--worker-cpus", "3")
    assert code == 1 and "do not fit the Ray cluster (2 CPU, 0 GPU)" in output


def test_without_ray_the_engine_says_how_to_install_it(tiny_weights: Path, folder: Path,
                                                       tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    code, output = run(tiny_weights, folder, "-o", tmp_path / "out", "--engine", "ray")
    assert code == 1
    assert output.strip().splitlines() == [f"error: {RAY_MISSING}"]
    assert 'pip install "mrvae[cluster]"' in output


def test_a_manifest_that_cannot_be_written_is_one_line(tiny_weights: Path, folder: Path,
                                                       tmp_path: Path) -> None:
    (tmp_path / "a file").write_text("")
    code, output = run(tiny_weights, folder, "-o", tmp_path / "out",
                       "--manifest", tmp_path / "a file" / "run.jsonl")
    assert code == 1 and "run.jsonl: cannot write the manifest" in output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    (("--engine", "spark"), "unknown engine 'spark'"),
    (("--workers", "2"), "--address and --workers go with --engine ray"),
    (("--address", "auto"), "--address and --workers go with --engine ray"),
])
def test_bad_engine_options_are_one_line(tiny_weights: Path, folder: Path, tmp_path: Path,
                                         args: tuple[str, ...], message: str) -> None:
    code, output = run(tiny_weights, folder, "-o", tmp_path / "out", *args)
    assert code == 1 and message in output and not (tmp_path / "out").exists()


@pytest.mark.parametrize("config, resources, expected", [
    (ClusterConfig(), {"CPU": 8.0}, 8),
    (ClusterConfig(worker_cpus=3), {"CPU": 8.0}, 2),
    (ClusterConfig(workers=3), {"CPU": 8.0}, 3),
    (ClusterConfig(worker_gpus=1), {"CPU": 8.0, "GPU": 2.0}, 2),
    (ClusterConfig(worker_gpus=0.5), {"CPU": 8.0, "GPU": 2.0}, 4),
])
def test_worker_count(config: ClusterConfig, resources: dict[str, float], expected: int) -> None:
    assert worker_count(config, resources) == expected


@pytest.mark.parametrize("config, resources", [
    (ClusterConfig(workers=9), {"CPU": 8.0}),
    (ClusterConfig(worker_gpus=1), {"CPU": 8.0}),
    (ClusterConfig(worker_cpus=4), {"CPU": 2.0}),
])
def test_workers_that_do_not_fit_are_refused(config: ClusterConfig,
                                             resources: dict[str, float]) -> None:
    with pytest.raises(ClusterError, match="do not fit"):
        worker_count(config, resources)


# --- the manifest is the same for the local engine ---------------------------------------------


def test_local_engine_writes_a_manifest_when_asked(tiny_weights: Path, folder: Path,
                                                   tmp_path: Path) -> None:
    (folder / "broken.png").write_bytes(b"broken")
    log = tmp_path / "logs" / "run.jsonl"
    code, _ = run(tiny_weights, folder, tmp_path / "missing", "-o", tmp_path / "out",
                  "--manifest", log)
    assert code == 1
    records = manifest(log)
    assert {name: r["status"] for name, r in records.items()} == {
        "a.png": "done", "b.jpg": "done", "broken.png": "failed", "missing": "failed"}
    assert records["a.png"]["output"] == str(tmp_path / "out" / "a_enhanced.png")
    assert records["missing"]["output"] is None and "no such file" in records["missing"]["message"]
    assert not (tmp_path / "out" / MANIFEST_NAME).exists()  # only asked for with the ray engine
