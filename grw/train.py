"""The training engine: any :class:`~grw.contracts.VideoClassifier` on any :class:`~grw.contracts.ClipDataset`.

It minimises ``CE(logits, y) + lam · regularizer(Z)``; the regularizer (a :class:`grw.GRWLoss`) is
passed in, as torchvision's reference scripts pass their ``criterion``, and ``None`` trains the
baseline. It knows no dataset and no backbone: the recipes in :mod:`grw.recipes` wire those in.

One process or many: under ``torchrun`` the entry point joins the process group
(:func:`init_distributed`) and the engine wraps the model in DDP. ``batch_size`` is the global batch,
so one process and G processes with the same configuration take the same optimisation steps.
Per-step losses stay on the device and are read once per ``log_interval`` steps and per epoch.

A run with an ``out_dir`` protects it: it refuses a folder that holds another run unless told to
continue it (``resume``) or start again (``overwrite``), keeps the checkpoint of the epoch before the
latest, stores every setting that defines the run and continues only with the same ones. It stops
with :class:`TrainingStopped` when its loss turns non-finite or most of an epoch's clips are unreadable.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn, update_bn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, default_collate
from tqdm.auto import tqdm

from grw.contracts import (
    ClipDataset,
    EpochAware,
    Item,
    Regularizer,
    VideoClassifier,
    check_dataset,
    check_model,
    check_output,
)
from grw.io import (
    UnreadableCheckpoint,
    check_unlocked,
    folder_lock,
    load_checkpoint,
    remove_temporaries,
    save_atomic,
    temporaries,
    write_atomic,
)
from grw.metrics import topk_correct
from grw.options import check_fields, option, run_defining

__all__ = [
    "Batch",
    "Predictions",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingStopped",
    "check_out_dir",
    "collate_clips",
    "evaluate",
    "fit",
    "init_distributed",
    "predict",
    "resolve_device",
    "run_settings",
    "save_checkpoint",
    "recompute_bn_statistics",
    "train_one_epoch",
    "warmup_cosine",
    "world",
]

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"  # the checkpoint of the epoch before the latest
SET_ASIDE = "checkpoint.set-aside.pt"  # the latest, moved here when a run continues from the previous
METRICS = "metrics.jsonl"
RESULTS = "results.json"  # written by the recipes
RUN_FILES = (CHECKPOINT, PREVIOUS, SET_ASIDE, METRICS, RESULTS)
SHOWN_UNREADABLE = 5  # unreadable samples named when an epoch is stopped for them


class TrainingStopped(RuntimeError):
    """A run stopped because continuing would train on garbage (a non-finite loss, mostly unreadable clips) or lose its
    work (a checkpoint that cannot be saved)."""


@dataclass
class TrainConfig:
    """Optimisation, precision, processes and output of a training run (saved in every checkpoint)."""

    epochs: int = option(10, "training epochs (a resumed run keeps them: its learning-rate schedule spans them)",
                         at_least=1, at_most=100_000)
    batch_size: int = option(32, "global batch size, split over the processes", at_least=1, at_most=65_536)
    lr: float = option(1e-3, "peak learning rate of the head (everything after the backbone)", above=0)
    backbone_lr: float | None = option(None, "peak learning rate of the backbone; none: the same as --lr", above=0)
    min_lr_ratio: float = option(0.01, "the cosine schedule ends at lr × this (paper: 1e-4 → 1e-6)", at_least=0, at_most=1)
    warmup_epochs: float = option(0.0, "epochs of linear learning-rate warm-up, at most --epochs", at_least=0)
    optimizer: Literal["adamw", "rmsprop"] = option("adamw", "optimizer")
    weight_decay: float = option(0.05, "decoupled weight decay of weights (not of biases and norms)", at_least=0)
    label_smoothing: float = option(0.0, "label smoothing of the cross-entropy", at_least=0, below=1)
    clip_grad_norm: float | None = option(None, "clip the gradient norm to this; none: no clipping", above=0)
    amp: Literal["none", "bf16", "fp16"] = option("none", "mixed precision on CUDA")
    ema_decay: float | None = option(None, "keep an exponential moving average of the weights with this decay (per step)",
                                     above=0, below=1)
    precise_bn: int = option(0, "before each evaluation, recompute the BatchNorm statistics of the raw and EMA weights "
                                "over this many training batches (0: off); for short runs, whose running statistics lag",
                             at_least=0, at_most=100_000)
    sync_bn: bool = option(False, "synchronise BatchNorm statistics across processes")
    seed: int = option(0, "seed of the weights, the data order and the augmentation", at_least=0)
    device: str = option("cpu", "cpu, cuda (each process takes cuda:LOCAL_RANK) or cuda:N", defines_run=False)
    num_workers: int = option(0, "data-loading processes per training process", defines_run=False, at_least=0,
                             at_most=256)
    log_interval: int = option(50, "steps between reads of the running loss (each read waits for the device; "
                                   "a non-finite loss stops the run there)", defines_run=False, at_least=1)
    out_dir: str | None = option(None, "folder for checkpoint.pt (checkpoint.prev.pt: the epoch before) and metrics.jsonl; "
                                 "none: write nothing", defines_run=False)
    resume: bool = option(False, "continue the run in --out-dir from its checkpoint (with the same settings)", defines_run=False)
    resume_previous: bool = option(False, "continue from checkpoint.prev.pt, the epoch before the latest (e.g. when the latest "
                                          "is damaged); the latest is kept as checkpoint.set-aside.pt", defines_run=False)
    overwrite: bool = option(False, "start again in an --out-dir that holds a run: its checkpoints, metrics and results "
                                    "are deleted", defines_run=False)
    max_unreadable: float = option(0.5, "stop when more than this share of an epoch's training clips is unreadable",
                                   defines_run=False, at_least=0, at_most=1)
    progress: bool = option(True, "a progress bar per epoch", defines_run=False)
    log_epochs: bool = option(True, "one line of metrics per epoch", defines_run=False)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs must be at most the run's epochs = {self.epochs}, got {self.warmup_epochs}")
        if self.amp not in ("none", "bf16", "fp16") or self.optimizer not in ("adamw", "rmsprop"):
            raise ValueError(f"amp must be none|bf16|fp16 and optimizer adamw|rmsprop, got {self.amp!r}, {self.optimizer!r}")
        if self.overwrite and (self.resume or self.resume_previous):
            raise ValueError("--overwrite starts the run in --out-dir again and --resume continues it: pass one of them")
        _parse_device(self.device)


@dataclass
class TrainResult:
    """Per-epoch metrics, the trained model (unwrapped from DDP) and its EMA copy."""

    history: list[dict[str, Any]]
    model: nn.Module
    ema: nn.Module | None = None
    seconds: float = 0.0
    config: TrainConfig = field(default_factory=TrainConfig)


class Batch(NamedTuple):
    """Readable ``videos [B', C, T, H, W]`` (``None`` when none was), ``labels [B']`` and how many items were unreadable."""

    videos: Tensor | None
    labels: Tensor
    skipped: int


class Predictions(NamedTuple):
    """Model outputs over a dataset: ``logits [n, classes]``, ``embeddings [n, N, K]``, ``labels [n]``."""

    logits: Tensor
    embeddings: Tensor
    labels: Tensor


# --------------------------------------------------------------------------------------------
# Processes and seeds
# --------------------------------------------------------------------------------------------


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device: str) -> None:
    """Join the process group ``torchrun`` describes in the environment (NCCL on GPUs, gloo on CPU); else nothing.

    On CUDA, each process takes the GPU of its ``LOCAL_RANK``. Called by entry points, not by the engine.
    """
    if resolve_device(device).type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")


def _parse_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"unknown device {name!r}: expected cpu, cuda or cuda:N") from error
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {name!r}: expected cpu, cuda or cuda:N")
    return device


def resolve_device(name: str) -> torch.device:
    """The device ``name`` (cpu, cuda or cuda:N) stands for, ``cuda`` being this process's GPU; a ValueError if absent."""
    device = _parse_device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {name!r} asked for, but torch sees no CUDA device; use --device cpu")
        if device.index is None:
            return torch.device("cuda", torch.cuda.current_device())
        if device.index >= count:
            raise ValueError(f"device {name!r} asked for, but torch sees {count} CUDA device(s): cuda:0 to cuda:{count - 1}")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    """The states of every random generator, as tensors and plain values (a checkpoint loads them without unpickling code)."""
    numpy = np.random.get_state(legacy=False)
    numpy["state"]["key"] = numpy["state"]["key"].tolist()
    state = {"python": random.getstate(), "numpy": numpy, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    numpy = state["numpy"]
    np.random.set_state(numpy | {"state": numpy["state"] | {"key": np.array(numpy["state"]["key"], dtype=np.uint32)}})
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def collate_clips(items: list[Item | None]) -> Batch:
    """Stack the readable items of a batch; ``None`` items (unreadable samples) are dropped and counted."""
    kept = [item for item in items if item is not None]
    if not kept:
        return Batch(None, torch.empty(0, dtype=torch.long), len(items))
    videos, labels = default_collate(kept)
    return Batch(videos, labels, len(items) - len(kept))


class _Numbered(Dataset):
    """``(index, item)`` for every item of ``data``, so that a training batch knows which of its samples were unreadable."""

    def __init__(self, data: Dataset) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[int, Item | None]:
        return index, self.data[index]


def _collate_numbered(pairs: list[tuple[int, Item | None]]) -> tuple[Batch, list[int]]:
    """:func:`collate_clips` of the items, and the dataset indices of the unreadable ones."""
    return collate_clips([item for _, item in pairs]), [index for index, item in pairs if item is None]


def _sample_names(data: Dataset, indices: list[int]) -> list[str]:
    """Where the samples ``indices`` of ``data`` come from: their files (a dataset's ``path(index)``), else their indices."""
    path = getattr(data, "path", None)
    return [str(path(i)) if callable(path) else f"sample {i}" for i in indices]


def _loader(data: Dataset, batch_size: int, *, train: bool, epoch: int, seed: int, num_workers: int, pin: bool) -> DataLoader:
    """Batches of ``data`` for this process; training batches come with the indices of their unreadable samples."""
    rank, size = world()
    if train:
        # A DistributedSampler even for one process: its order depends only on (seed, epoch), so
        # one process and G processes see the same global batches, and a resumed run the same data.
        sampler = DistributedSampler(data, num_replicas=size, rank=rank, shuffle=True, seed=seed, drop_last=True)
        sampler.set_epoch(epoch)
    else:
        sampler = list(range(rank, len(data), size))  # type: ignore[arg-type]  # every sample once, no padding
    if isinstance(data, EpochAware):
        data.set_epoch(epoch)
    return DataLoader(
        _Numbered(data) if train else data,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=_collate_numbered if train else collate_clips,
        drop_last=train,
        generator=torch.Generator().manual_seed(seed * 100_003 + epoch),
        pin_memory=pin,
    )


def _autocast(device: torch.device, amp: str) -> torch.autocast:
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None and device.type == "cuda")


