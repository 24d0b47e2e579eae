"""The shared training loop: train, fine-tune, distill, prune fine-tune, QAT, bit-wise, codebook.

A technique changes *what* is minimised by passing an `Objective`; the loop owns the rest:
optimizer and schedule, progress bar, evaluation, checkpoints every N steps, exact resumption, and
data parallelism. Under `torchrun` (WORLD_SIZE > 1) the same call wraps the trainable modules in
DistributedDataParallel (gloo on CPU, nccl on GPU), shards the data with a DistributedSampler and
evaluates, logs and checkpoints on rank 0 only.

Determinism: the data order of epoch e depends on (seed, e) only and the global RNG is re-seeded
from (seed, step, rank) before every step, so a run resumed from a checkpoint takes exactly the same
steps as one that was never interrupted.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from compress.config import to_dict
from compress.data import DataBundle
from compress.errors import CompressError, RecipeError
from compress.io import atomic_write_bytes
from compress.progress import progress
from compress.tasks import get_task
from compress.train.evaluate import evaluate


@dataclass
class TrainConfig:
    """How to train.

    Attributes:
        epochs: passes over the training split.
        batch_size: per process.
        optimizer: sgd (with momentum), adam or adamw.
        lr: peak learning rate.
        momentum: SGD momentum (Nesterov; sgd only).
        weight_decay: applied to conv/linear kernels; norms and biases too if `decay_norm_and_bias`.
        decay_norm_and_bias: apply weight decay to normalisation weights and biases as well.
        schedule: constant, cosine (to zero) or step (x0.1 at 50% and 75%), after a linear warmup.
        warmup_epochs: linear warmup length (fractions allowed).
        grad_clip: clip the global gradient norm to this value (None: no clipping).
        seed: drives data order and every random draw.
        checkpoint_every: steps between checkpoints (and one at each epoch end).
        eval_every: epochs between evaluations on the validation split (0: only at the end).
        device: auto (cuda when available), cpu or cuda.
        find_unused_parameters: for DDP when an objective leaves some parameters unused.
        deterministic: on CUDA, use deterministic kernels so a resumed run matches an uninterrupted one
            (slower; CPU training is deterministic either way).
        bn_recalibration: after training, re-estimate BatchNorm statistics over this many training batches
            (0: off). Running averages lag behind fast-changing weights in short schedules (fine-tuning
            after pruning, QAT, quick students); measured on digits, a 2-epoch student went from 16% to
            74% validation accuracy with it.
        augment: training-time augmentation of the training split's images, through torchvision
            transforms v2 (`compress.data.augment`): none, flip (horizontal, half the images) or crop_flip
            (a random-resized crop back to the input size, then the flip). Only training steps see it:
            never evaluation, calibration, BatchNorm recalibration or benchmarks. Each sample's draw
            depends on (seed, epoch, sample) only, so runs and resumed runs match. Set where a
            TrainConfig is exposed: plain training, fine-tuning after pruning and the distillation methods
            that feed the batch to both networks (kd, feature_mse, crd, guidance, msd, pcd); function
            matching makes its own views and refuses it; QAT and bit-wise training build their own
            (augment none). Dense tasks take flip only.
        crop_scale: crop_flip's range of crop areas, as fractions of the image.
        crop_ratio: crop_flip's range of crop aspect ratios (width / height).
    """

    epochs: int = 5
    batch_size: int = 64
    optimizer: Literal["sgd", "adam", "adamw"] = "adamw"
    lr: float = 2e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    decay_norm_and_bias: bool = False
    schedule: Literal["constant", "cosine", "step"] = "cosine"
    warmup_epochs: float = 0.0
    grad_clip: float | None = None
    seed: int = 0
    checkpoint_every: int = 50
    eval_every: int = 1
    device: Literal["auto", "cpu", "cuda"] = "auto"
    find_unused_parameters: bool = False
    deterministic: bool = True
    bn_recalibration: int = 32
    augment: Literal["none", "flip", "crop_flip"] = "none"
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("epochs must be >= 0, batch_size >= 1 and lr > 0")
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crop_scale: expected 0 < low <= high <= 1, got [{lo}, {hi}]")
        lo, hi = self.crop_ratio
        if not 0 < lo <= hi:
            raise ValueError(f"crop_ratio: expected 0 < low <= high, got [{lo}, {hi}]")
        self.crop_scale = (float(self.crop_scale[0]), float(self.crop_scale[1]))
        self.crop_ratio = (float(self.crop_ratio[0]), float(self.crop_ratio[1]))


@dataclass
class StepContext:
    """What an objective may want to know about the current step."""

    step: int
    epoch: int
    total_steps: int
    device: torch.device
    generator: torch.Generator
    world_size: int = 1
    rank: int = 0


class Objective:
    """What the loop minimises. Subclass it to distill, regularise, gate or quantize.

    `modules()` are trained with the model (projection heads, gates); `state_dict()` is saved in
    checkpoints (e.g. an adaptive penalty weight). `recalibrate_bn` lets an objective that trains on
    views unlike the plain training data opt out of the final BatchNorm recalibration; `own_views`
    says the objective augments its batches itself, so the loop refuses `TrainConfig.augment` with it.
    """

    recalibrate_bn: bool = True
    own_views: bool = False

    def modules(self) -> dict[str, nn.Module]:
        return {}

    def setup(self, model: nn.Module, device: torch.device) -> None:
        """Called once before training, after the model is on `device`."""

    def loss(
        self, model: nn.Module, aux: nn.ModuleDict, batch: tuple[torch.Tensor, ...], ctx: StepContext
    ) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def after_step(self, model: nn.Module, ctx: StepContext) -> None:
        """Called after each optimizer step (e.g. to re-apply a fixed sparsity mask)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class TaskObjective(Objective):
    """Plain supervised training with the task's loss."""

    def __init__(self, task: str) -> None:
        self.task = get_task(task)

    def loss(self, model, aux, batch, ctx):
        x, y = batch
        return self.task.loss(model(x), y), {}


