"""The training loop: model, optimiser and schedule, the steps, validation, checkpoints, DDP.

``mrvae train --config configs/lite.yaml [--set a.b=c ...] [--resume RUN_DIR]`` calls
:func:`train`. Multi-process data parallel runs the same command through torchrun:
``torchrun --nproc_per_node N -m mrvae train --config ...`` (gloo on CPU, nccl on GPU;
``data.batch_size`` is per process).

A run directory holds ``config.yaml`` (the effective config), ``last.pt`` (everything needed to
continue exactly: model, optimiser, scheduler, grad scaler, step, best metric and every process's
RNG state), ``log.jsonl``, TensorBoard events, and ``best.safetensors`` + ``best.json`` (the model
with the best validation PSNR, loadable with :func:`mrvae.nn.model.from_pretrained`).

Every random choice is a pure function of ``(seed, step)`` or ``(seed, epoch, index)`` except the
latent sampling, whose torch RNG state is checkpointed; so a resumed run takes exactly the steps
the uninterrupted one would have taken.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from mrvae.nn.config import GROWABLE_FIELDS, HEAD_FIELDS
from mrvae.nn.losses import distance, mrvae_loss
from mrvae.nn.model import (
    MRVAE,
    WeightsError,
    create_model,
    from_pretrained,
    load_matching,
    mixed_precision,
)
from mrvae.nn.model import resolve_device as model_device
from mrvae.training.checkpoints import (
    CHECKPOINT_FORMAT,
    load_checkpoint,
    rng_state,
    save_atomic,
    set_rng_state,
)
from mrvae.training.config import ConfigError, TrainConfig, dump_config
from mrvae.training.distributed import Dist, broadcast_str, gather, init_distributed
from mrvae.training.loaders import build_datasets, endless, loader_generator, train_loader
from mrvae.training.runlog import RunLog
from mrvae.training.validation import validate_and_keep_best

log = logging.getLogger(__name__)


def resolve_device(config: TrainConfig) -> str:
    """``"cpu"`` or ``"cuda"`` for the config's device (``auto`` picks CUDA when present)."""
    try:
        return model_device(config.device).type
    except ValueError as exc:
        raise ConfigError(f"device: {exc}") from None


def default_run_dir(config: TrainConfig) -> str:
    return str(Path("runs") / f"{config.model.preset}-{dt.datetime.now():%Y%m%d-%H%M%S}")