def _all_reduce(totals: Tensor) -> Tensor:
    if world()[1] > 1:
        dist.all_reduce(totals)
    return totals


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(
    model: nn.Module, data: ClipDataset, *, batch_size: int = 32, device: str | torch.device = "cpu", amp: str = "none"
) -> dict[str, float]:
    """Top-1, top-5 (%) and mean cross-entropy of ``model`` on ``data``; sums over all processes under DDP."""
    device = resolve_device(device) if isinstance(device, str) else device
    was_training = model.training
    model.eval()
    totals = torch.zeros(5, dtype=torch.float64, device=device)  # n, top1, top5, loss sum, skipped
    loader = _loader(data, batch_size, train=False, epoch=0, seed=0, num_workers=0, pin=device.type == "cuda")
    for videos, labels, skipped in loader:
        totals[4] += skipped
        if videos is None:
            continue
        videos, labels = videos.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with _autocast(device, amp):
            logits = model(videos).logits.float()
        correct = topk_correct(logits, labels)
        totals[:4] += torch.stack([
            torch.tensor(len(labels), device=device), correct[1], correct[5], F.cross_entropy(logits, labels, reduction="sum")
        ]).double()
    model.train(was_training)
    n, top1, top5, loss, skipped = _all_reduce(totals).tolist()
    return {"top1": 100 * top1 / max(n, 1), "top5": 100 * top5 / max(n, 1), "loss": loss / max(n, 1),
            "n": int(n), "skipped": int(skipped)}


