"""The project's one training loop: one process or many (torchrun → DDP), AMP, EMA, atomic checkpoints.

A model returns ``(logits [B, classes], Z [B, N, K])`` (see :class:`grw.models.ClassifierOutput`); the
loop minimises ``CE(logits, y) + lam · grw_loss(Z, T, alpha)``, so ``lam = 0`` is the baseline.

The same code runs in a notebook kernel (one process) and under ``torchrun``::

    torchrun --nproc_per_node=8 -m grw.train kinetics --data-root /data/k600 --model a0 --stream ...

``batch_size`` is the global batch: each of the ``world_size`` processes takes its share, so one
process and G processes with the same configuration take the same optimisation steps.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import sys
import time
from collections.abc import Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm.auto import tqdm

from grw.loss import GRWLoss
from grw.metrics import topk_correct

__all__ = ["Predictions", "TrainConfig", "TrainResult", "evaluate", "fit", "predict", "save_atomic"]

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved in every checkpoint and in ``results.json``."""

    epochs: int = 10
    batch_size: int = 32  # global: split over the processes
    lr: float = 1e-3  # peak learning rate of everything outside ``model.backbone``
    backbone_lr: float | None = None  # peak learning rate of ``model.backbone``; None: same as lr
    min_lr_ratio: float = 0.01  # the cosine ends at lr · min_lr_ratio (paper: 1e-4 → 1e-6, 1e-3 → 1e-5)
    warmup_epochs: float = 0.0
    optimizer: Literal["adamw", "rmsprop"] = "adamw"
    weight_decay: float = 0.05
    lam: float = 0.0  # weight of the GRW loss; 0 trains the baseline
    alpha: float = 0.5
    T: int = 5
    max_perms: int = 1000
    label_smoothing: float = 0.0
    clip_grad_norm: float | None = None
    amp: Literal["none", "bf16", "fp16"] = "none"
    ema_decay: float | None = None
    sync_bn: bool = False
    seed: int = 0
    device: str = "cpu"
    num_workers: int = 0
    out_dir: str | None = None  # checkpoint, metrics.jsonl; nothing is written when None
    resume: bool = False
    progress: bool = True  # a progress bar per epoch (rank 0)
    log_epochs: bool = True  # one line of metrics per epoch (rank 0)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}")
        if self.lam < 0:
            raise ValueError(f"lam must be >= 0, got {self.lam}")
        if self.amp not in ("none", "bf16", "fp16") or self.optimizer not in ("adamw", "rmsprop"):
            raise ValueError(f"amp must be none|bf16|fp16 and optimizer adamw|rmsprop, got {self.amp!r}, {self.optimizer!r}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay}")


@dataclass
class TrainResult:
    """Per-epoch metrics, the trained model (unwrapped from DDP) and its EMA copy."""

    history: list[dict[str, Any]]
    model: nn.Module
    ema: nn.Module | None = None
    seconds: float = 0.0
    config: TrainConfig = field(default_factory=TrainConfig)


class Predictions(NamedTuple):
    """Model outputs over a dataset: ``logits [n, classes]``, ``embeddings [n, N, K]``, ``labels [n]``."""

    logits: Tensor
    embeddings: Tensor
    labels: Tensor


