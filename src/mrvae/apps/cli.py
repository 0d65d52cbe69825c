"""The ``mrvae`` command line. Each command parses options and calls the library.

Bad input ends with one red line naming the file and the reason, and a non-zero exit status.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mrvae import __version__
from mrvae.apps.batch_report import FrameBars, report_batch
from mrvae.apps.terminal import console, fail
from mrvae.nn.config import DEFAULT_MODEL

if TYPE_CHECKING:
    pass

# kept in step with mrvae.data.degrade.PRESETS (tests/test_degrade.py), without importing torch here
RECIPE_HELP = ("Synthesis recipe: paper (the release's), realistic, realistic_clean, "
               "realistic_even, backlit (shadows cut, highlights kept), night_lamps (backlit with "
               "light sources painted in), well_exposed (the photo itself).")

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="MR-VAE low-light image enhancement: synthesise, train, enhance, evaluate.")
def _version(value: bool) -> None:
    if value:
        typer.echo(f"mrvae {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                               help="Print the version and exit.")] = False,
         verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False
         ) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s: %(message)s")


@app.command()
def synth(src: Annotated[Path, typer.Argument(help="Folder (or file) of normal-light photos.")],
          out: Annotated[Path, typer.Argument(help="Output folder for low/, high/, manifest.json")],
          levels: Annotated[str | None, typer.Option(
              help="Comma-separated level indices (default: all levels of the recipe).")] = None,
          recipe: Annotated[str, typer.Option(help=RECIPE_HELP)
                            ] = "paper",
          seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
          crop: Annotated[int | None, typer.Option(help="Centre-ish crop size in pixels.")] = None,
          max_side: Annotated[int | None, typer.Option(
              help="Downscale sources so the long side is at most this.")] = None) -> None:
    """Make (low, normal) pairs from normal-light photos with the MR-VAE recipe."""
    from mrvae.data.datasets import write_synthetic_pairs
    from mrvae.data.degrade import PRESETS

    if not src.exists():
        raise fail(f"{src}: no such file or directory")
    if recipe not in PRESETS:
        raise fail(f"unknown recipe {recipe!r}; choose from {', '.join(PRESETS)}")
    try:
        level_list = [int(v) for v in levels.split(",")] if levels else None
        manifest = write_synthetic_pairs(src, out, PRESETS[recipe], level_list, seed, crop,
                                         max_side)
    except ValueError as exc:
        raise fail(f"bad --levels: {exc}") from None
    except (FileNotFoundError, OSError) as exc:
        raise fail(str(exc)) from None
    n_pairs, n_skipped = len(manifest["pairs"]), len(manifest["skipped"])
    console.print(f"wrote {n_pairs} pairs to {out}" + (f", skipped {n_skipped} unreadable"
                                                       if n_skipped else ""))
    if n_pairs == 0:
        raise typer.Exit(1)


@app.command()
def train(config: Annotated[Path | None, typer.Option(
              "--config", "-c", help="Training config YAML (e.g. configs/lite.yaml).")] = None,
          overrides: Annotated[list[str] | None, typer.Option(
              "--set", help="Override a config key, e.g. --set optim.lr=5e-4 (repeatable).")
          ] = None,
          resume: Annotated[Path | None, typer.Option(
              help="Continue the run in this folder from its last checkpoint.")] = None,
          progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True) -> None:
    """Train MR-VAE on synthetic low-light pairs (also under torchrun for data parallel)."""
    from mrvae.training.config import TrainConfig
    from mrvae.training.loop import train as run_training

    overrides = overrides or []
    if resume is not None:
        if not (resume / "last.pt").is_file():
            raise fail(f"{resume}: no checkpoint last.pt to resume from")
        config = config or resume / "config.yaml"
        overrides = [*overrides, f"run_dir={resume}"]
    if config is None:
        raise fail("give --config FILE (or --resume RUN_DIR)")
    try:
        train_config = TrainConfig.from_yaml(config, overrides)
        run_dir = run_training(train_config, progress=progress)
    except (OSError, ValueError) as exc:  # ConfigError and WeightsError are ValueErrors
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        raise fail("interrupted; continue with --resume RUN_DIR", code=130) from None
    console.print(f"run finished: {run_dir}")


@app.command()
def export(output: Annotated[Path, typer.Option("--output", "-o", help="File to write.")],
           export_format: Annotated[str, typer.Option("--format", help="Export format: onnx.")
                                    ] = "onnx",
           model: Annotated[str, typer.Option(
               help="Preset with shipped weights (lite, paper) or a .safetensors path.")
           ] = "lite",
           dynamic: Annotated[bool, typer.Option(
               "--dynamic/--static", help="Free batch/height/width, or fixed to --height/--width.")
           ] = True,
           graph: Annotated[str, typer.Option(
               help="full (image -> enhanced), global (FPDC + GR) or detail (DR).")] = "full",
           height: Annotated[int, typer.Option(help="Input height with --static.", min=1)] = 512,
           width: Annotated[int, typer.Option(help="Input width with --static.", min=1)] = 512,
           ) -> None:
    """Export the deterministic inference graph (latent mean, GR + DR) to ONNX."""
    from mrvae.nn.export import EXAMPLE_SIZE, GRAPHS, export_onnx
    from mrvae.nn.model import WeightsError, load

    if export_format.lower() != "onnx":
        raise fail(f"unsupported export format {export_format!r}; only onnx is available")
    if graph not in GRAPHS:
        raise fail(f"unknown graph {graph!r}; choose from {', '.join(GRAPHS)}")
    try:
        network = load(model)
    except WeightsError as exc:
        raise fail(str(exc)) from None
    size = (height, width) if not dynamic else (EXAMPLE_SIZE, EXAMPLE_SIZE)
    try:
        path = export_onnx(network, output, graph, dynamic, size)  # type: ignore[arg-type]
    except (OSError, RuntimeError) as exc:
        raise fail(f"{output}: export failed ({exc})") from None
    console.print(f"wrote {path} ({graph} graph, {'dynamic' if dynamic else f'{height}x{width}'})")


@app.command()
def serve(host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
          port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8000,
          model: Annotated[str, typer.Option(
              help="Default model: preset with shipped weights or a .safetensors path.")
          ] = DEFAULT_MODEL,
          backend: Annotated[str, typer.Option(
              help="Enhancement backend: torch, torch-float32 or onnx.")] = "torch",
          device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
          max_upload_mb: Annotated[float, typer.Option(help="Largest upload in MB.")] = 25.0,
          max_megapixels: Annotated[float, typer.Option(help="Largest image in megapixels.")
                                    ] = 24.0,
          concurrency: Annotated[int, typer.Option(help="Enhancements running at once.")] = 1,
          queue: Annotated[int, typer.Option(help="Requests waiting beyond those (503 when "
                                                  "full).")] = 4,
          timeout: Annotated[float, typer.Option(help="Seconds per request (504 after).")
                             ] = 120.0) -> None:
    """Serve the web app: a page to enhance photos from a browser, and a JSON/image API."""
    import socket

    from mrvae.apps.serve import ServeConfig, create_app, run_server
    from mrvae.nn.model import WeightsError

    try:
        config = ServeConfig(backend, device, max_upload_mb, max_megapixels, concurrency, queue,
                             timeout)
        web_app = create_app(model, config)
    except (WeightsError, ValueError, ImportError) as exc:
        raise fail(str(exc)) from None
    try:  # a clear line instead of uvicorn's log when the port is taken
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        raise fail(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    console.print(f"serving on http://{host}:{port}/ (Ctrl+C to stop)")
    run_server(web_app, host, port)


def refine_changes(detail: float | None, sharpen: float | None) -> dict[str, float]:
    """The changes ``--detail`` and ``--sharpen`` make to the model's own refinement."""
    changes = {"detail": detail, "sharpen": sharpen}
    return {name: value for name, value in changes.items() if value is not None}