@torch.no_grad()
def predict(model: nn.Module, data: ClipDataset, *, batch_size: int = 32, device: str | torch.device = "cpu") -> Predictions:
    """Logits, embeddings ``Z`` and labels of ``model`` over the readable items of ``data``, in order (one process)."""
    model.eval()
    outputs: list[tuple[Tensor, Tensor, Tensor]] = []
    for videos, labels, _ in DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=collate_clips):
        if videos is not None:
            logits, Z = model(videos.to(device))
            outputs.append((logits.float().cpu(), Z.float().cpu(), labels))
    logits, Z, labels = (torch.cat(parts) for parts in zip(*outputs))
    return Predictions(logits, Z, labels)


# --------------------------------------------------------------------------------------------
# Optimisation
# --------------------------------------------------------------------------------------------


def _param_groups(model: VideoClassifier, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Backbone and head (their own peak learning rates), each split into decayed weights and non-decayed biases and norms."""
    lrs = {"backbone": cfg.lr if cfg.backbone_lr is None else cfg.backbone_lr, "head": cfg.lr}
    groups = []
    for name, params in model.parameter_groups().items():
        for decay in (True, False):
            chosen = [p for p in params if (p.ndim > 1) == decay]
            if chosen:
                groups.append({"params": chosen, "lr": lrs[name], "weight_decay": cfg.weight_decay if decay else 0.0})
    return groups


def build_optimizer(model: VideoClassifier, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or RMSprop over the backbone/head parameter groups."""
    groups = _param_groups(model, cfg)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups)
    return torch.optim.RMSprop(groups, alpha=0.9, eps=1e-3, momentum=0.9)  # the MoViNet-paper setting