class _Trainable(nn.Module):
    """Model + objective modules as one module, so DDP sees every trainable parameter."""

    def __init__(self, model: nn.Module, aux: dict[str, nn.Module], objective: Objective) -> None:
        super().__init__()
        self.model = model
        self.aux = nn.ModuleDict(aux)
        self._objective = [objective]

    def forward(self, batch, ctx):
        return self._objective[0].loss(self.model, self.aux, batch, ctx)


@dataclass
class TrainResult:
    metrics: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0
    resumed_from: int | None = None


def train(
    module: nn.Module,
    data: DataBundle,
    config: TrainConfig,
    *,
    objective: Objective | None = None,
    checkpoint: str | Path | None = None,
    description: str = "train",
    show_progress: bool = True,
) -> TrainResult:
    """Train `module` in place.

    Args:
        module: the network to train (left on the CPU, in eval mode, when done).
        data: its train split is used for steps, its val split for evaluation.
        config: optimizer, schedule, epochs, seed.
        objective: the loss; default: the task's own loss.
        checkpoint: file for periodic checkpoints; if it exists, training resumes from it.
        description: progress-bar label.
    """
    objective = objective or TaskObjective(data.task)
    if isinstance(objective, TaskObjective) and not getattr(data, "labelled", True):
        raise CompressError("the data has no labels (images:); train with labels, or distil from a teacher")
    world, rank = _dist_env()
    device = resolve_device(config.device)
    with _determinism(device.type == "cuda" and config.deterministic):
        return _train(module, data, config, objective, checkpoint, description, show_progress, world, rank, device)


@contextlib.contextmanager
def _determinism(on: bool):
    """Deterministic CUDA kernels for the duration of a training run; previous settings restored."""
    if not on:
        yield
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    saved = (
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
    )
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[0], saved[1]
        torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[4], saved[5]


