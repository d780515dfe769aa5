"""Kinetics-600 recipe: MoViNet → per-frame linear → Z → LayerNorm → temporal Transformer head, with the GRW loss on Z.

``python -m grw train kinetics --data-root ROOT [options]``; the defaults are the paper's A0-stream
input (50 frames at 5 fps, 172² crops). ``--preset a0s|a1s|a2s|a3b`` takes the input, the MoViNet, the
head and T of a released model (:data:`PRESETS`) instead, and any option given explicitly wins; in a
notebook, :func:`preset_specs` gives the same specs. ``ROOT`` is a Kinetics-layout folder or manifest
(:func:`grw.data.kinetics.kinetics_dataset`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from grw.contracts import ClipDataset, Item
from grw.data.kinetics import KineticsAllClips, VideoTimestamps, kinetics_dataset, kinetics_videos, probe_timestamps
from grw.io import load_checkpoint, text_table, write_atomic
from grw.metrics import ClipVideoAccuracy
from grw.models import GRWVideoClassifier, TemporalTransformerHead
from grw.models.movinet import CONFIGS, create_movinet, load_movinet_pytorch_state_dict
from grw.options import check_fields, option
from grw.recipes import Recipe, Run, Smoothing, check_run, summarize
from grw.train import Batch, TrainConfig, collate_clips, fit, resolve_device, seed_everything, world

__all__ = ["PRESETS", "RECIPE", "KineticsData", "KineticsModel", "Preset", "build_model", "evaluate_checkpoint", "evaluate_clips",
           "get_preset", "load_evaluation_model", "preset_options", "preset_specs", "run"]


# --------------------------------------------------------------------------------------------
# Presets: the released GRW models of the paper's Table 1
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preset:
    """A released model: clips of ``frames`` (N) frames at ``fps``, each frame resized to ``resize``² then
    centre-cropped to ``crop``², pixels ``uint8 / 255`` without mean/std; GRW windows of ``T`` frames; MoViNet
    ``model`` (``"a0"`` … ``"a3"``), ``stream`` or base; the head (``embed_dim`` K, ``head_depth`` blocks,
    ``head_heads``, ``head_mlp_dim``). ``note`` says where each value comes from: "code" is the authors'
    repository (github.com/gilgoldm/grw-smoothing, ``grw_smoothing_models/backbones/movinets/<name>/``);
    "Table 1" their README's table (views 1 × N); "protocol" the 10-s evaluation clips of the reference
    notes (their evaluation takes ``--fps`` and ``--N`` as options, so the code does not fix them).
    """

    model: str
    stream: bool
    fps: float
    frames: int
    resize: int
    crop: int
    T: int
    note: str
    embed_dim: int = 256
    head_depth: int = 1
    head_heads: int = 4
    head_mlp_dim: int = 512


_INFERRED_HEAD = (
    "the head (not published; the recipe's defaults, those of the A0S test snapshot written by their code); "
    "a released snapshot stores its own T and head (grw.models.read_grw_snapshot)"
)

PRESETS: dict[str, Preset] = {
    "a0s": Preset("a0", True, 5.0, 50, 200, 172, T=5, note=(
        "code: MoViNet-A0 stream (a0s_backbone.py), resize 200 → crop 172 (a0s_test.py); Table 1: 50 frames; "
        "protocol: 5 fps; inferred: T = 5 (1 s at 5 fps; also the T of the A0S test snapshot written by their code) "
        f"and {_INFERRED_HEAD}")),
    "a1s": Preset("a1", True, 5.0, 50, 200, 172, T=5, note=(
        "code: MoViNet-A1 stream (a1s_backbone.py), resize 200 → crop 172 (a1s_test.py); Table 1: 50 frames; "
        f"protocol: 5 fps; inferred: T = 5 (1 s at 5 fps) and {_INFERRED_HEAD}")),
    "a2s": Preset("a2", True, 5.0, 50, 256, 224, T=5, note=(
        "code: MoViNet-A2 stream (a2s_backbone.py), resize 256 → crop 224 (a2s_test.py); Table 1: 50 frames; "
        f"protocol: 5 fps; inferred: T = 5 (1 s at 5 fps) and {_INFERRED_HEAD}")),
    "a3b": Preset("a3", False, 12.0, 120, 300, 256, T=6, note=(
        "code: MoViNet-A3 base, non-causal (a3b_backbone.py), resize 300 → crop 256 (a3b_test.py); "
        f"Table 1: 120 frames; protocol: 12 fps; inferred: T = 6 (0.5 s at 12 fps) and {_INFERRED_HEAD}")),
}


def get_preset(name: str) -> Preset:
    """The preset of a released model: ``"a0s"``, ``"a1s"``, ``"a2s"`` or ``"a3b"`` (any case)."""
    preset = PRESETS.get(name.lower()) if isinstance(name, str) else None
    if preset is None:
        raise ValueError(f"unknown preset {name!r}: expected one of {', '.join(PRESETS)}")
    return preset


# --------------------------------------------------------------------------------------------
# The recipe
# --------------------------------------------------------------------------------------------


@dataclass
class KineticsData:
    """Clips of a Kinetics-layout folder: one clip of ``frames`` frames at ``fps`` per video, ``crop``² pixels."""

    data_root: str = option(help="Kinetics-layout folder ROOT/{train,val}/<class>/<video> or a manifest of '<path> <label>' lines")
    frames: int = option(50, "frames per clip (paper: 50 for A0–A2, 120 for A3)", at_least=1, at_most=1000)
    fps: float = option(5.0, "frames per second of the clips (paper: 5 for A0–A2, 12 for A3)", above=0, at_most=240)
    crop: int = option(172, "side of the square crop (paper: 172 for A0/A1, 224 for A2, 256 for A3)", at_least=32,
                      at_most=1024)
    min_crop_area: float = option(0.08, "smallest area fraction of the training RandomResizedCrop (torchvision's 0.08)",
                                  above=0, at_most=1)

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass
class KineticsModel:
    """MoViNet backbone and the GRW temporal Transformer head."""

    model: str = option("a0", f"MoViNet variant: {', '.join(CONFIGS)}")
    stream: bool = option(True, "causal stream variant (--no-stream: base)")
    embed_dim: int = option(256, "width K of the per-frame embeddings Z", at_least=1, at_most=8192)
    head_depth: int = option(1, "Transformer blocks of the head", at_least=1, at_most=24)
    head_heads: int = option(4, "attention heads of the head (they divide --embed-dim)", at_least=1, at_most=64)
    head_mlp_dim: int | None = option(None, "hidden width of the MLP of the head's blocks (none: 2·K)", at_least=1,
                                      at_most=65_536)
    head_dropout: float = option(0.1, "dropout of the head", at_least=0, below=1)
    head_drop_path: float = option(0.1, "stochastic depth of the head's blocks", at_least=0, below=1)
    backbone_drop_path: float = option(0.2, "stochastic depth of the MoViNet blocks", at_least=0, below=1)
    init_checkpoint: str | None = option(None, "initial weights: a MoViNet-pytorch state dict or a checkpoint.pt of this engine")

    def __post_init__(self) -> None:
        check_fields(self)
        if self.model.lower() not in CONFIGS:
            raise ValueError(f"unknown MoViNet {self.model!r}: expected one of {', '.join(CONFIGS)}")
        if self.embed_dim % self.head_heads:
            raise ValueError(f"head_heads must divide embed_dim = {self.embed_dim}, got {self.head_heads}")


def build_model(spec: KineticsModel, num_classes: int) -> GRWVideoClassifier:
    """MoViNet backbone → linear → Z → LayerNorm → temporal Transformer head, optionally initialised from ``spec.init_checkpoint``."""
    state = load_checkpoint(spec.init_checkpoint) if spec.init_checkpoint else None  # tensors only: a file never runs code
    expected = "expected a MoViNet-pytorch state dict or a checkpoint.pt of this engine"
    if state is not None and not isinstance(state, dict):
        raise ValueError(f"{spec.init_checkpoint} holds a {type(state).__name__}: {expected}")
    ours = state is not None and "model" in state and "config" in state  # a checkpoint of the engine
    movinet_classes = num_classes
    if state is not None and not ours:
        state = state.get("state_dict", state)
        published = [v.shape[0] for k, v in state.items() if k.startswith("classifier.3.") and k.endswith("weight")]
        if not published:
            raise ValueError(f"{spec.init_checkpoint} has no MoViNet classifier weights (classifier.3.*.weight): {expected}")
        movinet_classes = published[0]
    backbone = create_movinet(spec.model, stream=spec.stream, num_classes=movinet_classes, stochastic_depth=spec.backbone_drop_path)
    head = TemporalTransformerHead(spec.embed_dim, num_classes, depth=spec.head_depth, num_heads=spec.head_heads,
                                   mlp_dim=spec.head_mlp_dim, dropout=spec.head_dropout, stochastic_depth=spec.head_drop_path)
    if state is not None and not ours:
        load_movinet_pytorch_state_dict(backbone, state)  # the published layout: the backbone and its classifier
    backbone.classifier = nn.Identity()  # the GRW head classifies; parameters without gradients would stall DDP
    model = GRWVideoClassifier(backbone, spec.embed_dim, head)
    if state is not None and ours:
        saved = state["model"]["head.classifier.weight"].shape[0]
        if saved != num_classes:
            raise ValueError(f"{spec.init_checkpoint} classifies {saved} classes but the data has {num_classes}")
        model.load_state_dict(state["model"])
    return model


def run(data: KineticsData, model: KineticsModel, smoothing: Smoothing, cfg: TrainConfig) -> Run:
    """Train on ``train``, validate on ``val`` every epoch; ``results.json`` in ``cfg.out_dir``."""
    check_run(data, smoothing, cfg)
    clips = dict(frames=data.frames, fps=data.fps, crop=data.crop, seed=cfg.seed)
    train_set = kinetics_dataset(data.data_root, "train", training=True, min_area=data.min_crop_area, **clips)
    val_set = kinetics_dataset(data.data_root, "val", training=False, **clips)
    seed_everything(cfg.seed)  # the same initial weights for every run of a seed, whatever ran before
    net = build_model(model, len(train_set.classes))
    result = fit(net, train_set, val_set, cfg, regularizer=smoothing.regularizer(), lam=smoothing.lam,
                 specs={"data": data, "model": model, "smoothing": smoothing})
    return Run(result, summarize(data, model, smoothing, cfg, result, classes=list(train_set.classes)))


def preset_options(name: str) -> dict[str, Any]:
    """The fields of :class:`KineticsData`, :class:`KineticsModel` and :class:`grw.recipes.Smoothing` that the preset
    ``name`` (:func:`get_preset`) sets, by field name.

    Its ``resize`` is for evaluation only: a training run validates on ``eval_resize(crop)``
    (:func:`grw.data.kinetics.eval_resize`), which is the resize of every preset.
    """
    preset = get_preset(name)
    return {"frames": preset.frames, "fps": preset.fps, "crop": preset.crop,
            "model": preset.model, "stream": preset.stream, "embed_dim": preset.embed_dim, "head_depth": preset.head_depth,
            "head_heads": preset.head_heads, "head_mlp_dim": preset.head_mlp_dim, "T": preset.T}


def preset_specs(name: str, *, data_root: str, **overrides: Any) -> tuple[KineticsData, KineticsModel, Smoothing]:
    """The data, model and smoothing specs of the preset ``name`` on ``data_root``, as ``--preset NAME`` sets them.

    ``overrides`` (fields of the three specs, e.g. ``frames=16, init_checkpoint="a0_stream.pth"``) win over
    the preset; the fields that neither sets keep their defaults. For :func:`grw.recipes.launch`.
    """
    specs = (KineticsData, KineticsModel, Smoothing)
    unknown = sorted(set(overrides) - {f.name for cls in specs for f in dataclasses.fields(cls)})
    if unknown:
        raise TypeError(f"no field {', '.join(unknown)} in KineticsData, KineticsModel or Smoothing (data_root is its own argument)")
    values = preset_options(name) | overrides | {"data_root": data_root}

    def spec(cls: type) -> Any:
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values})

    return spec(KineticsData), spec(KineticsModel), spec(Smoothing)


RECIPE = Recipe("kinetics", "MoViNet + GRW head on a Kinetics-layout folder (or its synthetic stand-in)",
                KineticsData, KineticsModel, run, presets=tuple(PRESETS), preset_options=preset_options)


# --------------------------------------------------------------------------------------------
# Evaluation: the paper's protocol
# --------------------------------------------------------------------------------------------


class _Numbered(Dataset):
    """``(index, item)`` for each item of ``data``, so that a batch knows its clips."""

    def __init__(self, data: ClipDataset) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[int, Item | None]:
        return index, self.data[index]


def _collate_numbered(pairs: list[tuple[int, Item | None]]) -> tuple[Batch, Tensor, Tensor]:
    """:func:`grw.train.collate_clips` of the items, the indices of the readable ones and of the unreadable ones."""
    readable = torch.tensor([index for index, item in pairs if item is not None], dtype=torch.long)
    unreadable = torch.tensor([index for index, item in pairs if item is None], dtype=torch.long)
    return collate_clips([item for _, item in pairs]), readable, unreadable


@torch.no_grad()
def evaluate_clips(
    model: nn.Module,
    data: ClipDataset,
    clip_video: Sequence[int] | Tensor,
    *,
    batch_size: int = 16,
    workers: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> dict[str, float | int]:
    """Clip top-1/top-5 and video top-1 of ``model`` (on ``device``) on every clip of ``data``, clip ``i`` of video ``clip_video[i]``.

    Each process scores the clips ``rank, rank + world, …`` (no padding, no duplicates) and the sums
    are all-reduced, so under torchrun every clip counts exactly once. Returns
    :meth:`grw.metrics.ClipVideoAccuracy.compute` (fractions) with ``unreadable_clips`` and
    ``unreadable_videos`` (the videos with a clip that could not be read).
    """
    device = resolve_device(device) if isinstance(device, str) else device
    clip_video = torch.as_tensor(clip_video, dtype=torch.long)
    if clip_video.shape != (len(data),):
        raise ValueError(f"expected the video index of each of the {len(data)} clips, got shape {tuple(clip_video.shape)}")
    rank, size = world()
    num_videos = int(clip_video.max()) + 1 if len(clip_video) else 0
    accuracy = ClipVideoAccuracy(num_videos, len(data.classes), device=device)
    failed = torch.zeros(num_videos, dtype=torch.float64, device=device)  # unreadable clips of each video
    nonfinite = torch.zeros((), dtype=torch.float64, device=device)  # clips whose logits are not finite
    loader = DataLoader(_Numbered(data), batch_size=batch_size, sampler=range(rank, len(data), size), num_workers=workers,
                        collate_fn=_collate_numbered, pin_memory=device.type == "cuda")
    was_training = model.training
    model.eval()
    for (videos, labels, _), readable, unreadable in tqdm(loader, desc="evaluating", leave=False,
                                                           disable=not progress or rank != 0):
        failed.index_add_(0, clip_video[unreadable].to(device), torch.ones(len(unreadable), dtype=torch.float64, device=device))
        if videos is not None:
            logits = model(videos.to(device, non_blocking=True)).logits.float()
            nonfinite += (~torch.isfinite(logits)).any(dim=1).sum()
            accuracy.update(logits, labels.to(device), clip_video[readable].to(device))
    model.train(was_training)
    accuracy.all_reduce()
    if size > 1:
        dist.all_reduce(failed)
        dist.all_reduce(nonfinite)
    if nonfinite > 0:
        raise ValueError(f"the model's logits are not finite on {int(nonfinite)} clips (damaged or diverged weights): "
                         "there is no accuracy to report")
    unreadable = {"unreadable_clips": int(failed.sum().item()), "unreadable_videos": int((failed > 0).sum().item())}
    return accuracy.compute() | unreadable


def _all_timestamps(paths: list[Path], *, workers: int, progress: bool) -> list[VideoTimestamps | None]:
    """:func:`grw.data.kinetics.probe_timestamps` of every video, each process reading its share ``rank::world``."""
    rank, size = world()
    mine = probe_timestamps(paths[rank::size], workers=workers, progress=progress and rank == 0)
    if size == 1:
        return mine
    shares: list[list[VideoTimestamps | None]] = [[] for _ in range(size)]
    dist.all_gather_object(shares, mine)
    return [shares[i % size][i // size] for i in range(len(paths))]


def _engine_model(path: Path, state: Any, num_classes: int, *, ema: bool, preset: Preset) -> nn.Module:
    """The model of a ``checkpoint.pt`` of this recipe, rebuilt from the model settings it records."""
    settings = state.get("settings") if isinstance(state, dict) else None
    if not isinstance(settings, dict) or "model" not in state:
        raise ValueError(f"{path} is neither a checkpoint.pt of `python -m grw train kinetics` nor a released GRW snapshot")
    saved = settings.get("model")
    if not isinstance(saved, dict):
        raise ValueError(f"{path} does not record the model it trained (its settings hold {sorted(settings)}; checkpoints "
                         "written before they stored the recipe's specs cannot be rebuilt): train it again")
    names = {f.name for f in dataclasses.fields(KineticsModel)}
    try:  # the recorded settings are checked like a command line's before anything is built from them
        spec = KineticsModel(**{name: value for name, value in saved.items() if name in names} | {"init_checkpoint": None})
    except ValueError as error:
        raise ValueError(f"{path} records model settings that cannot be used: {error}") from None
    if (spec.model, spec.stream) != (preset.model, preset.stream):
        raise ValueError(f"{path} holds MoViNet-{spec.model} {'stream' if spec.stream else 'base'}, but the preset is for "
                         f"MoViNet-{preset.model} {'stream' if preset.stream else 'base'}: choose the preset of its model")
    weights = state.get("ema") if ema else state["model"]
    if weights is None:
        raise ValueError(f"{path} holds no EMA weights (its run had no --ema-decay): evaluate its raw weights, without --ema")
    if ema:  # an AveragedModel state dict: module.* and n_averaged
        weights = {key.removeprefix("module."): value for key, value in weights.items() if key.startswith("module.")}
    model = build_model(spec, num_classes)
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        raise ValueError(f"the {'EMA' if ema else 'raw'} weights of {path} do not fit its model with {num_classes} classes: "
                         f"{str(error).strip().splitlines()[-1].strip()}") from None
    return model.eval()


def load_evaluation_model(checkpoint: str | Path, num_classes: int, *, ema: bool, preset: Preset) -> nn.Module:
    """The model of a released GRW snapshot or of a ``checkpoint.pt`` of this recipe, raw or EMA weights, in eval mode.

    A file that names pickled classes can only be one of the authors' snapshots, which
    :func:`grw.models.read_grw_snapshot` reads without running anything; every other file is read
    as tensors and plain values (:func:`grw.io.load_checkpoint`). Refuses a model of another variant than ``preset``'s.
    """
    from grw.models import read_grw_snapshot

    path = Path(checkpoint)
    try:
        pickled = torch.serialization.get_unsafe_globals_in_checkpoint(path)  # names only; nothing is unpickled
    except (RuntimeError, ValueError, OSError):
        pickled = []  # not a zip checkpoint: load_checkpoint says why
    if not pickled:
        return _engine_model(path, load_checkpoint(path), num_classes, ema=ema, preset=preset)
    snapshot = read_grw_snapshot(path)
    expected = f"{preset.model}{'s' if preset.stream else 'b'}"
    if snapshot.variant != expected:
        raise ValueError(f"{path} is a released {snapshot.variant} model, not {expected}: "
                         f"evaluate it with --preset {snapshot.variant}")
    if snapshot.head.num_classes != num_classes:
        raise ValueError(f"{path} classifies {snapshot.head.num_classes} classes but the data has {num_classes}")
    return snapshot.to_classifier(ema=ema)


def evaluate_checkpoint(
    checkpoint: str | Path,
    root: str | Path,
    split: str,
    preset: str | Preset,
    *,
    ema: bool = False,
    batch_size: int = 16,
    workers: int = 4,
    device: str = "cpu",
    json_path: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """``python -m grw kinetics evaluate``: the paper's evaluation of a checkpoint on the ``test`` or ``val`` split of ``root``.

    Every non-overlapping clip of the preset's frames at its fps (:class:`grw.data.kinetics.KineticsAllClips`)
    is one sample; clip top-1/top-5 (the authors' metric) and video top-1 are reported side by side.
    Returns (and on rank 0 prints, and writes to ``json_path``) ``preset, split, weights ("raw" | "ema"),
    videos`` (with at least one clip), ``clips, dropped_short, missing, unreadable`` (videos) and the
    accuracies ``top1, top5, video_top1`` as fractions.
    """
    if split not in ("test", "val"):
        raise ValueError(f"split must be test or val, got {split!r}")
    if not (1 <= batch_size <= 4096 and 0 <= workers <= 256):
        raise ValueError(f"expected a batch size from 1 to 4,096 and 0 to 256 workers, got {batch_size} and {workers}")
    chosen = preset if isinstance(preset, Preset) else get_preset(preset)  # a Preset: e.g. a stand-in's small input
    device = resolve_device(device)
    rank, _ = world()
    listing = kinetics_videos(root, split)
    model = load_evaluation_model(checkpoint, len(listing.classes), ema=ema, preset=chosen)  # a bad file: refused before any decoding
    if rank == 0:
        listing.log_omissions()
    timestamps = _all_timestamps(listing.paths, workers=workers, progress=progress)
    data = KineticsAllClips(listing, timestamps, frames=chosen.frames, fps=chosen.fps, crop=chosen.crop, resize=chosen.resize)
    scores = evaluate_clips(model.to(device), data, data.clip_video, batch_size=batch_size, workers=workers, device=device,
                            progress=progress)
    name = preset.lower() if isinstance(preset, str) else f"{chosen.model}{'s' if chosen.stream else 'b'}-like input"
    result = {"preset": name, "split": split, "weights": "ema" if ema else "raw", "videos": scores["videos"],
              "clips": scores["clips"], "dropped_short": len(data.dropped_short), "missing": len(data.missing),
              "unreadable": len(data.unreadable) + scores["unreadable_videos"],
              **{key: scores[key] for key in ("top1", "top5", "video_top1")}}
    if rank == 0:
        print(f"{result['preset']} on {root} ({split}, {result['weights']} weights; classes named by {data.classes_from})")
        scored = ("top1", "top5", "video_top1") if len(data.classes) > 5 else ("top1", "video_top1")  # top-5 of <= 5 classes: 100 %
        head = ("videos", "clips", "dropped short", "missing", "unreadable", *({"top1": "top-1 %", "top5": "top-5 %", "video_top1": "video top-1 %"}[key] for key in scored))
        counts = [result[key] for key in ("videos", "clips", "dropped_short", "missing", "unreadable")]
        print(text_table(head, [[*counts, *(f"{100 * result[key]:.2f}" for key in scored)]], "r" * len(head)))
        if json_path is not None:
            write_atomic(json_path, json.dumps(result, indent=2) + "\n")
    return result
