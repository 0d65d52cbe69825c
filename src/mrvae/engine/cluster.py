"""Enhancing photo archives on a Ray cluster: the local batch's jobs, run by Ray actors.

Each actor (a worker process on any node of the cluster) builds one
:class:`~mrvae.engine.enhancer.Enhancer` from the job's settings when it starts -- the model is
loaded once per worker -- and runs :func:`~mrvae.engine.batch.run_job` on the files it is
handed. Every file therefore gets exactly what the local engine does: the same pixels, the same
atomic write, the same "skipped" result when its output exists (which makes a rerun resume) and
the same one-line "failed" result for a bad file. Ray restarts a worker that dies and retries
the file it was running on the restarted worker; a file that keeps killing its worker fails
alone.

The workers read the inputs and write the outputs themselves, so both must lie on a path every
node sees (e.g. NFS). Ray is an optional dependency (``pip install "mrvae[cluster]"``),
imported only when a job runs.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import ipaddress
import json
import logging
import math
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from mrvae.engine.batch import run_job
from mrvae.engine.enhancer import Enhancer
from mrvae.engine.jobs import Job, JobResult
from mrvae.nn.config import PRESETS

RAY_MISSING = 'the ray engine needs Ray; install it with: pip install "mrvae[cluster]"'
MANIFEST_NAME = "mrvae_manifest.jsonl"
# Only file names and short results travel through Ray's object store; its default size is 30%
# of the machine's memory, reserved up front.
LOCAL_OBJECT_STORE_BYTES = 100 * 1024**2
# Joining a cluster: seconds to wait for its address to answer, then Ray's tries to be let in
# (one a second; Ray's default is 20, and a RAY_gcs_server_port_wait_time_s set by the user).
JOIN_TIMEOUT_S = 5
JOIN_TRIES_VAR = "RAY_gcs_server_port_wait_time_s"
TOKEN_HINT = ("a cluster with token authentication needs RAY_AUTH_MODE=token and its token (in "
              "RAY_AUTH_TOKEN, a file named by RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token) here")


@dataclass(frozen=True)
class ClusterConfig:
    """Where the workers run and what each one gets.

    Attributes:
        address: a running Ray cluster ("HOST:6379", "auto", "ray://HOST:10001"); ``None`` starts
            a local Ray instance for the job and stops it after. A cluster with token
            authentication needs RAY_AUTH_MODE=token and its token in this process's
            environment (docs/CLUSTER.md).
        workers: worker processes (actors); ``None``: as many as the cluster's CPUs (or GPUs,
            with ``worker_gpus``) allow.
        worker_cpus: CPUs reserved for each worker; its torch thread count.
        worker_gpus: GPUs for each worker: 0 for CPU workers, 1 (or a fraction, to share one)
            with ``device="cuda"``.
        task_retries: times a file is tried again after its worker died while enhancing it.
    """

    address: str | None = None
    workers: int | None = None
    worker_cpus: float = 1.0
    worker_gpus: float = 0.0
    task_retries: int = 2


class ClusterError(RuntimeError):
    """The workers cannot start: no Ray to join or start, no room on the cluster, or a model
    they cannot load."""


def import_ray() -> ModuleType:
    """The ``ray`` module.

    Raises:
        ImportError: Ray is not installed (one line saying how to install it).
    """
    try:
        import ray
    except ImportError:
        raise ImportError(RAY_MISSING) from None
    return ray


def worker_count(config: ClusterConfig, resources: dict[str, float]) -> int:
    """Workers to start on a cluster with ``resources`` (as ``ray.cluster_resources()``).

    Raises:
        ClusterError: the workers asked for (or a single one) do not fit.
    """
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    fit = int(cpus // config.worker_cpus)
    if config.worker_gpus > 0:
        fit = min(fit, int(gpus // config.worker_gpus))
    wanted = config.workers or max(1, fit)
    if wanted > fit:
        raise ClusterError(f"{wanted} worker(s) of {config.worker_cpus:g} CPU and "
                           f"{config.worker_gpus:g} GPU do not fit the Ray cluster "
                           f"({cpus:g} CPU, {gpus:g} GPU)")
    return wanted


@contextlib.contextmanager
def ray_session(config: ClusterConfig, local_cpus: int | None = None) -> Iterator[ModuleType]:
    """Ray, connected: an existing connection is used as it is (and kept); else the cluster at
    ``config.address`` is joined, or a small local instance with ``local_cpus`` CPUs (default:
    this machine's) is started; either is disconnected (the local one stopped) at the end.

    Joining gives up within seconds: when nothing answers at the address (Ray itself would wait
    minutes), and when the cluster does not let this machine in (a missing or wrong token).
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    # Failures come back as results, so the workers' own logs are not forwarded.
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    answered = config.address is not None and _check_answers(ray, config.address)
    try:
        if config.address is None:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a private instance: no reports
            ray.init(address="local", num_cpus=local_cpus, include_dashboard=False,
                     object_store_memory=LOCAL_OBJECT_STORE_BYTES, **quiet)
        else:
            with _join_tries(JOIN_TIMEOUT_S):
                ray.init(address=config.address, **quiet)
    except (ConnectionError, RuntimeError, ray.exceptions.RayError) as exc:
        where = ("start a local Ray instance" if config.address is None
                 else f"join the Ray cluster at {config.address}")
        reason = (str(exc) or type(exc).__name__).splitlines()[0].split(". ")[0]
        # The cluster answered but refused this machine: Ray says why only in its log lines.
        hint = f"; {TOKEN_HINT}" if answered else ""
        raise ClusterError(f"cannot {where} ({reason}){hint}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _check_answers(ray: ModuleType, address: str) -> bool:
    """Whether something answers where ``ray.init(address)`` connects first (the cluster's GCS, or
    a Ray Client server for "ray://"); ``False`` when Ray finds the address itself ("auto"
    with no cluster known here: it says so).

    Ray connects to this machine's network address in place of a loopback one, unless
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (a cluster kept on this machine): that is the address
    checked, and named when nothing answers there.

    Raises:
        ClusterError: the address is malformed, or nothing answers there within
            :data:`JOIN_TIMEOUT_S` seconds.
    """
    from ray._private.services import canonicalize_bootstrap_address

    try:
        target = (address.removeprefix("ray://") if address.startswith("ray://")
                  else canonicalize_bootstrap_address(address))
        if target is None:
            return False
        host, _, port = target.rpartition(":")
        host, port_number = host.strip("[]"), int(port)
    except (ValueError, ConnectionError) as exc:
        raise ClusterError(f"cannot join the Ray cluster at {address} ({exc})") from None
    try:
        socket.create_connection((host, port_number), timeout=JOIN_TIMEOUT_S).close()
    except OSError as exc:
        given = address.removeprefix("ray://").rpartition(":")[0].strip("[]")
        moved = _loopback(given) and not _loopback(host)
        where = f", where Ray connects in place of {given}" if moved else ""
        fix = ("; a cluster kept on this machine (started with "
               "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0) needs that here too" if moved else "")
        raise ClusterError(f"cannot join the Ray cluster at {address} (nothing answers at "
                           f"{target}{where}: {exc.strerror or exc}){fix}") from None
    return True


def _loopback(host: str) -> bool:
    """Whether ``host`` names this machine's loopback interface."""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextlib.contextmanager
def _join_tries(seconds: int) -> Iterator[None]:
    """Ray's tries to join a cluster that answers but does not let this process in (a wrong
    token) limited to about ``seconds``, unless the user set them."""
    if JOIN_TRIES_VAR in os.environ:
        yield
        return
    os.environ[JOIN_TRIES_VAR] = str(seconds)
    try:
        yield
    finally:
        del os.environ[JOIN_TRIES_VAR]


class EnhanceWorker:
    """The state of one Ray actor: an :class:`Enhancer` built from the job's settings when the
    actor starts (and again when Ray restarts it), and the settings of :func:`run_job`."""

    def __init__(self, model: str, settings: dict[str, Any], run_settings: dict[str, Any],
                 threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.run_settings = run_settings
        self.enhancer: Enhancer | None = None
        self.error = ""
        try:
            self.enhancer = Enhancer(model, **settings)
        except (ValueError, ImportError, OSError) as exc:  # WeightsError is a ValueError
            self.error = str(exc)

    def ready(self) -> str:
        """"" once the model is loaded, else the one-line reason it cannot be."""
        return self.error

    def run(self, job: Job) -> JobResult:
        """Enhance one file, exactly as the local engine does."""
        return run_job(self.enhancer, job, **self.run_settings)


def _absolute(job: Job) -> Job:
    """The job with absolute paths: workers do not share the driver's working directory."""
    return Job(job.src.absolute(), job.dst.absolute(),
               job.compare.absolute() if job.compare is not None else None)


def _portable_model(model: str | Path) -> str:
    """A preset name as it is; a weights path made absolute (see :func:`_absolute`)."""
    if isinstance(model, str) and model in PRESETS:
        return model
    return str(Path(model).absolute())


def run_cluster(jobs: list[Job], model: str | Path, settings: dict[str, Any],
                config: ClusterConfig, **run_settings: Any) -> Iterator[JobResult]:
    """Run ``jobs`` on Ray workers; yield each file's result as it finishes.

    Args:
        model: a preset name or a weights path every node can read.
        settings: keyword arguments of :class:`Enhancer` (device, tile, refine, ...), passed to
            each worker as they are. They travel with every start of a worker, restarts
            included, so keep them small (names and numbers, not loaded models): Ray keeps
            large ones in its object store only until the worker first starts (Ray issue
            53727).
        run_settings: keyword arguments of :func:`run_job` (quality, overwrite, max_pixels).

    Yields:
        A :class:`JobResult` per job, in the order they finish; ``source`` is the job's own
        ``src``, as from the local engine.

    Raises:
        ImportError: Ray is not installed.
        ClusterError: Ray cannot be started or joined, or the workers do not fit the cluster or
            cannot load the model (before any file is run).
    """
    if not jobs:
        return
    local_cpus = None
    if config.workers is not None:  # a local instance holds the workers asked for
        local_cpus = max(os.cpu_count() or 1, math.ceil(config.workers * config.worker_cpus))
    with ray_session(config, local_cpus) as ray:
        count = min(len(jobs), worker_count(config, ray.cluster_resources()))
        actor = ray.remote(num_cpus=config.worker_cpus, num_gpus=config.worker_gpus,
                           max_restarts=-1, max_task_retries=config.task_retries)(EnhanceWorker)
        threads = max(1, int(config.worker_cpus))
        workers = [actor.remote(_portable_model(model), settings, run_settings, threads)
                   for _ in range(count)]
        try:
            errors = [error for error in ray.get([w.ready.remote() for w in workers]) if error]
            if errors:
                raise ClusterError(errors[0])
            yield from _dispatch(ray, workers, jobs, config.task_retries)
        finally:
            for worker in workers:
                ray.kill(worker)


def _dispatch(ray: ModuleType, workers: list[Any], jobs: list[Job], retries: int
              ) -> Iterator[JobResult]:
    """Hand the jobs to the workers, each getting the next one as it finishes one.

    A file sent to a worker that dies, or that Ray is still restarting, uses up its retries
    without being at fault: so each worker holds one file at a time, and a worker that died is
    handed nothing until it answers again (a call of ``ready``); one gone for good (Ray gave up
    restarting it) is left out, and when none is left the waiting files fail.
    """
    waiting = collections.deque(jobs)
    running: dict[Any, tuple[Any, Job | None]] = {}  # a call -> its worker and file (or ready)

    def hand_out(worker: Any) -> None:
        if waiting:
            job = waiting.popleft()
            running[worker.run.remote(_absolute(job))] = worker, job

    for worker in workers:
        hand_out(worker)
    while running:
        [done], _ = ray.wait(list(running), num_returns=1)
        worker, job = running.pop(done)
        if job is None:  # a worker that died, answering or not
            try:
                ray.get(done)
                hand_out(worker)
            except ray.exceptions.ActorDiedError:
                pass  # gone for good
            except ray.exceptions.RayActorError:  # still restarting
                running[worker.ready.remote()] = worker, None
            continue
        try:
            result = dataclasses.replace(ray.get(done), source=str(job.src))
            hand_out(worker)
        except ray.exceptions.RayActorError:  # Ray restarted the worker; the retries ran out
            result = JobResult(str(job.src), "failed", f"{job.src}: the worker died while "
                               f"enhancing it ({retries + 1} tries)")
            running[worker.ready.remote()] = worker, None
        except ray.exceptions.RayTaskError as exc:  # an error run_job does not expect
            cause = exc.cause if exc.cause is not None else exc
            reason = (str(cause) or type(cause).__name__).splitlines()[0]
            result = JobResult(str(job.src), "failed", f"{job.src}: {reason}")
            hand_out(worker)
        yield result
    for job in waiting:  # every worker is gone
        yield JobResult(str(job.src), "failed", f"{job.src}: no worker left to enhance it")


def manifest_line(result: JobResult, output: Path | None) -> str:
    """One JSON line of a run's manifest: the input, its output, what happened and why."""
    return json.dumps({"source": result.source, "output": None if output is None else str(output),
                       "status": result.status, "message": result.message,
                       "seconds": round(result.seconds, 3),
                       "megapixels": round(result.megapixels, 3)})