def _train(module, data, config, objective, checkpoint, description, show_progress, world, rank, device):
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)

    module.to(device)
    aux = objective.modules()
    for m in aux.values():
        m.to(device)
    objective.setup(module, device)
    trainable = _Trainable(module, aux, objective)
    runner: nn.Module = trainable
    if world > 1:
        runner = nn.parallel.DistributedDataParallel(
            trainable,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=config.find_unused_parameters,
        )

    augmentation = _augmentation(config, data, objective)
    workers = getattr(data.config, "workers", 0)
    sampler = DistributedSampler(data.train, num_replicas=world, rank=rank, shuffle=True, seed=config.seed)
    steps_per_epoch = math.ceil(len(sampler) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    optimizer = _optimizer(trainable, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config, steps_per_epoch, total_steps))

    step, history, resumed_from = 0, [], None
    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    if ckpt_path is not None and ckpt_path.exists():
        state = _load_checkpoint(ckpt_path, config)
        try:
            trainable.model.load_state_dict(state["model"])
            trainable.aux.load_state_dict(state["aux"])
        except RuntimeError:
            raise RecipeError(
                f"{ckpt_path}: the interrupted run trained a different model; resume with the same model "
                "and settings, or use --force to start over"
            ) from None
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        objective.load_state_dict(state["objective"])
        step, history, resumed_from = state["step"], state["history"], state["step"]

    metrics: dict[str, float] = {}
    with progress(description, total_steps, show=show_progress and rank == 0) as bar:
        bar.advance(step)
        while step < total_steps:
            epoch, offset = divmod(step, steps_per_epoch)
            sampler.set_epoch(epoch)
            indices = list(sampler)[offset * config.batch_size :]
            loader = _loader(data.train, augmentation, indices, config, epoch, workers)
            trainable.train()
            for batch in loader:
                seed = (config.seed * 1_000_003 + step) * 64 + rank
                torch.manual_seed(seed)
                ctx = StepContext(step, epoch, total_steps, device, generator.manual_seed(seed), world, rank)
                batch = tuple(t.to(device, non_blocking=True) for t in batch)
                loss, logs = runner(batch, ctx)
                if not torch.isfinite(loss):
                    raise CompressError(f"training diverged at step {step} (loss {float(loss)}); lower the lr")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip:
                    nn.utils.clip_grad_norm_(trainable.parameters(), config.grad_clip)
                optimizer.step()
                scheduler.step()
                objective.after_step(module, ctx)
                step += 1
                bar.advance(1, epoch=epoch + 1, loss=float(loss.detach()), **{k: float(v) for k, v in logs.items()})
                end_of_epoch = step % steps_per_epoch == 0
                if end_of_epoch:
                    record = {
                        "epoch": epoch + 1,
                        "step": step,
                        "loss": float(loss.detach()),
                        "lr": scheduler.get_last_lr()[0],
                    }
                    last = step == total_steps
                    if rank == 0 and (last or (config.eval_every and (epoch + 1) % config.eval_every == 0)):
                        metrics = evaluate(module, data.val, data.task, device=device, workers=workers)
                        record.update({f"val_{k}": v for k, v in metrics.items() if k != "samples"})
                    history.append(record)
                if ckpt_path is not None and rank == 0 and (end_of_epoch or step % config.checkpoint_every == 0):
                    _save_checkpoint(ckpt_path, trainable, optimizer, scheduler, objective, step, history, config)
                if end_of_epoch:
                    break
    finished = config.bn_recalibration and objective.recalibrate_bn and step == total_steps and total_steps > 0
    if finished and recalibrate_batchnorm(
        module, data.train, config.bn_recalibration, config.batch_size, device, config.seed
    ):
        metrics = {}
        if history:
            history[-1]["bn_recalibrated"] = True
    if not metrics and rank == 0:
        metrics = evaluate(module, data.val, data.task, device=device, workers=workers)
        if history:
            history[-1].update({f"val_{k}": v for k, v in metrics.items() if k != "samples"})
    if world > 1:
        dist.barrier()
    module.to("cpu").eval()
    for m in aux.values():
        m.to("cpu")
    return TrainResult(metrics, history, step, resumed_from)


def _augmentation(config: TrainConfig, data: DataBundle, objective: Objective):
    """The v2 transform of `config.augment` for the training split, or None."""
    if config.augment == "none":
        return None
    if objective.own_views:
        raise RecipeError(
            f"augment {config.augment}: {type(objective).__name__} makes its own views of the training images "
            "(function matching's crops); leave augment at none"
        )
    from compress.data.augment import build_augmentation

    return build_augmentation(
        config.augment,
        tuple(data.input_shape),
        task=data.task,
        scale=config.crop_scale,
        ratio=config.crop_ratio,
        interpolation=getattr(data.config, "interpolation", None),
    )


