"""The evaluation report: run methods on a test set, score them, write what they scored.

:func:`resolve_methods` builds methods by name (those that cannot run here are listed with the
reason); :func:`evaluate` runs each on every sample of a :class:`~mrvae.evaluation.sets.TestSet`
and writes ``results.json`` (per image and aggregate), ``results.md`` (mean ± std per method,
best in bold, runtime per megapixel; :func:`render_markdown`) and image grids (input |
methods ... | ground truth) with the method names drawn on them (:func:`make_grid`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mrvae.evaluation.baselines import (
    DEFAULT_BACKEND,
    METHODS,
    Method,
    MethodUnavailable,
    get_method,
    parse_mrvae,
)
from mrvae.evaluation.metrics import METRICS, NO_REFERENCE, PAIRED, get_metric
from mrvae.evaluation.sets import Sample, TestSet
from mrvae.io.encode import write_image
from mrvae.io.files import write_bytes_atomic

log = logging.getLogger(__name__)

DEFAULT_METHODS = ("input", "he", "clahe", "gamma", "ssr", "msrcr", "lime", "zerodce",
                   "mrvae-raw:lite", "mrvae:lite")
REFERENCE_ROW = "input"  # shown for orientation, never marked best


# --------------------------------------------------------------------------------- methods

def resolve_methods(names: Sequence[str]) -> tuple[dict[str, Method], dict[str, str]]:
    """Build each method; those that cannot run here are returned with the reason instead.

    Raises:
        ValueError: an unknown method name.
    """
    methods, unavailable = {}, {}
    for name in names:
        try:
            methods[name] = get_method(name)
        except MethodUnavailable as exc:
            log.warning("%s", exc)
            unavailable[name] = str(exc)
    return methods, unavailable


def describe(name: str) -> str:
    if name in METHODS:
        return METHODS[name].description
    if (mrvae := parse_mrvae(name)) is None:
        return name
    exposure = f", exposure {mrvae.exposure:+g} EV" if mrvae.exposure else ""
    backend = f", backend {mrvae.backend}" if mrvae.backend != DEFAULT_BACKEND else ""
    return f"MR-VAE model {mrvae.weights}, " + ("refined as by `mrvae enhance`" if mrvae.refine
                                                else "network output only") + exposure + backend


# ------------------------------------------------------------------------------ evaluation

def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _score(metric_names: Sequence[str], output: np.ndarray, sample: Sample
           ) -> dict[str, float | None]:
    scores: dict[str, float | None] = {}
    for name in metric_names:
        try:
            scores[name] = float(get_metric(name)(output, sample.high, sample.low))
        except ValueError as exc:  # e.g. an image too small for NIQE: that cell stays empty
            log.warning("%s on %s: %s", name, sample.name, exc)
            scores[name] = None
    return scores


def _aggregate(records: list[dict], metric_names: Sequence[str]) -> dict[str, Any]:
    done = [r for r in records if "error" not in r]
    megapixels = sum(r["megapixels"] for r in done)
    summary: dict[str, Any] = {
        "images": len(done), "failures": len(records) - len(done),
        "seconds_per_megapixel": sum(r["seconds"] for r in done) / megapixels
        if megapixels else None,
        "metrics": {}}
    for name in metric_names:
        values = np.array([v for r in done if (v := _finite(r["metrics"].get(name))) is not None])
        summary["metrics"][name] = {
            "mean": float(values.mean()) if values.size else None,
            "std": float(values.std()) if values.size else None,
            "median": float(np.median(values)) if values.size else None, "n": int(values.size)}
    return summary


def head_to_head(records: dict[str, list[dict]], versus: str, metric_names: Sequence[str]
                 ) -> dict[str, dict[str, dict[str, Any]]]:
    """Every method against ``versus``, image by image: per metric, on how many images it
    scores better and worse, out of the images both scored, and the median difference
    (method − ``versus``). A mean can hide that a method loses on most images."""
    def scores(name: str, metric: str) -> dict[str, float]:
        return {r["image"]: value for r in records[name]
                if "error" not in r and (value := _finite(r["metrics"].get(metric))) is not None}

    theirs = {metric: scores(versus, metric) for metric in metric_names}
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for name in records:
        if name == versus:
            continue
        table[name] = {}
        for metric in metric_names:
            ours = scores(name, metric)
            differences = np.array([ours[i] - theirs[metric][i] for i in ours
                                    if i in theirs[metric]])
            higher = METRICS[metric].higher_is_better
            gains = None if higher is None else differences if higher else -differences
            table[name][metric] = {
                "better": None if gains is None else int((gains > 0).sum()),
                "worse": None if gains is None else int((gains < 0).sum()),
                "n": int(differences.size),
                "median_difference": float(np.median(differences)) if differences.size else None}
    return table


def default_metrics(paired: bool) -> tuple[str, ...]:
    return PAIRED if paired else NO_REFERENCE


def evaluate(test_set: TestSet, methods: dict[str, Method], out_dir: str | Path,
             metric_names: Sequence[str] | None = None, unavailable: dict[str, str] | None = None,
             grid: int | Sequence[str] = 1, extra: dict[str, dict[str, Any]] | None = None,
             title: str = "Evaluation report", progress: bool = False,
             grid_height: int = 240, versus: str | None = None) -> dict[str, Any]:
    """Run every method on every sample, score it, and write the report to ``out_dir``.

    Args:
        methods: name -> method (float32 ``(H, W, 3)`` in [0, 1] -> same).
        metric_names: metrics to compute; default full-reference for paired sets, no-reference
            otherwise.
        unavailable: methods that could not be built, name -> reason (listed in the report).
        grid: how many samples get an image grid (spread over the set), or their names.
        extra: more columns per method (e.g. ``{"lite": {"params": 1234}}``).
        grid_height: height in pixels of each image in a grid.
        versus: a method to compare every other one with, image by image
            (:func:`head_to_head`).

    Returns:
        The results dict also written to ``results.json``.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = test_set.samples
    metric_names = tuple(metric_names or default_metrics(test_set.paired))
    for name in metric_names:
        metric = get_metric(name)
        if metric.kind == "full_reference" and not test_set.paired:
            raise ValueError(f"metric {name} needs ground truth; {test_set.source} has none")
    if versus is not None and versus not in methods:
        raise ValueError(f"versus {versus}: not among the methods evaluated "
                         f"({', '.join(methods)})")
    grid_names = _grid_names(samples, grid)
    grid_outputs: dict[str, dict[str, np.ndarray]] = {name: {} for name in grid_names}
    records: dict[str, list[dict]] = {name: [] for name in methods}
    bar = tqdm(total=len(samples) * len(methods), disable=not progress, desc="eval", unit="run")
    for sample in samples:
        for method_name, method in methods.items():
            record: dict[str, Any] = {"image": sample.name, "megapixels": sample.megapixels}
            start = time.perf_counter()
            try:
                output = np.clip(np.asarray(method(sample.low), np.float32), 0.0, 1.0)
                record["seconds"] = time.perf_counter() - start
                if output.shape != sample.low.shape:
                    raise ValueError(f"output shape {output.shape} != input {sample.low.shape}")
            except Exception as exc:  # one failing run must not stop the report
                log.warning("%s failed on %s: %s", method_name, sample.name, exc)
                record["error"] = f"{type(exc).__name__}: {exc}"
                records[method_name].append(record)
                bar.update()
                continue
            record["metrics"] = _score(metric_names, output, sample)
            records[method_name].append(record)
            if sample.name in grid_outputs:
                grid_outputs[sample.name][method_name] = output
            bar.update()
    bar.close()
    results: dict[str, Any] = {
        "title": title,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "data": {"source": test_set.source, "paired": test_set.paired, "images": len(samples),
                 "megapixels": sum(s.megapixels for s in samples), "skipped": test_set.skipped,
                 **test_set.settings},
        "metrics": {name: {"higher_is_better": METRICS[name].higher_is_better,
                           "description": METRICS[name].description} for name in metric_names},
        "methods": {name: {"description": describe(name), **_aggregate(records[name], metric_names),
                           **(extra or {}).get(name, {})} for name in methods},
        "unavailable": dict(unavailable or {}),
        "grids": [],
        "per_image": [{"method": name, **record} for name in methods for record in records[name]],
    }
    if versus is not None:
        results["versus"] = {"method": versus,
                             "methods": head_to_head(records, versus, metric_names)}
    by_name = {sample.name: sample for sample in samples}
    for name, outputs in grid_outputs.items():
        sample = by_name[name]
        tiles = [("input", sample.low)] + [(_label(m), img) for m, img in outputs.items()
                                           if m != REFERENCE_ROW]
        if sample.high is not None:
            tiles.append(("ground truth", sample.high))
        path = out_dir / f"grid_{_safe(name)}.png"
        write_image(path, make_grid(tiles, grid_height) / 255.0)
        results["grids"].append(path.name)
    _write_text(out_dir / "results.json", json.dumps(_json_safe(results), indent=1))
    _write_text(out_dir / "results.md", render_markdown(results))
    return results