@app.command()
def enhance(
    inputs: Annotated[list[str], typer.Argument(
        help="Image and video files, folders and glob patterns (quote them: 'shots/*.jpg').",
        show_default=False)],
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Output file for one input, else a folder (created; the layout "
                            "of the inputs is kept). Default: beside each input.")] = None,
    model: Annotated[str, typer.Option(
        help="Preset with shipped weights or a .safetensors path.")] = DEFAULT_MODEL,
    tile: Annotated[int, typer.Option(help="Tile side in pixels; bounds the memory.", min=16)
                    ] = 256,  # enhance.DEFAULT_TILE and GLOBAL_SIZE (no torch import at start-up)
    overlap: Annotated[int | None, typer.Option(
        help="Context pixels around each tile (default: the network's receptive radius).",
        min=0)] = None,
    global_size: Annotated[int, typer.Option(
        help="Long side of the copy the global pass (exposure) sees.", min=16)] = 512,
    refine: Annotated[bool, typer.Option(
        help="Refine the network output: keep the photo's light order, keep what the network "
             "does not brighten (good photos, skies, lamps) as it is, and with --detail restore "
             "its own texture. --no-refine gives the network output as is.")] = True,
    detail: Annotated[float | None, typer.Option(
        help="Strength of the detail restore (0: DR's denoised output, the shipped models' "
             "default; 1: as much input detail as the photo's noise allows).",
        min=0.0, max=1.0, show_default="the model's")] = None,
    sharpen: Annotated[float | None, typer.Option(
        help="Strength of the sharpening of the output's luma where the brightened noise is low "
             "(0: off; 1: the default model's; more is crisper).",
        min=0.0, max=3.0, show_default="the model's")] = None,
    denoise: Annotated[str, typer.Option(
        help="Denoising strength of a model whose GR predicts an operator: auto (the default: "
             "as much as the noise the brightening shows at each pixel), or 0 (the photo's own "
             "grain at the new exposure) to 1 (the network's full denoising).")] = "auto",
    exposure: Annotated[float, typer.Option(
        help="Exposure in EV stops relative to the automatic one (auto = 0), -3..3: +1 is twice "
             "as bright in linear light, highlights rolled off instead of clipped.")] = 0.0,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "auto",
    backend: Annotated[str, typer.Option(
        help="Inference backend: torch (parts of the network in bfloat16 on CPUs that "
             "compute it natively: within about 0.05/255 mean of float32), torch-float32, "
             "or onnx.")
    ] = "torch",
    suffix: Annotated[str, typer.Option(help="Added to each output file name.")] = "_enhanced",
    output_format: Annotated[str, typer.Option(
        "--format", help="png, jpg, tiff, webp, bmp, heic, avif, or same as the input "
                         "(16-bit TIFF for camera RAW; videos keep .mp4, .mov, .mkv, .m4v, others "
                         "become .mp4).")] = "same",
    quality: Annotated[int, typer.Option(help="JPEG/WebP quality.", min=1, max=100)] = 95,
    png_level: Annotated[int, typer.Option(
        help="PNG compression, 0-9: 1 is the fastest (on all cores); 2-9 make clean photos "
             "up to 30 % smaller in 2-50x the time.", min=0, max=9)] = 1,
    overwrite: Annotated[bool, typer.Option(help="Replace existing outputs.")] = False,
    jobs: Annotated[int, typer.Option(help="Images enhanced in parallel.", min=1)] = 1,
    overlap_io: Annotated[bool, typer.Option(
        help="With --jobs 1: decode the next photo and encode the last one while the network "
             "works on this one (at most three photos in memory).")] = True,
    compare: Annotated[bool, typer.Option(
        help="Also write NAME_compare: input | output side by side.")] = False,
    recursive: Annotated[bool, typer.Option(
        "--recursive", "-r", help="Look for images in subfolders of folder inputs.")] = False,
    max_megapixels: Annotated[float, typer.Option(
        help="Refuse images larger than this (read from the header, before decoding).")
    ] = 200.0,
    crf: Annotated[int, typer.Option(
        help="Videos: H.264 quality, 0 (lossless) to 51; 18 looks like the source, each +6 "
             "about halves the size.", min=0, max=51)] = 18,
    video_preset: Annotated[str, typer.Option(
        help="Videos: x264 speed preset, ultrafast to veryslow (faster: bigger files).")
    ] = "medium",
    smoothing: Annotated[float, typer.Option(
        help="Videos: seconds over which exposure and colour are averaged (no flicker); scene "
             "cuts and sudden light changes restart the average. 0: each frame alone.", min=0.0)
    ] = 0.4,
    operator_every: Annotated[int, typer.Option(
        help="Videos, models whose GR predicts an operator (the default): the network's global "
             "pass runs on every Nth frame and at scene cuts, the frames between apply its last "
             "operator. 1: every frame (slower).", min=1)] = 3,
    audio: Annotated[bool, typer.Option(help="Videos: keep the audio track.")] = True,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    engine: Annotated[str, typer.Option(
        help="local (this machine, --jobs at a time) or ray (Ray workers, see docs/CLUSTER.md)."
    )] = "local",
    address: Annotated[str | None, typer.Option(
        help="With --engine ray: the Ray cluster to join (auto, HOST:6379); default: start a "
             "local Ray instance.")] = None,
    workers: Annotated[int | None, typer.Option(
        help="With --engine ray: worker processes, each loading the model once (default: as "
             "many as the cluster's CPUs, or GPUs, allow).", min=1)] = None,
    worker_cpus: Annotated[float, typer.Option(
        help="With --engine ray: CPUs (torch threads) per worker.", min=0.01)] = 1.0,
    worker_gpus: Annotated[float | None, typer.Option(
        help="With --engine ray: GPUs per worker (default: 1 with --device cuda, else 0).",
        min=0.0)] = None,
    manifest: Annotated[Path | None, typer.Option(
        help="Write a JSON line per input (output, done/skipped/failed, reason) there. "
             "Default with --engine ray: OUT/mrvae_manifest.jsonl.")] = None,
) -> None:
    """Enhance low-light photos of any size and videos; a summary of done / skipped / failed at
    the end."""
    from mrvae.engine.jobs import plan_jobs

    if engine not in ("local", "ray"):
        raise fail(f"unknown engine {engine!r}; choose from local, ray")
    if engine == "local" and (address is not None or workers is not None):
        raise fail("--address and --workers go with --engine ray")
    try:
        jobs_to_run, failures = plan_jobs(inputs, out, recursive, suffix, output_format, compare)
    except ValueError as exc:
        raise fail(str(exc)) from None
    if not jobs_to_run and engine == "local":  # nothing to enhance: the errors, exit status 1,
        report_batch(iter(()), [], failures, progress, manifest)  # before loading any model

    from mrvae.engine.batch import run_jobs, threads_per_job
    from mrvae.engine.cluster import (
        MANIFEST_NAME,
        ClusterConfig,
        ClusterError,
        import_ray,
        run_cluster,
    )
    from mrvae.engine.denoise import parse_denoise
    from mrvae.engine.enhancer import Enhancer
    from mrvae.engine.exposure import check_exposure
    from mrvae.io.files import is_image_file, is_video_file
    from mrvae.nn.model import WeightsError

    run_settings: dict[str, Any] = {"quality": quality, "png_level": png_level,
                                    "overwrite": overwrite,
                                    "max_pixels": int(max_megapixels * 1_000_000)}
    frames = FrameBars()
    try:
        # Keyword settings of Enhancer, given as they are to each engine's enhancers.
        settings = {"device": device, "tile": tile, "overlap": overlap,
                    "global_size": global_size, "backend": backend,
                    # the model's own refinement (its card's), with --detail / --sharpen if given
                    "refine": refine_changes(detail, sharpen) if refine else None,
                    "exposure": check_exposure(exposure), "denoise": parse_denoise(denoise)}
        if any(is_video_file(job.src) for job in jobs_to_run):
            from mrvae.engine.video import VideoSettings  # needs PyAV, an optional dependency

            run_settings["video"] = VideoSettings(crf, video_preset, smoothing, audio=audio,
                                                  operator_every=operator_every)
        if engine == "ray":
            import_ray()
            gpus = worker_gpus if worker_gpus is not None else float(device == "cuda")
            config = ClusterConfig(address, workers, worker_cpus, gpus)
            results = run_cluster(jobs_to_run, model, settings, config, **run_settings)
            if manifest is None and out is not None and not is_image_file(out):
                manifest = out / MANIFEST_NAME
        else:
            enhancer = Enhancer(model, **settings,
                                workers=threads_per_job(jobs) if jobs > 1 else None)
            results = run_jobs(enhancer, jobs_to_run, jobs, overlap_io, **run_settings,
                               frame_progress=frames)
    except (ValueError, WeightsError, ImportError) as exc:
        raise fail(str(exc)) from None
    try:
        report_batch(results, jobs_to_run, failures, progress, manifest, frames)
    except ClusterError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:  # outputs are atomic: nothing half-written stays
        raise fail("interrupted", code=130) from None