def _loader(dataset, augmentation, indices: list[int], config: TrainConfig, epoch: int, workers: int) -> DataLoader:
    """The DataLoader of one epoch's remaining `indices`, in that order, augmented where configured.

    Worker processes (`DataConfig.workers`) return the batches in sampler order; their own seeds come
    from a generator fixed by (seed, epoch), not from the global one."""
    if augmentation is not None:
        from compress.data.augment import Augmented

        dataset = Augmented(dataset, augmentation, config.seed, epoch)
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    return DataLoader(dataset, batch_size=config.batch_size, sampler=indices, num_workers=workers, generator=generator)


@torch.no_grad()
def recalibrate_batchnorm(
    module: nn.Module,
    dataset,
    batches: int,
    batch_size: int,
    device: torch.device,
    seed: int = 0,
    view: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
) -> bool:
    """Re-estimate every BatchNorm's running statistics as a plain average over `batches` batches of a
    fixed random sample of `dataset`. The same on every rank, so DDP replicas stay identical.
    `view(x, i)` turns batch i into what the network trains on (function matching's views).
    Returns False when the module has no BatchNorm."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        return False
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    was_training = module.training
    module.train()
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[: batches * batch_size]
    try:
        for i, (x, *_) in enumerate(DataLoader(dataset, batch_size=batch_size, sampler=order.tolist())):
            x = x.to(device)
            module(view(x, i) if view is not None else x)
    finally:
        for m, momentum in zip(bns, momenta, strict=True):
            m.momentum = momentum
        module.train(was_training)
    return True


def _dist_env() -> tuple[int, int]:
    """(world size, rank) as torchrun sets them; (1, 0) otherwise."""
    return int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))


def resolve_device(choice: str) -> torch.device:
    """The device of this process. Under torchrun each process needs a GPU of its own: with `auto`,
    more local processes than GPUs means every process runs on the CPU (gloo), never a mix."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if choice == "cpu" or (choice == "auto" and gpus < max(local_world, 1)):
        return torch.device("cpu")
    if gpus == 0:
        raise CompressError("device 'cuda' requested but no CUDA device is available")
    if local_world > gpus:
        raise CompressError(
            f"{local_world} processes on this machine but {gpus} CUDA device(s): one process per GPU "
            "(--nproc-per-node), or device cpu"
        )
    return torch.device("cuda", local_rank)


def _optimizer(trainable: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for p in trainable.parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim > 1 or config.decay_norm_and_bias else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr)
    return torch.optim.AdamW(groups, lr=config.lr)


def _schedule(config: TrainConfig, steps_per_epoch: int, total: int):
    warmup = int(config.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if config.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        if config.schedule == "step":
            return 0.01 if progress >= 0.75 else 0.1 if progress >= 0.5 else 1.0
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _save_checkpoint(path, trainable, optimizer, scheduler, objective, step, history, config) -> None:
    state = {
        "step": step,
        "history": history,
        "config": to_dict(config),
        "model": trainable.model.state_dict(),
        "aux": trainable.aux.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "objective": objective.state_dict(),
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def _load_checkpoint(path: Path, config: TrainConfig) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unreadable file: say which one
        raise CompressError(f"{path}: unreadable training checkpoint ({str(e).splitlines()[0][:200]})") from None
    saved = state.get("config", {})
    now = to_dict(config)
    defaults = to_dict(TrainConfig())  # a setting newer than the checkpoint matches it at its default
    changed = [
        k for k in now if k not in ("checkpoint_every", "eval_every", "device") and saved.get(k, defaults[k]) != now[k]
    ]
    if changed:
        raise RecipeError(
            f"{path}: the interrupted run used different training settings ({changed[0]}: "
            f"{saved.get(changed[0])!r} != {now[changed[0]]!r}); resume with the same settings or use --force"
        )
    return state
