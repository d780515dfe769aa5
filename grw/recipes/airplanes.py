"""Airplanes recipe (the paper's warm-up): a causal video encoder → per-frame linear → Z → LayerNorm → temporal head.

``python -m grw train airplanes [options]`` renders the dataset once (cached under ``--data-root``),
trains on the training split less a validation part, validates every epoch and scores the test split.
"""

from __future__ import annotations

from dataclasses import dataclass

from grw.data.airplanes import AirplanesConfig, AirplanesDataset, load_airplanes
from grw.models import GRWVideoClassifier, TemporalTransformerHead
from grw.models.encoders import CausalVideoEncoder
from grw.options import check_fields, option
from grw.paths import project_path
from grw.recipes import Recipe, Run, Smoothing, check_run, summarize
from grw.train import TrainConfig, evaluate, fit, seed_everything

__all__ = ["RECIPE", "AirplanesData", "AirplanesModel", "build_model", "load_data", "run"]


@dataclass
class AirplanesData:
    """Rendered clips of a biplane turning about its yaw, pitch or roll axis."""

    data_root: str = option("data/airplanes", "rendered datasets are cached here, one folder per parameter set",
                            defines_run=False)  # the clips are those of the other fields, wherever they are cached
    n_train: int = option(1000, "training clips (the validation part is carved from them)", at_least=3, at_most=100_000)
    n_test: int = option(100, "test clips", at_least=3, at_most=100_000)
    frames: int = option(12, "frames per clip", at_least=3, at_most=256)
    size: int = option(32, "pixels per side", at_least=16, at_most=256)
    val_fraction: float = option(0.1, "fraction of the training clips held out for validation", above=0, below=1)
    data_seed: int = option(0, "seed of the rendered clips and of the validation split", at_least=0)

    def __post_init__(self) -> None:
        check_fields(self)

    def config(self) -> AirplanesConfig:
        """The renderer's settings of these clips."""
        return AirplanesConfig(n_train=self.n_train, n_test=self.n_test, frames=self.frames, size=self.size,
                               seed=self.data_seed)


@dataclass
class AirplanesModel:
    """A causal 3-D CNN (or its per-frame ablation) and the temporal Transformer head."""

    embed_dim: int = option(32, "width K of the per-frame embeddings Z", at_least=1, at_most=4096)
    width: int = option(16, "channels of the encoder's first stage, doubled at every stage", at_least=1, at_most=512)
    stages: int = option(3, "encoder stages (each halves the frame size)", at_least=1, at_most=6)
    temporal_kernel: int = option(3, "frames each encoder layer sees (1: the per-frame ablation)", at_least=1, at_most=15)
    head_depth: int = option(1, "Transformer blocks of the head", at_least=1, at_most=24)
    head_heads: int = option(4, "attention heads of the head (they divide --embed-dim)", at_least=1, at_most=64)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.embed_dim % self.head_heads:
            raise ValueError(f"head_heads must divide embed_dim = {self.embed_dim}, got {self.head_heads}")


def load_data(spec: AirplanesData, progress: bool = True) -> tuple[AirplanesDataset, AirplanesDataset, AirplanesDataset]:
    """The ``(train, val, test)`` sets of ``spec``, rendered once into ``spec.data_root`` (relative to the project)."""
    train_all, test = load_airplanes(spec.config(), project_path(spec.data_root), progress=progress)
    train, val = train_all.split(spec.val_fraction, seed=spec.data_seed)
    return train, val, test


def build_model(spec: AirplanesModel, num_classes: int) -> GRWVideoClassifier:
    """``video [B, 3, N, H, W]`` → causal encoder → linear → Z → LayerNorm → temporal Transformer → logits."""
    head = TemporalTransformerHead(spec.embed_dim, num_classes, depth=spec.head_depth, num_heads=spec.head_heads)
    encoder = CausalVideoEncoder(tuple(spec.width * 2**i for i in range(spec.stages)), spec.temporal_kernel)
    return GRWVideoClassifier(encoder, spec.embed_dim, head)


def run(data: AirplanesData, model: AirplanesModel, smoothing: Smoothing, cfg: TrainConfig) -> Run:
    """Train, validate every epoch, score the test split; ``results.json`` in ``cfg.out_dir``."""
    check_run(data, smoothing, cfg)
    train, val, test = load_data(data, progress=cfg.progress)
    seed_everything(cfg.seed)
    net = build_model(model, len(train.classes))
    result = fit(net, train, val, cfg, regularizer=smoothing.regularizer(), lam=smoothing.lam,
                 specs={"data": data, "model": model, "smoothing": smoothing})
    scores = evaluate(result.model, test, batch_size=cfg.batch_size, device=cfg.device)
    return Run(result, summarize(data, model, smoothing, cfg, result, test=scores, classes=list(train.classes)))


RECIPE = Recipe("airplanes", "the warm-up: a causal video CNN + GRW head on rendered rotating airplanes",
                AirplanesData, AirplanesModel, run)
