"""PyTorch vs ONNX Runtime backends of the enhance engine on the CPU.

Times :meth:`mrvae.engine.enhancer.Enhancer.enhance_array` on 2 MP and 12 MP photos with each
backend (same model, tiles and threads), checks that both give the same pixels, prints a table and
writes JSON. Untrained weights time the same as trained ones.

    python benchmarks/bench_onnx.py [--preset lite] [--threads 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from mrvae.engine.enhancer import Enhancer
from mrvae.nn.model import create_model

SIZES = {"2MP": (1200, 1600), "12MP": (3000, 4000)}


def best_times(engines: dict[str, Enhancer], rgb: np.ndarray, repeats: int
               ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Fastest of ``repeats`` runs per engine, wall and CPU seconds (``NAME_s``,
    ``NAME_cpu_s``), and the outputs.

    The engines take turns, so that load from other processes hits both alike; CPU time (all
    threads of this process) is less sensitive to that load than wall time.
    """
    times: dict[str, list[float]] = {}
    outputs = {}
    for _ in range(repeats):
        for name, engine in engines.items():
            wall, cpu = time.perf_counter(), time.process_time()
            outputs[name] = engine.enhance_array(rgb)
            times.setdefault(f"{name}_s", []).append(time.perf_counter() - wall)
            times.setdefault(f"{name}_cpu_s", []).append(time.process_time() - cpu)
    return {key: round(min(values), 3) for key, values in times.items()}, outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="lite")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sizes", default=",".join(SIZES), help="comma list of " +
                        ", ".join(SIZES))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" /
                        "bench_onnx.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model(args.preset).eval()

    engines = {}
    for backend in ("torch", "onnx"):
        start = time.perf_counter()
        engines[backend] = Enhancer(model, device="cpu", backend=backend)
        engines[backend].enhance_array(np.zeros((64, 64, 3), np.float32))  # warm-up
        print(f"{backend}: ready in {time.perf_counter() - start:.2f} s")

    rng = np.random.default_rng(0)
    rows = []
    for name in args.sizes.split(","):
        height, width = SIZES[name]
        rgb = rng.random((height, width, 3), dtype=np.float32) * 0.3
        seconds, outputs = best_times(engines, rgb, args.repeats)
        row = {"size": name, "height": height, "width": width, **seconds,
               "speedup_onnx": round(seconds["torch_s"] / seconds["onnx_s"], 2),
               "cpu_speedup_onnx": round(seconds["torch_cpu_s"] / seconds["onnx_cpu_s"], 2)}
        row["max_abs_diff"] = float(np.abs(outputs["torch"] - outputs["onnx"]).max())
        rows.append(row)

    print(f"\npreset {args.preset}, {args.threads} threads, best of {args.repeats}")
    print(f"{'size':>6} {'torch s':>8} {'onnx s':>8} {'speedup':>8} {'torch cpu s':>12} "
          f"{'onnx cpu s':>11} {'cpu speedup':>12} {'max diff':>9}")
    for row in rows:
        print(f"{row['size']:>6} {row['torch_s']:>8.2f} {row['onnx_s']:>8.2f} "
              f"{row['speedup_onnx']:>7.2f}x {row['torch_cpu_s']:>12.2f} "
              f"{row['onnx_cpu_s']:>11.2f} {row['cpu_speedup_onnx']:>11.2f}x "
              f"{row['max_abs_diff']:>9.1e}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "preset": args.preset, "threads": args.threads, "repeats": args.repeats,
        "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
        "onnxruntime": __import__("onnxruntime").__version__, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