def warmup_cosine(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Learning-rate factor: linear warm-up over ``warmup`` steps, then cosine from 1 to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


class Trainer:
    """What one optimisation step needs: the (DDP-wrapped) model, optimizer, schedule, gradient scaler, EMA and the loss.

    ``trainer.step(videos, labels)`` runs forward, ``CE + lam · regularizer(Z)``, backward, the optimizer,
    the schedule and the EMA, and returns ``[loss, ce, regularizer]`` detached on the device (no host sync).
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        *,
        steps_per_epoch: int,
        regularizer: Regularizer | None = None,
        lam: float = 1.0,
        device: torch.device | None = None,
    ) -> None:
        if not math.isfinite(lam) or lam < 0:
            raise ValueError(f"lam must be a finite number >= 0, got {lam}")
        self.cfg, self.regularizer, self.lam = cfg, regularizer, lam
        self.device = device or resolve_device(cfg.device)
        self.model = model.to(self.device)
        if isinstance(regularizer, nn.Module):
            regularizer.to(self.device)
        size = world()[1]
        if cfg.sync_bn and size > 1:
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        ids = [self.device] if self.device.type == "cuda" else None
        self.net: nn.Module = DistributedDataParallel(self.model, device_ids=ids) if size > 1 else self.model
        self.ema = (AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
                    if cfg.ema_decay else None)
        self.optimizer = build_optimizer(model, cfg)  # type: ignore[arg-type]
        total, warmup = cfg.epochs * steps_per_epoch, round(cfg.warmup_epochs * steps_per_epoch)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: warmup_cosine(s, total, warmup, cfg.min_lr_ratio)
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.amp == "fp16" and self.device.type == "cuda")

    def step(self, videos: Tensor, labels: Tensor) -> Tensor:
        """One optimisation step on ``videos [B, C, T, H, W]``, ``labels [B]``: ``[loss, ce, regularizer]`` on the device."""
        with _autocast(self.device, self.cfg.amp):
            logits, Z = self.net(videos)
            ce = F.cross_entropy(logits.float(), labels, label_smoothing=self.cfg.label_smoothing)
        smooth = self.regularizer(Z) if self.regularizer is not None else torch.zeros((), device=self.device)
        loss = ce + self.lam * smooth
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.clip_grad_norm:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.schedule.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return torch.stack([loss, ce, smooth]).detach()

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue exactly (the random generators included)."""
        return {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": _rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.model.load_state_dict(state["model"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])


# --------------------------------------------------------------------------------------------
# Epochs, checkpoints, the whole run
# --------------------------------------------------------------------------------------------


def _describe_settings(trainer: Trainer) -> str:
    settings = run_defining(trainer.cfg) | {"lam": trainer.lam, "regularizer": trainer.regularizer}
    return ", ".join(f"{name}={value}" for name, value in settings.items())


def _stop_unless_finite(loss: float, trainer: Trainer, epoch: int, checked: int, step: int) -> None:
    """Stop the run if the running loss of ``epoch`` (from 0), finite at step ``checked`` and read at ``step``, is not finite."""
    if not math.isfinite(loss):
        raise TrainingStopped(
            f"the training loss became {loss} in epoch {epoch + 1}, after step {checked} and by step {step} (it is read "
            f"every --log-interval {trainer.cfg.log_interval} steps); settings: {_describe_settings(trainer)}; "
            "a lower --lr or a --clip-grad-norm may help")


def recompute_bn_statistics(model: nn.Module, data: ClipDataset, trainer: Trainer, epoch: int) -> None:
    """Set ``model``'s BatchNorm running statistics to their mean over ``cfg.precise_bn`` training batches of ``epoch``.

    "Precise BN" (``torch.optim.swa_utils.update_bn``): a BatchNorm running average moves by its momentum
    per step (1 % in MoViNet), so after a short run it still remembers its initial statistics and the
    evaluation-mode network is off. Each process averages over its own shard of the batches.
    """
    cfg, (_, size) = trainer.cfg, world()
    if not cfg.precise_bn or not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return
    loader = _loader(data, cfg.batch_size // size, train=True, epoch=epoch, seed=cfg.seed, num_workers=cfg.num_workers,
                     pin=trainer.device.type == "cuda")
    videos = (batch.videos for batch, _ in itertools.islice(loader, cfg.precise_bn) if batch.videos is not None)
    with _autocast(trainer.device, cfg.amp):
        update_bn(videos, model, device=trainer.device)


def train_one_epoch(trainer: Trainer, data: ClipDataset, epoch: int) -> dict[str, Any]:
    """Train one epoch; returns its mean loss, cross-entropy and regularizer, skipped samples and last learning rate.

    Raises :class:`TrainingStopped` when the running loss (read every ``log_interval`` steps and at the
    end) is not finite, or when more than ``max_unreadable`` of the epoch's training clips were unreadable.
    """
    cfg, device = trainer.cfg, trainer.device
    rank, size = world()
    trainer.net.train()
    loader = _loader(data, cfg.batch_size // size, train=True, epoch=epoch, seed=cfg.seed, num_workers=cfg.num_workers,
                     pin=device.type == "cuda")
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # batches, loss, ce, regularizer
    clips, unreadable = 0, []  # this process's samples, and the indices of its unreadable ones
    checked = 0  # the step at which the running loss was last read
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not cfg.progress or rank != 0, leave=False)
    for step, ((videos, labels, skipped), failed) in enumerate(bar, start=1):
        clips += len(labels) + skipped
        unreadable += failed
        if videos is None:  # every sample of this batch was unreadable
            if size > 1:  # the other processes wait for this one's gradients: stop rather than hang
                raise TrainingStopped(f"every video of a training batch on rank {rank} was unreadable: "
                                      "find them with `python -m grw kinetics check ROOT` and remove them")
            continue
        videos, labels = videos.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        sums += torch.cat([torch.ones(1, device=device), trainer.step(videos, labels)]).double()
        if step % cfg.log_interval == 0:
            running = (sums[1] / sums[0]).item()  # the one host sync of an interval
            _stop_unless_finite(running, trainer, epoch, checked, step)
            checked = step
            bar.set_postfix(loss=f"{running:.3f}")
    counts = torch.tensor([clips, len(unreadable)], dtype=torch.float64, device=device)
    batches, loss, ce, smooth, clips, skipped = _all_reduce(torch.cat([sums, counts])).tolist()
    if skipped > cfg.max_unreadable * clips:
        shown = ", ".join(_sample_names(data, unreadable[:SHOWN_UNREADABLE])) or "on the other processes"
        raise TrainingStopped(
            f"{skipped:.0f} of the {clips:.0f} training clips of epoch {epoch + 1} were unreadable, more than "
            f"--max-unreadable {cfg.max_unreadable:g} of them (the first: {shown}); "
            "find them all with `python -m grw kinetics check ROOT`")
    _stop_unless_finite(loss, trainer, epoch, checked, len(loader))
    batches = max(batches, 1.0)
    return {"epoch": epoch + 1, "train_loss": loss / batches, "train_ce": ce / batches, "train_grw": smooth / batches,
            "skipped": int(skipped), "lr": trainer.schedule.get_last_lr()[-1]}


def run_settings(
    cfg: TrainConfig, regularizer: Regularizer | None, lam: float, specs: Mapping[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """Every setting that makes a run what it is, by role: ``config``, ``loss`` and each of ``specs``.

    ``specs`` are dataclasses of :func:`grw.options.option` fields (a recipe's data, model and
    smoothing); fields declared ``defines_run=False`` (display, paths, length) are left out.
    """
    return {"config": run_defining(cfg), "loss": {"lam": lam, "regularizer": repr(regularizer)},
            **{role: run_defining(spec) for role, spec in (specs or {}).items()}}


def _changed_settings(saved: dict[str, dict[str, Any]], now: dict[str, dict[str, Any]]) -> list[str]:
    """``role.name (value there, value now)`` for every setting of ``now`` or ``saved`` whose value differs."""
    there, here = ({f"{role}.{name}": value for role, values in settings.items() for name, value in values.items()}
                   for settings in (saved, now))
    shown = lambda values, name: repr(values[name]) if name in values else "unset"  # noqa: E731
    names = [*here, *(name for name in there if name not in here)]
    return [f"{name} ({shown(there, name)} there, {shown(here, name)} now)"
            for name in names if name not in there or name not in here or there[name] != here[name]]


def check_out_dir(cfg: TrainConfig) -> None:
    """Refuse an ``out_dir`` that another run is using, or that holds a run's checkpoint unless ``cfg`` continues it
    (resume) or starts it again (overwrite)."""
    if cfg.out_dir is not None and world()[0] == 0:
        check_unlocked(cfg.out_dir)
    if cfg.out_dir is None or cfg.resume or cfg.resume_previous or cfg.overwrite:
        return
    found = next((name for name in (CHECKPOINT, PREVIOUS) if (Path(cfg.out_dir) / name).exists()), None)
    if found is not None:
        raise ValueError(f"{cfg.out_dir} holds the checkpoint of a run ({found}): pass --resume to continue it, or "
                         "--overwrite to start again (its checkpoints, metrics and results are deleted)")


def _previous_advice(previous: Path) -> str:
    """What to do when the latest checkpoint cannot be used: continue from ``previous`` if it is readable, else start again."""
    if not previous.is_file():
        return "there is no previous checkpoint: pass --overwrite to start again"
    try:
        epoch = load_checkpoint(previous)["epoch"]
    except (UnreadableCheckpoint, KeyError, TypeError) as error:
        return f"the previous checkpoint cannot be used either ({error}): pass --overwrite to start again"
    return f"the previous checkpoint {previous} (after epoch {epoch}) is readable: pass --resume-previous to continue from it"


def _resume_state(cfg: TrainConfig, settings: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The checkpoint state (on the CPU) this run continues from, ``None`` to start afresh; refuses a run it cannot start."""
    check_out_dir(cfg)
    if cfg.out_dir is None or not (cfg.resume or cfg.resume_previous):
        return None
    latest, previous = Path(cfg.out_dir) / CHECKPOINT, Path(cfg.out_dir) / PREVIOUS
    interrupted = _interrupted_save(Path(cfg.out_dir))
    if interrupted is not None and not cfg.resume_previous:
        latest = interrupted  # the newest epoch, complete: _claim_out_dir gives it its name
    path = previous if cfg.resume_previous else latest
    if cfg.resume_previous and not previous.is_file():
        raise FileNotFoundError(f"cannot continue from the previous checkpoint: there is no {previous}")
    if not path.is_file():
        if previous.is_file():  # stopped between the two renames of a save
            raise UnreadableCheckpoint(f"cannot resume: there is no {latest}; {_previous_advice(previous)}")
        return None  # nothing to continue yet: the run starts
    try:
        state = load_checkpoint(path)
    except UnreadableCheckpoint as error:
        advice = "" if path == previous else f"; {_previous_advice(previous)}"
        raise UnreadableCheckpoint(f"cannot resume: {error}{advice}") from error
    if not (isinstance(state, dict) and "settings" in state and "history" in state):
        raise UnreadableCheckpoint(f"cannot resume: {path} is not a checkpoint of this engine (no settings or history)")
    changed = _changed_settings(state["settings"], settings)
    if changed:
        raise ValueError(f"cannot resume: {path} was trained with other settings: {', '.join(changed)}; "
                         "pass --overwrite to start again with these")
    return state


def _interrupted_save(out_dir: Path) -> Path | None:
    """The complete checkpoint a save left under its temporary name when it stopped between its two renames (the latest
    already renamed to previous): it was on disk before the first rename. ``None`` where there is none."""
    if (out_dir / CHECKPOINT).exists() or not (out_dir / PREVIOUS).exists():
        return None
    for candidate in temporaries(out_dir / CHECKPOINT):
        try:
            state = load_checkpoint(candidate)
        except UnreadableCheckpoint:
            continue  # a save killed while writing: half a file
        if isinstance(state, dict) and "history" in state:
            return candidate
    return None


def _claim_out_dir(out_dir: Path, cfg: TrainConfig) -> None:
    """Make ``out_dir`` this run's before its first epoch: an interrupted save finished (or, continuing from the previous
    checkpoint, set aside), no stale temporaries, nothing left of a run it replaces."""
    out_dir.mkdir(parents=True, exist_ok=True)
    interrupted = None if cfg.overwrite else _interrupted_save(out_dir)
    if interrupted is not None:
        os.replace(interrupted, out_dir / (SET_ASIDE if cfg.resume_previous else CHECKPOINT))
    for name in RUN_FILES:
        remove_temporaries(out_dir / name)
    if cfg.overwrite:
        for name in RUN_FILES:
            (out_dir / name).unlink(missing_ok=True)
    elif cfg.resume_previous and (out_dir / CHECKPOINT).exists():
        os.replace(out_dir / CHECKPOINT, out_dir / SET_ASIDE)  # kept, not lost; the next save must not make it "previous"


def save_checkpoint(
    out_dir: Path, trainer: Trainer, history: list[dict[str, Any]], settings: dict[str, dict[str, Any]], seconds: float = 0.0,
) -> None:
    """Write ``checkpoint.pt`` (the whole state after ``history[-1]`` and the ``seconds`` of training so far; the one it
    replaces becomes ``checkpoint.prev.pt``) and ``metrics.jsonl``."""
    state = {"epoch": len(history), "config": dataclasses.asdict(trainer.cfg), "settings": settings, "history": history,
             "seconds": seconds, **trainer.state_dict()}
    try:
        save_atomic(state, out_dir / CHECKPOINT, previous=out_dir / PREVIOUS)
        _write_metrics(out_dir, history)
    except (OSError, RuntimeError) as error:  # torch.save reports a full disk as a RuntimeError
        kept = f"the checkpoint of epoch {len(history) - 1} is intact" if len(history) > 1 else "no checkpoint was written"
        raise TrainingStopped(f"could not save epoch {len(history)} into {out_dir} ({' '.join(str(error).split())}); "
                              f"{kept}: free space and pass --resume") from error


def _write_metrics(out_dir: Path, history: list[dict[str, Any]]) -> None:
    write_atomic(out_dir / METRICS, "".join(json.dumps(h) + "\n" for h in history))


def describe_epoch(record: dict[str, Any], epochs: int, *, top5: bool = True) -> str:
    """One line per epoch: losses, skipped videos and the validation scores of the raw and EMA weights.

    ``top5=False`` leaves top-5 out (with five classes or fewer it is 100 % by construction).
    """
    line = f"epoch {record['epoch']}/{epochs}  loss {record['train_loss']:.3f} (ce {record['train_ce']:.3f}, grw {record['train_grw']:.3f})"
    for prefix, name in (("val_", "val"), ("ema_val_", "ema val")):
        if f"{prefix}top1" in record:
            line += f"  {name} top-1 {record[f'{prefix}top1']:.1f}" + (f" top-5 {record[f'{prefix}top5']:.1f}" if top5 else "")
    skipped = record["skipped"] + record.get("val_skipped", 0)
    return line + (f"  skipped {skipped} unreadable" if skipped else "") + f"  ({record['seconds']:.0f} s)"


def fit(
    model: nn.Module,
    train_data: ClipDataset,
    val_data: ClipDataset | None,
    cfg: TrainConfig,
    *,
    regularizer: Regularizer | None = None,
    lam: float = 1.0,
    specs: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Train ``model`` on ``train_data`` with ``CE + lam · regularizer(Z)`` and evaluate on ``val_data`` after every epoch.

    ``regularizer=None`` trains the baseline. With ``cfg.out_dir`` set, every epoch ends with an atomic
    checkpoint and ``metrics.jsonl``; ``cfg.resume`` continues from the checkpoint there, exactly, and a
    folder that holds a run needs it or ``cfg.overwrite`` (:func:`check_out_dir`).
    ``specs`` (a recipe's data, model and smoothing dataclasses) define the run too: they are saved in
    every checkpoint and a resumed run must have the same (see :func:`run_settings`). A folder is one run's: while a
    run trains in ``cfg.out_dir`` it holds the folder's lock, and a second run there is refused at once.
    ``TrainResult.seconds`` counts every process of a resumed run.
    """
    started = time.perf_counter()
    rank, size = world()
    settings = run_settings(cfg, regularizer, lam, specs)
    state = _resume_state(cfg, settings)  # before any data is read
    first = check_dataset(train_data, "training")
    if val_data is not None:
        check_dataset(val_data, "validation")
    check_model(model, train_data.classes)
    if cfg.batch_size % size:
        raise ValueError(f"batch_size={cfg.batch_size} must be divisible by the {size} processes")
    if len(train_data) < cfg.batch_size:
        raise ValueError(f"the training set needs at least batch_size={cfg.batch_size} samples, has {len(train_data)}")
    seed_everything(cfg.seed)
    trainer = Trainer(model, cfg, steps_per_epoch=len(train_data) // cfg.batch_size, regularizer=regularizer, lam=lam)
    _check_first_item(trainer, train_data, first)

    history: list[dict[str, Any]] = []
    before = 0.0  # seconds of the processes this run continues
    if state is not None:
        trainer.load_state_dict(state)
        history, before = state["history"], float(state.get("seconds", 0.0))
    out_dir = Path(cfg.out_dir) if cfg.out_dir else None
    if size > 1 and state is not None:
        dist.barrier()  # every process has read the checkpoint before rank 0 renames files in the folder
    # the folder is this run's from here on (checks passed, nothing written before): a second run there is refused
    with folder_lock(out_dir) if out_dir is not None and rank == 0 else contextlib.nullcontext():
        if out_dir is not None and rank == 0:
            _claim_out_dir(out_dir, cfg)
            if state is not None:  # a stop after the checkpoint and before its metrics line loses nothing
                _write_metrics(out_dir, history)
        for epoch in range(len(history), cfg.epochs):
            epoch_started = time.perf_counter()
            record = train_one_epoch(trainer, train_data, epoch)
            if val_data is not None:
                evaluation = dict(batch_size=cfg.batch_size // size, device=trainer.device, amp=cfg.amp)
                ema = trainer.ema.module if trainer.ema is not None else None
                for prefix, weights in (("val_", trainer.model), ("ema_val_", ema)):
                    if weights is not None:
                        recompute_bn_statistics(weights, train_data, trainer, epoch)
                        record |= {prefix + k: v for k, v in evaluate(weights, val_data, **evaluation).items()}
            record["seconds"] = time.perf_counter() - epoch_started
            history.append(record)
            if cfg.log_epochs and rank == 0:
                tqdm.write(describe_epoch(record, cfg.epochs, top5=model.num_classes > 5))
            if out_dir is not None and rank == 0:
                save_checkpoint(out_dir, trainer, history, settings, before + time.perf_counter() - started)
    ema = trainer.ema.module if trainer.ema is not None else None
    return TrainResult(history, trainer.model, ema, before + time.perf_counter() - started, cfg)


def _check_first_item(trainer: Trainer, data: ClipDataset, first: Item | None) -> None:
    """Run the model on the first readable item before any work: the output contract and the regularizer's needs (N >= T)."""
    later = (item for item in map(data.__getitem__, range(1, min(len(data), 8))) if item is not None)
    item = first if first is not None else next(later, None)  # each item read once: reading a video decodes it
    if item is None:
        return
    video = item[0][None].to(trainer.device)
    with torch.no_grad(), _autocast(trainer.device, trainer.cfg.amp):
        was_training = trainer.model.training
        logits, Z = check_output(trainer.model.eval()(video), 1, trainer.model.num_classes)  # type: ignore[arg-type]
        trainer.model.train(was_training)
        if trainer.regularizer is not None:
            trainer.regularizer(Z.expand(2, -1, -1))