def lr_factor(step: int, config: TrainConfig) -> float:
    """Learning rate at ``step`` as a factor of ``optim.lr``."""
    optim = config.optim
    floor = min(1.0, optim.min_lr / optim.lr)
    if optim.warmup_steps and step < optim.warmup_steps:
        return (step + 1) / optim.warmup_steps
    if optim.schedule == "exp":
        return max(floor, optim.decay_rate ** (step // optim.decay_steps))
    if optim.schedule == "cosine":
        span = max(1, config.steps - optim.warmup_steps)
        progress = min(1.0, (step - optim.warmup_steps) / span)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def global_scale_at(step: int, config: TrainConfig) -> float:
    """The GR scale of a step: a pure function of (seed, step), identical on every process."""
    rng = np.random.default_rng([config.seed, step])
    return float(config.global_scales[int(rng.integers(0, len(config.global_scales)))])


def build_model(config: TrainConfig) -> MRVAE:
    """A fresh model (seeded), or the weights of ``model.init_weights``."""
    torch.manual_seed(config.seed)
    model = create_model(config.model.preset, **config.model_overrides())
    if config.model.init_weights:
        try:
            pretrained = from_pretrained(config.model.init_weights)
        except WeightsError as exc:
            raise ConfigError(f"model.init_weights: {exc}") from None
        grown = dataclasses.replace(pretrained.config, **{
            name: getattr(model.config, name) for name in GROWABLE_FIELDS + HEAD_FIELDS})
        if grown != model.config:
            raise ConfigError(f"model.init_weights: {config.model.init_weights} has config "
                              f"{pretrained.config.to_dict()}, the run wants "
                              f"{model.config.to_dict()}")
        state = pretrained.state_dict()
        if any(getattr(pretrained.config, name) != getattr(model.config, name)
               for name in HEAD_FIELDS):  # another GR head: everything but the head carries
            kept = model.state_dict()
            state = {name: value for name, value in state.items()
                     if name in kept and kept[name].shape == value.shape}
        fresh = load_matching(model, state)
        if fresh:
            log.warning("model.init_weights: %d new tensors start as initialised", len(fresh))
    return model


def trainable_parameters(model: nn.Module, prefixes: list[str] | None) -> list[nn.Parameter]:
    """The parameters whose names start with one of ``prefixes`` (all when None); the others
    are frozen (``requires_grad`` off).

    Raises:
        ConfigError: a prefix names no parameter.
    """
    named = dict(model.named_parameters())
    if prefixes is None:
        return list(named.values())
    unknown = [p for p in prefixes if not any(name.startswith(p) for name in named)]
    if unknown:
        raise ConfigError(f"optim.train_only: {unknown} name no part of the model")
    for name, parameter in named.items():
        parameter.requires_grad_(name.startswith(tuple(prefixes)))
    return [parameter for parameter in named.values() if parameter.requires_grad]


def train_mode(model: nn.Module) -> None:
    """``model.train()``, except the batch norms whose parameters are all frozen
    (``optim.train_only``): their running statistics belong to the frozen weights, so they stay
    in eval mode (in train mode they would normalise by each batch and drift)."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
                parameter.requires_grad for parameter in module.parameters(recurse=False)):
            module.eval()


def train(config: TrainConfig, progress: bool = True) -> Path:
    """Run ``config``, or continue it when its run dir already holds ``last.pt``.

    ``progress`` shows a progress bar (main process only) with the loss terms and images/s.

    Returns:
        The run directory.

    Raises:
        ConfigError: bad config, missing data, unreadable checkpoint.
    """
    device_kind = resolve_device(config)
    ddp = init_distributed(device_kind)
    try:
        return _train(config, device_kind, ddp, progress)
    finally:
        if ddp.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _train(config: TrainConfig, device_kind: str, ddp: Dist, progress: bool) -> Path:
    from tqdm import tqdm

    threads = config.threads or max(1, (os.cpu_count() or 1) // ddp.world)
    torch.set_num_threads(threads)
    device = torch.device(f"cuda:{ddp.local_rank}" if device_kind == "cuda" else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    config = dataclasses.replace(config, data=dataclasses.replace(
        config.data, roots=[str(Path(root).resolve()) for root in config.data.roots]))
    run_dir = Path(broadcast_str(config.run_dir or default_run_dir(config), ddp))
    config = dataclasses.replace(config, run_dir=str(run_dir))

    train_set, val_sets, scene_set = build_datasets(config)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model = build_model(config).to(device, memory_format=memory_format)
    optimizer = torch.optim.Adam(trainable_parameters(model, config.optim.train_only),
                                 lr=config.optim.lr,
                                 betas=tuple(config.optim.betas),  # type: ignore[arg-type]
                                 weight_decay=config.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config))
    autocast = mixed_precision(device, config.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=autocast == torch.float16)

    checkpoint_path = run_dir / "last.pt"
    step, best = 0, {config.best_metric: -math.inf}
    if checkpoint_path.exists():
        checkpoint = load_checkpoint(checkpoint_path)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        step, best = int(checkpoint["step"]), dict(checkpoint["best"])
        states = checkpoint["rng"]
        if len(states) == ddp.world:
            set_rng_state(states[ddp.rank])
        else:
            log.warning("resuming with %d processes instead of %d: latent noise reseeded",
                        ddp.world, len(states))
            torch.manual_seed(config.seed + 1000 * ddp.rank + step)
    else:
        torch.manual_seed(config.seed + 1000 * ddp.rank)

    if ddp.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        text = dump_config(config)
        (run_dir / "config.yaml").write_text(text)
        print((f"resuming at step {step}\n" if step else "") + text, file=sys.stderr)
    net: nn.Module = model
    if ddp.world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    sampler, loader = train_loader(train_set, config.data.batch_size, config, ddp, device)
    scene_batches = None
    if scene_set is not None:
        scene_batches = endless(*train_loader(scene_set, config.scene.batch_size, config, ddp,
                                              device), step)
    # Own generators: creating a loader iterator must not draw from the global torch RNG,
    # whose state (latent sampling) is part of the exact resume.
    # Paired sets are scored on whole images, which may differ in size: one at a time.
    val_loaders = {name: DataLoader(val_set, batch_size=1 if name else max(
                       1, config.data.batch_size // 2), generator=loader_generator(config))
                   for name, val_set in val_sets.items()}
    run_log = RunLog(run_dir, step, ddp.main)
    with_target = config.loss.mode == "multi" and config.loss.content_weight > 0

    sums: dict[str, float] = {}
    count, images, tick = 0, 0, time.perf_counter()
    bar = tqdm(total=config.steps, initial=step, disable=not (ddp.main and progress),
               dynamic_ncols=True, desc=run_dir.name, mininterval=1.0)
    train_mode(net)  # net is the model, or DDP around it
    batches = endless(sampler, loader, step)
    while step < config.steps:
        batch = next(batches)
        low = batch["low"].to(device, non_blocking=True, memory_format=memory_format)
        high = batch["high"].to(device, non_blocking=True, memory_format=memory_format)
        with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            output = net(low, target=high if with_target else None,
                         global_scale=global_scale_at(step, config))
        output = dataclasses.replace(output, **{
            f.name: getattr(output, f.name).float() for f in dataclasses.fields(output)
            if getattr(output, f.name) is not None})
        loss, terms = mrvae_loss(output, high, config.loss)
        if scene_batches is not None:
            scene = next(scene_batches)
            scene_low = scene["low"].to(device, memory_format=memory_format)
            scene_loss = _scene_loss(model, scene_low, scene["high"].to(device), config,
                                     autocast)
            loss = loss + scene_loss
            terms["scene"] = float(scene_loss.detach())
            terms["total"] = float(loss.detach())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if config.optim.grad_clip > 0:
            scaler.unscale_(optimizer)
            terms["grad_norm"] = float(nn.utils.clip_grad_norm_(model.parameters(),
                                                                config.optim.grad_clip))
        if scaler.is_enabled() or math.isfinite(terms.get("grad_norm", terms["total"])):
            scaler.step(optimizer)  # the float16 scaler skips non-finite steps itself
        else:
            log.warning("step %d: non-finite loss or gradient, update skipped", step + 1)
        scaler.update()
        scheduler.step()
        step += 1
        count += 1
        images += len(low) * ddp.world
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + value
        bar.update(1)

        if step % config.log_interval == 0 or step == config.steps:
            elapsed = time.perf_counter() - tick
            means = {name: value / count for name, value in sums.items()}
            record = {**means, "lr": scheduler.get_last_lr()[0],
                      "images_per_s": images / max(elapsed, 1e-9),
                      "epoch": (step - 1) // len(sampler)}
            run_log.write(step, record)
            bar.set_postfix({k: f"{v:.4g}" for k, v in record.items()
                             if k in ("total", "global", "detail", "content", "kl",
                                      "single_l2", "scene", "order", "images_per_s")},
                            refresh=False)
            sums, count, images, tick = {}, 0, 0, time.perf_counter()
        if step % config.val_interval == 0 or step == config.steps:
            if ddp.main:
                validate_and_keep_best(model, val_loaders, device, config, step, best,
                                       run_log, run_dir)
                train_mode(model)  # validation put every module back in train mode
            tick = time.perf_counter()  # validation time is not training throughput
        if step % config.checkpoint_interval == 0 or step == config.steps:
            states = gather(rng_state(), ddp)
            if ddp.main:
                save_atomic({"format": CHECKPOINT_FORMAT, "step": step,
                             "model": model.state_dict(),
                             "optimizer": optimizer.state_dict(),
                             "scheduler": scheduler.state_dict(),
                             "scaler": scaler.state_dict(), "best": best, "rng": states,
                             "config": config.to_dict()}, checkpoint_path)
    bar.close()
    run_log.close()
    return run_dir


def _scene_loss(model: MRVAE, low: torch.Tensor, high: torch.Tensor, config: TrainConfig,
                autocast: torch.dtype | None) -> torch.Tensor:
    """``scene.weight`` times GR's distance to the truth on whole scenes (the latent mean: the
    decision the global pass makes at run time)."""
    with torch.autocast(low.device.type, dtype=autocast, enabled=autocast is not None):
        global_image = model.reconstruct_global(low)[0]
    return config.scene.weight * distance(global_image.float(), high,
                                          config.loss.global_distance)
