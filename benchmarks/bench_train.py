"""Training throughput (images/s) of each model preset, crop size, number of DDP processes and
precision (``amp``: mixed precision, bfloat16 on CPUs that compute it natively, against float32).

Every row is a real ``mrvae train`` run (the whole pipeline: synthetic pairs made on the fly by
the data workers, forward, multi-term loss, backward, Adam) on a fresh run directory; one
process runs it directly, N processes run it under ``torchrun --nproc_per_node N`` with gloo (CPU)
or nccl (GPU) and ``data.batch_size`` per process. Images/s is read from the run's ``log.jsonl``
(one record per step), skipping the first ``--warmup`` steps (process start, caches, allocator).

    python benchmarks/bench_train.py [--presets tiny,lite,paper] [--crops 128,256]
                                     [--processes 1,2] [--workers 1] [--amp on,off]
                                     [--threads 0] [--batch 4]
                                     [--steps 6] [--warmup 2] [--data FOLDER] [--device cpu]
                                     [--out FILE]

Without ``--data`` the photos are a few scikit-image samples written to a temporary folder, so
the benchmark runs anywhere. CPU threads per process: ``--threads``, 0 = ``cores / processes``
(the training default). On a busy machine OpenMP threads that spin-wait for each other can make
two threads many times slower than one: compare with ``--threads 1``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml


def sample_photos(folder: Path) -> Path:
    """24 natural photos: six scikit-image samples, each also flipped and rotated."""
    import cv2
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "cat"):
        image = getattr(data, name)()[:, :, ::-1]
        variants = (image, image[:, ::-1], image[::-1], image.transpose(1, 0, 2))
        for index, variant in enumerate(variants):
            cv2.imwrite(str(folder / f"{name}{index}.png"), variant)
    return folder


def run_config(preset: str, crop: int, batch: int, workers: int, steps: int, data: Path,
               run_dir: Path, device: str, threads: int, amp: bool) -> dict:
    return {
        "model": {"preset": preset},
        "data": {"roots": [str(data)], "crop": crop, "batch_size": batch, "workers": workers,
                 "val_fraction": 0.1, "val_samples": 1, "val_crop": 32,
                 "degrade": ["paper", "realistic"]},
        "steps": steps, "log_interval": 1, "val_interval": steps, "checkpoint_interval": steps,
        "device": device, "threads": threads, "seed": 0, "run_dir": str(run_dir), "amp": amp,
    }


def measure(preset: str, crop: int, processes: int, workers: int, amp: bool,
            args: argparse.Namespace, data: Path, work: Path) -> dict:
    """One training run; returns its row (images/s over the steps after the warm-up)."""
    name = f"{preset}-{crop}-x{processes}-w{workers}-{'amp' if amp else 'float32'}"
    config_path = work / f"{name}.yaml"
    run_dir = work / name
    threads = args.threads or max(1, (os.cpu_count() or 1) // processes)
    config_path.write_text(yaml.safe_dump(run_config(preset, crop, args.batch, workers,
                                                     args.steps, data, run_dir, args.device,
                                                     threads, amp)))
    train = ["-m", "mrvae", "train", "--config", str(config_path), "--no-progress"]
    if processes > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={processes}", *train]
    else:
        command = [sys.executable, *train]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True,
                            timeout=args.timeout)
    wall = time.perf_counter() - start
    row = {"preset": preset, "crop": crop, "processes": processes, "workers": workers,
           "amp": amp, "threads": threads, "batch_per_process": args.batch, "steps": args.steps,
           "wall_s": round(wall, 1)}
    if result.returncode != 0:
        lines = (result.stderr + result.stdout).splitlines()
        errors = [line for line in lines if line.startswith("error:")] or lines[-1:] or ["?"]
        return {**row, "error": errors[0]}
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    timed = [r for r in records if "images_per_s" in r and r["step"] > args.warmup]
    seconds = sum(args.batch * processes / r["images_per_s"] for r in timed)
    images = args.batch * processes * len(timed)
    return {**row, "images_per_s": round(images / seconds, 2),
            "s_per_step": round(seconds / len(timed), 3)}


def print_table(rows: list[dict]) -> None:
    header = f"{'preset':<7} {'crop':>5} {'procs':>5} {'workers':>7} {'amp':>5} " \
             f"{'batch/proc':>10} {'images/s':>9} {'s/step':>7} {'vs 1 proc':>9} " \
             f"{'vs float32':>10}"
    print(header)
    print("-" * len(header))
    single = {(r["preset"], r["crop"], r["workers"], r["amp"]): r.get("images_per_s")
              for r in rows if r["processes"] == 1}
    float32 = {(r["preset"], r["crop"], r["processes"], r["workers"]): r.get("images_per_s")
               for r in rows if not r["amp"]}

    def ratio(rate: float, base: float | None) -> str:
        return f"{rate / base:.2f}x" if base else "-"

    for r in rows:
        amp = "on" if r["amp"] else "off"
        if "error" in r:
            print(f"{r['preset']:<7} {r['crop']:>5} {r['processes']:>5} {r['workers']:>7} "
                  f"{amp:>5} failed: {r['error']}")
            continue
        rate = r["images_per_s"]
        by_procs = ratio(rate, single.get((r["preset"], r["crop"], r["workers"], r["amp"])))
        by_precision = ratio(rate, float32.get((r["preset"], r["crop"], r["processes"],
                                                r["workers"])))
        print(f"{r['preset']:<7} {r['crop']:>5} {r['processes']:>5} {r['workers']:>7} "
              f"{amp:>5} {r['batch_per_process']:>10} {rate:>9.2f} {r['s_per_step']:>7.2f} "
              f"{by_procs:>9} {by_precision:>10}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default="tiny,lite,paper")
    parser.add_argument("--crops", default="128,256")
    parser.add_argument("--processes", default="1,2")
    parser.add_argument("--workers", default="1", help="data workers per process (list)")
    parser.add_argument("--amp", default="on,off",
                        help="mixed precision on and/or off (list; the config's amp)")
    parser.add_argument("--batch", type=int, default=4, help="images per process and step")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads per process (0: cores / processes)")
    parser.add_argument("--data", type=Path, help="folder of photos (default: samples)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "bench_train.json")
    args = parser.parse_args()
    if args.steps <= args.warmup:
        parser.error("--steps must be larger than --warmup")
    if not set(args.amp.split(",")) <= {"on", "off"}:
        parser.error("--amp takes on, off or on,off")

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        work = Path(tmp)
        os.environ.setdefault("MRVAE_CACHE", str(work / "cache"))
        data = args.data or sample_photos(work / "photos")
        for preset in args.presets.split(","):
            for crop in (int(c) for c in args.crops.split(",")):
                for processes in (int(p) for p in args.processes.split(",")):
                    for workers in (int(w) for w in args.workers.split(",")):
                        for amp in args.amp.split(","):
                            rows.append(measure(preset, crop, processes, workers, amp == "on",
                                                args, data, work))
                            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print_table(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "python": platform.python_version(),
                    "load_average": list(os.getloadavg())},
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "settings": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
