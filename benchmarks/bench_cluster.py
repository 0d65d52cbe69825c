"""Throughput of ``mrvae enhance --engine ray`` against the local engine, and Ray's cost per file.

A batch of small dark photos (``--images`` of 512 to 1024 px, long side) is enhanced with the
shipped model by:

- the local engine: one image at a time with 1 torch thread, and ``--jobs 2`` (two images at a
  time, a thread each: the local equivalent of 2 workers);
- the Ray engine on a local Ray instance: 1 and 2 workers of 1 CPU each.

Ray's fixed costs are timed apart: starting the local instance (``ray.init``) and starting a
worker (a new process that imports torch and loads the model; timed as a one-file batch of a
16 x 16 image). The cost per file is the wall time per file of the 1-worker batch (less the
worker start) beyond the time :func:`mrvae.engine.batch.run_job` took inside the worker: handing the
file out and the result back. It is taken within one batch, so that the CPU time other jobs
take from it (which moves the rows by seconds on a shared machine) cancels out; the local
engine's own figure (should be about 0) is printed beside it.

    python benchmarks/bench_cluster.py [--images 16] [--model lite] [--out FILE]

Numbers from a shared machine (other jobs running) vary from run to run: compare rows of one
run, not runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
import ray
import torch

from mrvae.engine.batch import run_jobs, threads_per_job
from mrvae.engine.cluster import LOCAL_OBJECT_STORE_BYTES, ClusterConfig, run_cluster
from mrvae.engine.enhancer import Enhancer
from mrvae.engine.jobs import Job, JobResult, plan_jobs
from mrvae.io.encode import write_image


def make_photos(folder: Path, count: int, seed: int = 0) -> float:
    """``count`` dark photos of 512 to 1024 px (long side) in ``folder``; returns megapixels."""
    from skimage import data

    rng = np.random.default_rng(seed)
    sources = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    megapixels = 0.0
    for i in range(count):
        long_side = int(rng.integers(512, 1025))
        source = sources[i % len(sources)]
        scale = long_side / max(source.shape[:2])
        size = (round(source.shape[1] * scale), round(source.shape[0] * scale))
        photo = cv2.resize(source, size, interpolation=cv2.INTER_LINEAR).astype(np.float32)
        write_image(folder / f"photo_{i:02d}.png", photo * (0.2 / 255))
        megapixels += size[0] * size[1] / 1e6
    return megapixels


def timed(results_of: Iterable[JobResult]) -> tuple[float, list[JobResult]]:
    """Seconds to run a batch, and its results (all done, or an error)."""
    start = time.perf_counter()
    results = list(results_of)
    seconds = time.perf_counter() - start
    failed = [r.message for r in results if r.status != "done"]
    if failed:
        raise RuntimeError(f"benchmark files failed: {failed[:3]}")
    return seconds, results


def local_row(model: str, jobs: list[Job], threads: int, parallel: int
              ) -> tuple[float, list[JobResult]]:
    torch.set_num_threads(threads)
    enhancer = Enhancer(model, "cpu",
                        workers=threads_per_job(parallel) if parallel > 1 else None)
    return timed(run_jobs(enhancer, jobs, parallel, overwrite=True))


def ray_row(model: str, jobs: list[Job], workers: int) -> tuple[float, list[JobResult]]:
    config = ClusterConfig(workers=workers, worker_cpus=1)
    return timed(run_cluster(jobs, model, {"device": "cpu"}, config, overwrite=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--model", default="lite")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "bench_cluster.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "in").mkdir()
        megapixels = make_photos(root / "in", args.images)
        write_image(root / "tiny.png", np.full((16, 16, 3), 0.1, np.float32))
        jobs, _ = plan_jobs([str(root / "in")], root / "out")
        tiny_job, _ = plan_jobs([str(root / "tiny.png")], root / "tiny_out")
        print(f"{args.images} images, {megapixels:.1f} MP, model {args.model}, "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")

        rows = []

        def add(engine: str, workers: int, threads: int, run: tuple[float, list]) -> None:
            seconds, results = run
            rows.append({"engine": engine, "workers": workers, "threads_per_worker": threads,
                         "seconds": seconds, "images_per_s": len(results) / seconds,
                         "mp_per_s": megapixels / seconds,
                         "worker_seconds_per_image": sum(r.seconds for r in results)
                         / len(results)})
            print(f"  {engine:<14} {workers} x {threads} thread(s): {seconds:6.1f} s")

        add("local", 1, 1, local_row(args.model, jobs, 1, 1))
        add("local --jobs", 2, 1, local_row(args.model, jobs, 2, 2))
        start = time.perf_counter()
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 object_store_memory=LOCAL_OBJECT_STORE_BYTES, logging_level=logging.ERROR)
        ray_start = time.perf_counter() - start
        try:
            worker_start = ray_row(args.model, tiny_job, 1)[0]
            add("ray", 1, 1, ray_row(args.model, jobs, 1))
            add("ray", 2, 1, ray_row(args.model, jobs, 2))
        finally:
            ray.shutdown()

    def cost_per_file(row: dict, start: float = 0.0) -> float:
        return (row["seconds"] - start) / args.images - row["worker_seconds_per_image"]

    overhead = cost_per_file(rows[2], worker_start)  # ray, 1 worker
    local_overhead = cost_per_file(rows[0])
    header = (f"{'engine':<14}{'workers':>8}{'threads':>8}{'seconds':>9}{'images/s':>10}"
              f"{'MP/s':>7}{'s/image in worker':>19}")
    print()
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{row['engine']:<14}{row['workers']:>8}{row['threads_per_worker']:>8}"
              f"{row['seconds']:>9.1f}{row['images_per_s']:>10.2f}{row['mp_per_s']:>7.2f}"
              f"{row['worker_seconds_per_image']:>19.2f}")
    print(f"\nRay start (local instance): {ray_start:.1f} s; worker start (process, torch, "
          f"model): {worker_start:.1f} s; cost per file: Ray {overhead * 1000:.0f} ms, "
          f"local engine {local_overhead * 1000:.0f} ms")
    print("(a shared machine: other jobs use the same CPUs, so compare rows, not runs)")
    report = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "shared_machine": True,
              "note": "measured on a shared 2-CPU machine with a training job running; "
                      "numbers vary from run to run",
              "load_average": os.getloadavg(), "model": args.model, "images": args.images,
              "megapixels": megapixels, "ray_version": ray.__version__,
              "ray_start_seconds": ray_start, "worker_start_seconds": worker_start,
              "overhead_per_file_seconds": overhead,
              "local_overhead_per_file_seconds": local_overhead, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
