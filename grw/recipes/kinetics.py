"""Kinetics-600 recipe: MoViNet → per-frame linear → Z → LayerNorm → temporal Transformer head, with the GRW loss on Z.

``python -m grw train kinetics --data-root ROOT [options]``; the defaults are the paper's A0-stream
input (50 frames at 5 fps, 172² crops). ``ROOT`` is a Kinetics-layout folder or manifest
(:func:`grw.data.kinetics.kinetics_dataset`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from grw.data.kinetics import kinetics_dataset
from grw.models import GRWVideoClassifier, TemporalTransformerHead
from grw.models.movinet import CONFIGS, create_movinet, load_movinet_pytorch_state_dict
from grw.options import option
from grw.recipes import Recipe, Run, Smoothing, summarize
from grw.train import TrainConfig, fit, seed_everything

__all__ = ["RECIPE", "KineticsData", "KineticsModel", "build_model", "run"]


@dataclass
class KineticsData:
    """Clips of a Kinetics-layout folder: one clip of ``frames`` frames at ``fps`` per video, ``crop``² pixels."""

    data_root: str = option(help="Kinetics-layout folder ROOT/{train,val}/<class>/<video> or a manifest of '<path> <label>' lines")
    frames: int = option(50, "frames per clip (paper: 50 for A0–A2, 120 for A3)")
    fps: float = option(5.0, "frames per second of the clips (paper: 5 for A0–A2, 12 for A3)")
    crop: int = option(172, "side of the square crop (paper: 172 for A0/A1, 224 for A2, 256 for A3)")


@dataclass
class KineticsModel:
    """MoViNet backbone and the GRW temporal Transformer head."""

    model: str = option("a0", f"MoViNet variant: {', '.join(CONFIGS)}")
    stream: bool = option(True, "causal stream variant (--no-stream: base)")
    embed_dim: int = option(256, "width K of the per-frame embeddings Z")
    head_depth: int = option(1, "Transformer blocks of the head")
    head_heads: int = option(4, "attention heads of the head")
    head_dropout: float = option(0.1, "dropout of the head")
    head_drop_path: float = option(0.1, "stochastic depth of the head's blocks")
    backbone_drop_path: float = option(0.2, "stochastic depth of the MoViNet blocks")
    init_checkpoint: str | None = option(None, "initial weights: a MoViNet-pytorch state dict or a checkpoint.pt of this engine")

    def __post_init__(self) -> None:
        if self.model.lower() not in CONFIGS:
            raise ValueError(f"unknown MoViNet {self.model!r}: expected one of {', '.join(CONFIGS)}")


def build_model(spec: KineticsModel, num_classes: int) -> GRWVideoClassifier:
    """MoViNet backbone → linear → Z → LayerNorm → temporal Transformer head, optionally initialised from ``spec.init_checkpoint``."""
    state = torch.load(spec.init_checkpoint, map_location="cpu", weights_only=False) if spec.init_checkpoint else None
    ours = isinstance(state, dict) and "model" in state and "config" in state  # a checkpoint of the engine
    movinet_classes = num_classes
    if state is not None and not ours:
        state = state.get("state_dict", state)
        movinet_classes = next(v.shape[0] for k, v in state.items() if k.startswith("classifier.3.") and k.endswith("weight"))
    backbone = create_movinet(spec.model, stream=spec.stream, num_classes=movinet_classes, stochastic_depth=spec.backbone_drop_path)
    head = TemporalTransformerHead(spec.embed_dim, num_classes, depth=spec.head_depth, num_heads=spec.head_heads,
                                   dropout=spec.head_dropout, stochastic_depth=spec.head_drop_path)
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
    clips = dict(frames=data.frames, fps=data.fps, crop=data.crop, seed=cfg.seed)
    train_set = kinetics_dataset(data.data_root, "train", training=True, **clips)
    val_set = kinetics_dataset(data.data_root, "val", training=False, **clips)
    seed_everything(cfg.seed)  # the same initial weights for every run of a seed, whatever ran before
    net = build_model(model, len(train_set.classes))
    result = fit(net, train_set, val_set, cfg, regularizer=smoothing.regularizer(), lam=smoothing.lam)
    return Run(result, summarize(data, model, smoothing, cfg, result, classes=list(train_set.classes)))


RECIPE = Recipe("kinetics", "MoViNet + GRW head on a Kinetics-layout folder (or its synthetic stand-in)",
                KineticsData, KineticsModel, run)