@app.command("eval")
def eval_command(
    configs: Annotated[list[str] | None, typer.Argument(
        help="With --ablation: training configs (YAML; quoted globs are expanded).",
        show_default=False)] = None,
    data: Annotated[Path | None, typer.Option(
        help="Paired folder (low/ + high/, LOL layouts, `mrvae synth` output) or a folder of "
             "real dark photos (no-reference metrics).")] = None,
    split: Annotated[str, typer.Option(
        help="With a paired --data folder: all, or train / val of its fixed split (LOL: 63 "
             "validation pairs). With --synthetic-from / --well-exposed-from: val (the held-out "
             "photos, the default) or train (the others: for choosing settings, not for "
             "reporting).")] = "all",
    synthetic_from: Annotated[Path | None, typer.Option(
        help="Folder of clean photos: evaluate on pairs synthesised from its held-out split.")
    ] = None,
    well_exposed_from: Annotated[Path | None, typer.Option(
        help="Folder of clean photos: evaluate on its held-out split as is, each photo its own "
             "ground truth (are good photos left alone?).")] = None,
    recipe: Annotated[str, typer.Option(help=RECIPE_HELP)] = "paper",
    methods: Annotated[str | None, typer.Option(
        help="Comma-separated methods: input, he, clahe, gamma, ssr, msrcr, lime, zerodce, "
             "mrvae:NAME_OR_PATH (as `mrvae enhance` runs it), mrvae-raw:NAME_OR_PATH (the "
             "network alone), either with @ev=EV for an exposure (mrvae:lite@ev=+1) and "
             "@backend=NAME for the engine's backend (mrvae:bilateral@backend=torch-float32) "
             "(default: all of them, mrvae-raw:lite and mrvae:lite).")] = None,
    metrics: Annotated[str | None, typer.Option(
        help="Comma-separated metrics (default: full-reference and clip_increase for pairs, "
             "no-reference for real photos).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Report folder.")] = Path("report"),
    limit: Annotated[int | None, typer.Option(help="Evaluate at most this many images.", min=1)
                     ] = None,
    max_side: Annotated[int | None, typer.Option(
        help="Downscale images to this long side (default: 512 for --synthetic-from and "
             "--well-exposed-from, full size for --data).", min=16)] = None,
    grid: Annotated[str, typer.Option(
        help="Image grids: a number of samples, or comma-separated sample names.")] = "1",
    grid_height: Annotated[int, typer.Option(help="Height of each image in a grid.", min=16)
                           ] = 240,
    versus: Annotated[str | None, typer.Option(
        help="One of the methods: every other is compared with it image by image (on how "
             "many images it scores better or worse, the median difference).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic pairs.")] = 0,
    ablation: Annotated[bool, typer.Option(
        "--ablation", help="Evaluate one MR-VAE variant per config (trained when its run dir "
                           "has no best.safetensors).")] = False,
    steps: Annotated[int | None, typer.Option(
        help="With --ablation: train variants for this many steps (a quick run).", min=1)
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True) -> None:
    """Score enhancement methods and write report/results.{json,md} and image grids."""
    import glob

    from mrvae.evaluation import report, sets
    from mrvae.evaluation.metrics import METRICS
    from mrvae.training.ablation import ABLATION_METRICS, ablation_methods, ablation_test_set

    config_paths = [Path(p) for item in configs or [] for p in (sorted(glob.glob(item))
                                                                 if glob.has_magic(item)
                                                                 else [item])]
    if configs and not ablation:
        raise fail(f"unexpected argument {configs[0]!r} (config files go with --ablation)")
    if ablation and not config_paths:
        raise fail("--ablation needs training config files, e.g. configs/ablation/*.yaml")
    for path in config_paths:
        if not path.is_file():
            raise fail(f"{path}: no such config file")
    sources = [f"--{name}" for name, value in (("data", data), ("synthetic-from", synthetic_from),
                                               ("well-exposed-from", well_exposed_from))
               if value is not None]
    if len(sources) > 1:
        raise fail(f"give one of --data, --synthetic-from, --well-exposed-from, not "
                   f"{' and '.join(sources)}")
    if split not in ("all", "train", "val"):
        raise fail(f"unknown --split {split!r}; choose from all, train, val")
    if split != "all" and data is None and synthetic_from is None and well_exposed_from is None:
        raise fail("--split goes with --data, --synthetic-from or --well-exposed-from")
    clean_split = "train" if split == "train" else "val"
    metric_names = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
    for name in metric_names or []:
        if name not in METRICS:
            raise fail(f"unknown metric {name!r}; choose from {', '.join(METRICS)}")
    grid_spec: int | list[str] = int(grid) if grid.isdigit() else \
        [g.strip() for g in grid.split(",") if g.strip()]
    try:
        if synthetic_from is not None:
            test_set = sets.synthetic_samples(synthetic_from, recipe, max_side or 512, limit,
                                              seed, split=clean_split)
        elif well_exposed_from is not None:
            test_set = sets.well_exposed_samples(well_exposed_from, max_side or 512, limit,
                                                 split=clean_split)
        elif data is not None:
            test_set = sets.folder_samples(data, max_side, limit, split)  # type: ignore[arg-type]
        elif ablation:
            test_set = ablation_test_set(config_paths[0], recipe, max_side or 512, limit, seed)
        else:
            raise fail("give --data DIR, --synthetic-from CLEAN_DIR or --well-exposed-from "
                       "CLEAN_DIR")
        if ablation:
            found, unavailable, extra = ablation_methods(config_paths, out / "runs", steps)
            metric_names = metric_names or list(
                ABLATION_METRICS if test_set.paired else report.default_metrics(False))
            title = "Ablation report"
        else:
            names = [m.strip() for m in (methods or ",".join(report.DEFAULT_METHODS)).split(",")
                     if m.strip()]
            found, unavailable = report.resolve_methods(names)
            extra, title = {}, "Evaluation report"
        if not found:
            raise fail("no method can run: " + "; ".join(unavailable.values()))
        results = report.evaluate(test_set, found, out, metric_names, unavailable, grid_spec,
                                  extra, title, progress, grid_height, versus)
    except (FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(f"{out}: cannot write the report ({exc.strerror or exc})") from None
    table = [line for line in (out / "results.md").read_text().splitlines()
             if line.startswith("|")]
    typer.echo("\n".join(table))
    console.print(f"report: {out / 'results.md'}, {out / 'results.json'}"
                  + (f", {len(results['grids'])} grid(s)" if results["grids"] else ""))


if __name__ == "__main__":
    app()