# --------------------------------------------------------------------------------------------
# Processes, seeds, files
# --------------------------------------------------------------------------------------------


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device: str) -> torch.device:
    """Join the process group that ``torchrun`` describes in the environment (NCCL on GPUs, gloo on CPU).

    Returns the device of this process (``cuda:LOCAL_RANK`` on GPUs). Without torchrun, does nothing.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    if device == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device(device)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` (or JSON text for a ``str``) to a temporary sibling, then rename into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        if isinstance(obj, str):
            tmp.write_text(obj)
        else:
            torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# Optimisation
# --------------------------------------------------------------------------------------------


def _param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Backbone vs the rest (separate peak learning rates), each split into decayed and non-decayed (biases, norms)."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            key = (name.startswith("backbone."), p.ndim > 1)
            groups.setdefault(key, []).append(p)
    backbone_lr = cfg.lr if cfg.backbone_lr is None else cfg.backbone_lr
    return [
        {"params": ps, "lr": backbone_lr if in_backbone else cfg.lr, "weight_decay": cfg.weight_decay if decay else 0.0}
        for (in_backbone, decay), ps in sorted(groups.items())
    ]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
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


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def _loader(data: Dataset, cfg: TrainConfig, *, train: bool, epoch: int, batch_size: int) -> DataLoader:
    rank, size = world()
    if train:
        # A DistributedSampler even for one process: its order depends only on (seed, epoch), so
        # one process and G processes see the same global batches, and a resumed run the same data.
        sampler = DistributedSampler(data, num_replicas=size, rank=rank, shuffle=True, seed=cfg.seed, drop_last=True)
        sampler.set_epoch(epoch)
    else:
        sampler = list(range(rank, len(data), size))  # type: ignore[arg-type]  # every sample once, no padding
    if hasattr(data, "set_epoch"):
        data.set_epoch(epoch)  # type: ignore[attr-defined]
    return DataLoader(
        data,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=cfg.num_workers,
        collate_fn=getattr(data, "collate_fn", None),
        drop_last=train,
        generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch),
        persistent_workers=False,
        pin_memory=cfg.device.startswith("cuda"),
    )


def _unpack(batch: Any) -> tuple[Tensor, Tensor, int]:
    """``(videos, labels)`` or ``(videos, labels, n_skipped)`` from a collate function."""
    if len(batch) == 3:
        return batch[0], batch[1], int(batch[2])
    return batch[0], batch[1], 0


def _forward(model: nn.Module, videos: Tensor) -> tuple[Tensor, Tensor | None]:
    out = model(videos)
    if isinstance(out, tuple):
        return out[0], out[1]
    return out, None


def _autocast(device: torch.device, amp: str) -> torch.autocast:
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None and device.type == "cuda")


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(
    model: nn.Module, data: Dataset, *, batch_size: int = 32, device: str | torch.device = "cpu", amp: str = "none"
) -> dict[str, float]:
    """Top-1, top-5 (%) and mean cross-entropy of ``model`` on ``data``; sums over all processes under DDP."""
    device = torch.device(device)
    cfg = TrainConfig(batch_size=batch_size, device=str(device))
    was_training = model.training
    model.eval()
    totals = torch.zeros(5, dtype=torch.float64)  # n, top1, top5, loss sum, skipped
    for batch in _loader(data, cfg, train=False, epoch=0, batch_size=batch_size):
        videos, labels, skipped = _unpack(batch)
        totals[4] += skipped
        if len(labels) == 0:
            continue
        videos, labels = videos.to(device, non_blocking=True), labels.to(device)
        with _autocast(device, amp):
            logits, _ = _forward(model, videos)
        correct = topk_correct(logits.float(), labels)
        totals[:4] += torch.tensor(
            [len(labels), correct[1], correct[5], F.cross_entropy(logits.float(), labels, reduction="sum").item()],
            dtype=torch.float64,
        )
    model.train(was_training)
    if world()[1] > 1:
        reduced = totals.to(device)
        dist.all_reduce(reduced)
        totals = reduced.cpu()
    n = max(totals[0].item(), 1.0)
    return {
        "top1": 100 * totals[1].item() / n,
        "top5": 100 * totals[2].item() / n,
        "loss": totals[3].item() / n,
        "n": int(totals[0]),
        "skipped": int(totals[4]),
    }


@torch.no_grad()
def predict(model: nn.Module, data: Dataset, *, batch_size: int = 32, device: str | torch.device = "cpu") -> Predictions:
    """Logits, embeddings ``Z`` and labels of ``model`` over ``data`` in order (one process)."""
    model.eval()
    outputs: list[tuple[Tensor, Tensor, Tensor]] = []
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=getattr(data, "collate_fn", None))
    for batch in loader:
        videos, labels, _ = _unpack(batch)
        logits, Z = _forward(model, videos.to(device))
        if Z is None:
            raise ValueError("predict needs a model that returns (logits, Z)")
        outputs.append((logits.float().cpu(), Z.float().cpu(), labels))
    logits, Z, labels = (torch.cat(parts) for parts in zip(*outputs))
    return Predictions(logits, Z, labels)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def _check_classes(model: nn.Module, data: Dataset) -> None:
    classes = getattr(data, "classes", None)
    head = getattr(getattr(model, "head", None), "classifier", None)
    if classes is not None and isinstance(head, nn.Linear) and head.out_features != len(classes):
        raise ValueError(
            f"the model classifies {head.out_features} classes but the data has {len(classes)}: "
            "build the model (or pick the checkpoint) for this dataset's classes"
        )


def fit(model: nn.Module, train_data: Dataset, val_data: Dataset | None, cfg: TrainConfig) -> TrainResult:
    """Train ``model`` on ``train_data`` and evaluate on ``val_data`` after every epoch.

    With ``cfg.out_dir`` set, every epoch ends with an atomic checkpoint and ``metrics.jsonl``;
    ``cfg.resume`` continues from the checkpoint there, exactly where it stopped.
    """
    started = time.perf_counter()
    device = init_distributed(cfg.device)
    rank, size = world()
    if cfg.batch_size % size:
        raise ValueError(f"batch_size={cfg.batch_size} must be divisible by the {size} processes")
    if not isinstance(train_data, Sized) or len(train_data) < cfg.batch_size:
        raise ValueError(f"the training set needs at least batch_size={cfg.batch_size} samples")
    _check_classes(model, train_data)
    seed_everything(cfg.seed)

    model.to(device)
    if cfg.sync_bn and size > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    net: nn.Module = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None) if size > 1 else model
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True) if cfg.ema_decay else None
    grw = GRWLoss(cfg.T, cfg.alpha, cfg.max_perms).to(device)

    optimizer = build_optimizer(model, cfg)
    steps_per_epoch = len(train_data) // cfg.batch_size
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, cfg.epochs * steps_per_epoch, warmup_steps, cfg.min_lr_ratio)
    )
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16" and device.type == "cuda")

    out_dir = Path(cfg.out_dir) if cfg.out_dir else None
    history: list[dict[str, Any]] = []
    first_epoch = 0
    if cfg.resume and out_dir and (out_dir / CHECKPOINT).exists():
        state = torch.load(out_dir / CHECKPOINT, map_location=device, weights_only=False)
        _check_resumable(state, cfg)
        model.load_state_dict(state["model"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        scaler.load_state_dict(state["scaler"])
        history, first_epoch = state["history"], state["epoch"] + 1
        _set_rng_state(state["rng"])

    for epoch in range(first_epoch, cfg.epochs):
        epoch_started = time.perf_counter()
        net.train()
        sums = torch.zeros(5, dtype=torch.float64)  # batches, loss, ce, grw, skipped
        loader = _loader(train_data, cfg, train=True, epoch=epoch, batch_size=cfg.batch_size // size)
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not cfg.progress or rank != 0, leave=False)
        for batch in bar:
            videos, labels, skipped = _unpack(batch)
            if len(labels) == 0:  # every video of this batch was unreadable
                if size > 1:  # the other processes wait for this one's gradients: stop rather than hang
                    raise RuntimeError(f"every video of a training batch on rank {rank} was unreadable: "
                                       "find them with `python -m grw kinetics check ROOT` and remove them")
                sums[4] += skipped
                continue
            videos, labels = videos.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with _autocast(device, cfg.amp):
                logits, Z = _forward(net, videos)
                ce = F.cross_entropy(logits.float(), labels, label_smoothing=cfg.label_smoothing)
            if cfg.lam > 0:
                if Z is None:
                    raise ValueError("lam > 0 needs a model that returns (logits, Z)")
                smooth = grw(Z)
            else:
                smooth = torch.zeros((), device=device)
            loss = ce + cfg.lam * smooth
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.clip_grad_norm:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            if ema is not None:
                ema.update_parameters(model)
            sums += torch.tensor([1, loss.item(), ce.item(), smooth.item(), skipped], dtype=torch.float64)
            bar.set_postfix(loss=f"{sums[1].item() / sums[0].item():.3f}")

        if size > 1:
            sums = sums.to(device)
            dist.all_reduce(sums)
            sums = sums.cpu()
        batches = max(sums[0].item(), 1.0)
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": sums[1].item() / batches,
            "train_ce": sums[2].item() / batches,
            "train_grw": sums[3].item() / batches,
            "skipped": int(sums[4]),
            "lr": schedule.get_last_lr()[-1],
        }
        if val_data is not None:
            scores = evaluate(model, val_data, batch_size=cfg.batch_size // size, device=device, amp=cfg.amp)
            record.update({f"val_{k}": v for k, v in scores.items()})
            if ema is not None:
                scores = evaluate(ema.module, val_data, batch_size=cfg.batch_size // size, device=device, amp=cfg.amp)
                record.update({f"ema_val_{k}": v for k, v in scores.items()})
        record["seconds"] = time.perf_counter() - epoch_started
        history.append(record)
        if cfg.log_epochs and rank == 0:
            tqdm.write(describe_epoch(record, cfg.epochs))
        if out_dir is not None and rank == 0:
            _save_checkpoint(out_dir, epoch, cfg, model, ema, optimizer, schedule, scaler, history)

    return TrainResult(history, model, ema.module if ema is not None else None, time.perf_counter() - started, cfg)


def describe_epoch(record: dict[str, Any], epochs: int) -> str:
    """One line per epoch: losses, skipped videos and the validation scores of the raw and EMA weights."""
    line = f"epoch {record['epoch']}/{epochs}  loss {record['train_loss']:.3f} (ce {record['train_ce']:.3f}, grw {record['train_grw']:.3f})"
    for prefix, name in (("val_", "val"), ("ema_val_", "ema val")):
        if f"{prefix}top1" in record:
            line += f"  {name} top-1 {record[f'{prefix}top1']:.1f} top-5 {record[f'{prefix}top5']:.1f}"
    skipped = record["skipped"] + record.get("val_skipped", 0)
    return line + (f"  skipped {skipped} unreadable" if skipped else "") + f"  ({record['seconds']:.0f} s)"


def _check_resumable(state: dict[str, Any], cfg: TrainConfig) -> None:
    saved = TrainConfig(**state["config"])
    differ = [
        f.name
        for f in dataclasses.fields(TrainConfig)
        if f.name not in ("epochs", "resume", "progress", "num_workers", "device", "out_dir")
        and getattr(saved, f.name) != getattr(cfg, f.name)
    ]
    if differ:
        raise ValueError(f"cannot resume: the checkpoint was trained with other settings for {', '.join(differ)}")


def _save_checkpoint(
    out_dir: Path,
    epoch: int,
    cfg: TrainConfig,
    model: nn.Module,
    ema: AveragedModel | None,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    history: list[dict[str, Any]],
) -> None:
    state = {
        "epoch": epoch,
        "config": dataclasses.asdict(cfg),
        "model": model.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "scaler": scaler.state_dict(),
        "history": history,
        "rng": _rng_state(),
    }
    save_atomic(state, out_dir / CHECKPOINT)
    save_atomic("".join(json.dumps(h) + "\n" for h in history), out_dir / METRICS)


# --------------------------------------------------------------------------------------------
# Kinetics: MoViNet + GRW head, the command line that torchrun launches
# --------------------------------------------------------------------------------------------


@dataclass
class KineticsSetup:
    """Data and model of a Kinetics run (the paper's A0-stream defaults: 50 frames at 5 fps, 172² crops)."""

    data_root: str
    model: str = "a0"
    stream: bool = True
    frames: int = 50
    fps: float = 5.0
    crop: int = 172
    embed_dim: int = 256
    head_depth: int = 1
    head_heads: int = 4
    head_dropout: float = 0.1
    head_drop_path: float = 0.1
    backbone_drop_path: float = 0.2
    init_checkpoint: str | None = None


def build_kinetics_model(setup: KineticsSetup, num_classes: int) -> nn.Module:
    """MoViNet backbone → linear → Z → LayerNorm → temporal Transformer head, optionally initialised from a file."""
    from grw.models import GRWVideoClassifier, TemporalTransformerHead
    from grw.models.movinet import create_movinet, load_movinet_pytorch_state_dict

    state = torch.load(setup.init_checkpoint, map_location="cpu", weights_only=False) if setup.init_checkpoint else None
    ours = isinstance(state, dict) and "model" in state and "config" in state  # a checkpoint of this loop
    movinet_classes = num_classes
    if state is not None and not ours:
        state = state.get("state_dict", state)
        movinet_classes = next(v.shape[0] for k, v in state.items() if k.startswith("classifier.3.") and k.endswith("weight"))
    backbone = create_movinet(
        setup.model, stream=setup.stream, num_classes=movinet_classes, stochastic_depth=setup.backbone_drop_path
    )
    head = TemporalTransformerHead(
        setup.embed_dim,
        num_classes,
        depth=setup.head_depth,
        num_heads=setup.head_heads,
        dropout=setup.head_dropout,
        stochastic_depth=setup.head_drop_path,
    )
    if state is not None and not ours:
        load_movinet_pytorch_state_dict(backbone, state)  # the published layout: the backbone and its classifier
    backbone.classifier = nn.Identity()  # the GRW head classifies; parameters without gradients would stall DDP
    model = GRWVideoClassifier(backbone, setup.embed_dim, head)
    if state is not None and ours:
        saved = state["model"]["head.classifier.weight"].shape[0]
        if saved != num_classes:
            raise ValueError(f"{setup.init_checkpoint} classifies {saved} classes but the data has {num_classes}")
        model.load_state_dict(state["model"])
    return model


def run_kinetics(setup: KineticsSetup, cfg: TrainConfig) -> TrainResult:
    """Train and evaluate MoViNet + GRW head on a Kinetics-layout folder; write results.json to ``cfg.out_dir``."""
    from grw.data.kinetics import kinetics_dataset

    common = dict(frames=setup.frames, fps=setup.fps, crop=setup.crop, seed=cfg.seed)
    train_set = kinetics_dataset(setup.data_root, "train", training=True, **common)
    val_set = kinetics_dataset(setup.data_root, "val", training=False, **common)
    seed_everything(cfg.seed)  # the same initial weights for every run of a seed, whatever ran before
    model = build_kinetics_model(setup, len(train_set.classes))
    result = fit(model, train_set, val_set, cfg)
    if cfg.out_dir and world()[0] == 0:
        final = result.history[-1]
        summary = {
            "setup": dataclasses.asdict(setup),
            "config": dataclasses.asdict(cfg),
            "classes": list(train_set.classes),
            "top1": final.get("val_top1"),
            "top5": final.get("val_top5"),
            "ema_top1": final.get("ema_val_top1"),
            "ema_top5": final.get("ema_val_top5"),
            "history": result.history,
            "world_size": world()[1],
            "seconds": result.seconds,
        }
        save_atomic(json.dumps(summary, indent=2) + "\n", Path(cfg.out_dir) / "results.json")
    return result


_SIMPLE_TYPES = {"int": int, "float": float, "str": str, "float | None": float, "str | None": str}


def _add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        required = f.default is dataclasses.MISSING
        default = None if required else f.default
        if f.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        elif str(f.type).startswith("Literal"):
            parser.add_argument(flag, default=default, choices=[c.strip(" '\"") for c in f.type[8:-1].split(",")])
        else:
            parser.add_argument(flag, type=_SIMPLE_TYPES[f.type], default=default, required=required)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m grw.train", description=__doc__.split("\n\n")[0])
    experiments = parser.add_subparsers(dest="experiment", required=True)
    kinetics = experiments.add_parser("kinetics", help="MoViNet + GRW on a Kinetics-layout folder")
    _add_dataclass_arguments(kinetics, KineticsSetup)
    _add_dataclass_arguments(kinetics, TrainConfig)
    return parser


def parse_kinetics_args(argv: list[str] | None = None) -> tuple[KineticsSetup, TrainConfig]:
    """``kinetics --data-root ROOT [options]`` → the run's setup and training configuration."""
    args = vars(_parser().parse_args(argv))
    args.pop("experiment")
    setup = KineticsSetup(**{f.name: args.pop(f.name) for f in dataclasses.fields(KineticsSetup)})
    return setup, TrainConfig(**args)


def kinetics_args(setup: KineticsSetup, cfg: TrainConfig) -> list[str]:
    """The inverse of :func:`parse_kinetics_args`: the command-line arguments that reproduce a run."""
    args = ["kinetics"]
    for obj in (setup, cfg):
        for f in dataclasses.fields(obj):
            value, flag = getattr(obj, f.name), f.name.replace("_", "-")
            if isinstance(value, bool):
                args.append(f"--{'' if value else 'no-'}{flag}")
            elif value is not None:
                args += [f"--{flag}", str(value)]
    return args


def torchrun_command(
    setup: KineticsSetup, cfg: TrainConfig, nproc_per_node: int, nnodes: int = 1, rdzv_endpoint: str = "localhost:29400"
) -> list[str]:
    """The ``torchrun`` command of this node for a run over ``nnodes`` × ``nproc_per_node`` processes."""
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc_per_node}"]
    if nnodes > 1:
        command += [f"--nnodes={nnodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}", "--rdzv-id=grw"]
    return command + ["-m", "grw.train", *kinetics_args(setup, cfg)]


def main(argv: list[str] | None = None) -> None:
    """``[torchrun …] python -m grw.train kinetics --data-root ROOT [options]``."""
    setup, cfg = parse_kinetics_args(argv)
    try:
        run_kinetics(setup, cfg)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