def _grid_names(samples: Sequence[Sample], grid: int | Sequence[str]) -> list[str]:
    names = [s.name for s in samples]
    if isinstance(grid, int):
        if grid <= 0:
            return []
        count = min(grid, len(names))  # the centres of ``count`` equal parts of the set
        return [names[int((i + 0.5) * len(names) / count)] for i in range(count)]
    missing = [g for g in grid if g not in names]
    if missing:
        raise ValueError(f"no sample named {', '.join(missing)} for a grid")
    return list(grid)


def _label(method: str) -> str:
    """A short grid label: ``mrvae:/long/path/w.safetensors@ev=+1`` -> ``mrvae:w@ev=+1``."""
    mrvae = parse_mrvae(method)
    if mrvae is None or "/" not in mrvae.weights:
        return method
    return mrvae.label(Path(mrvae.weights).stem)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _json_safe(value: Any) -> Any:
    """Non-finite floats become null (JSON has no inf/nan)."""
    if isinstance(value, float):
        return _finite(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _write_text(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


# ----------------------------------------------------------------------- markdown, grids

def make_grid(tiles: Sequence[tuple[str, np.ndarray]], height: int = 240, columns: int = 5
              ) -> np.ndarray:
    """Images side by side (``columns`` per row), each scaled to ``height``, name drawn on top.

    Returns:
        uint8 ``(H, W, 3)`` RGB.
    """
    drawn = []
    for label, img in tiles:
        width = max(1, round(img.shape[1] * height / img.shape[0]))
        tile = cv2.resize(np.clip(img, 0, 1).astype(np.float32), (width, height),
                          interpolation=cv2.INTER_AREA)
        tile = np.round(tile * 255).astype(np.uint8)  # OpenCV draws text on 8-bit images
        scale = 0.5
        (text_w, text_h), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        cv2.rectangle(tile, (0, 0), (min(width, text_w + 8), text_h + base + 6), (0, 0, 0), -1)
        cv2.putText(tile, label, (4, text_h + 3), cv2.FONT_HERSHEY_SIMPLEX, scale, (255,) * 3, 1,
                    cv2.LINE_AA)
        drawn.append(tile)
    row_width = max(sum(t.shape[1] for t in drawn[i:i + columns])
                    for i in range(0, len(drawn), columns))
    rows = []
    for i in range(0, len(drawn), columns):
        row = np.concatenate(drawn[i:i + columns], axis=1)
        rows.append(np.pad(row, ((0, 0), (0, row_width - row.shape[1]), (0, 0))))
    return np.concatenate(rows, axis=0)


def _format(value: float | None) -> str:
    if value is None:
        return "–"
    magnitude = abs(value)
    return f"{value:.3f}" if magnitude < 10 else f"{value:.2f}" if magnitude < 1000 \
        else f"{value:.0f}"


def _best(results: dict[str, Any], metric: str) -> set[str]:
    direction = results["metrics"][metric]["higher_is_better"]
    if direction is None:
        return set()
    means = {name: row["metrics"][metric]["mean"] for name, row in results["methods"].items()
             if name != REFERENCE_ROW and row["metrics"][metric]["mean"] is not None}
    if not means:
        return set()
    target = max(means.values()) if direction else min(means.values())
    return {name for name, mean in means.items() if mean == target}


def render_markdown(results: dict[str, Any], extra_columns: Sequence[str] = ("params",)
                    ) -> str:
    """The report as markdown: one table, mean ± std per method, best in bold."""
    data = results["data"]
    metrics = list(results["metrics"])
    kind = "paired, full-reference" if data["paired"] else "real photos, no-reference"
    extras = [c for c in extra_columns if any(c in row for row in results["methods"].values())]
    lines = [f"# {results['title']}", "",
             f"Data: {data['source']} — {data['images']} images ({kind}, "
             f"{data['megapixels']:.1f} MP in all). Created {results['created']}.", ""]
    arrows = {True: " ↑", False: " ↓", None: ""}
    header = ["method", *(f"{m}{arrows[results['metrics'][m]['higher_is_better']]}"
                          for m in metrics), *extras, "runtime s/MP", "images"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    best = {metric: _best(results, metric) for metric in metrics}
    for name, row in results["methods"].items():
        cells = [f"`{name}`"]
        for metric in metrics:
            stats = row["metrics"][metric]
            text = "–" if stats["mean"] is None else \
                f"{_format(stats['mean'])} ± {_format(stats['std'])}"
            cells.append(f"**{text}**" if name in best[metric] else text)
        cells += [f"{row[c]:,}" if isinstance(row.get(c), int) else str(row.get(c, "–"))
                  for c in extras]
        runtime = row["seconds_per_megapixel"]
        failures = f" ({row['failures']} failed)" if row["failures"] else ""
        cells += [_format(runtime), f"{row['images']}{failures}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "↑ higher is better, ↓ lower is better; best method in bold "
              f"(the `{REFERENCE_ROW}` row is the unprocessed input, for orientation). "
              "Runtime: wall-clock seconds per megapixel on this machine.", ""]
    if "versus" in results:
        lines += _versus_markdown(results, metrics)
    if results["unavailable"]:
        lines += ["Unavailable methods:", ""]
        lines += [f"- `{name}`: {reason.removeprefix(f'{name}: ')}"
                  for name, reason in results["unavailable"].items()]
        lines.append("")
    lines += ["Metrics:", ""]
    lines += [f"- `{m}`: {results['metrics'][m]['description']}" for m in metrics]
    lines += ["", "Methods:", ""]
    lines += [f"- `{name}`: {row['description']}" for name, row in results["methods"].items()]
    if results["grids"]:
        lines += ["", "Image grids (input | methods | ground truth):", ""]
        lines += [f"![{g}]({g})" for g in results["grids"]]
    if data["skipped"]:
        lines += ["", "Skipped unreadable inputs:", ""] + [f"- {s}" for s in data["skipped"]]
    return "\n".join(lines) + "\n"


def _versus_markdown(results: dict[str, Any], metrics: Sequence[str]) -> list[str]:
    versus = results["versus"]["method"]
    lines = [f"Image by image against `{versus}`: on how many images each method scores "
             "better / worse, and the median difference (method − "
             f"`{versus}`):", "",
             "| method | " + " | ".join(metrics) + " |", "|" + "---|" * (len(metrics) + 1)]
    for name, row in results["versus"]["methods"].items():
        cells = []
        for metric in metrics:
            cell = row[metric]
            median = _format(cell["median_difference"])
            cells.append(f"Δ {median}" if cell["better"] is None else
                         f"{cell['better']} / {cell['worse']} of {cell['n']}, Δ {median}")
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return [*lines, ""]
