"""Final-layer GRW-smoothing: per-frame features → linear → Z → LayerNorm → temporal Transformer → logits.

The GRW loss is applied to ``Z`` *before* the LayerNorm (as in the published models); the head
reads ``LayerNorm(Z)``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn
from torchvision.ops import StochasticDepth

__all__ = ["ClassifierOutput", "FrameFeatures", "GRWVideoClassifier", "TemporalTransformerHead", "sinusoidal_positions"]


class ClassifierOutput(NamedTuple):
    """What a GRW classifier returns: ``logits [B, classes]`` and the embeddings ``Z [B, N, K]`` to smooth."""

    logits: Tensor
    embeddings: Tensor


def sinusoidal_positions(n: int, dim: int, temperature: float = 10000.0) -> Tensor:
    """Fixed 1-D sin-cos position code ``[n, dim]`` (sines in the first half, cosines in the second)."""
    if dim % 2:
        raise ValueError(f"the position code needs an even width, got {dim}")
    omega = temperature ** (-torch.arange(dim // 2, dtype=torch.float32) / (dim // 2))
    angles = torch.arange(n, dtype=torch.float32)[:, None] * omega[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class _Block(nn.Module):
    """Pre-norm Transformer block; stochastic depth on both residual branches."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, dropout: float, drop_path: float) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.mlp = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim, dim)
        )
        self.drop_path = StochasticDepth(drop_path, mode="row")

    def forward(self, x: Tensor) -> Tensor:
        h = self.attn_norm(x)
        x = x + self.drop_path(self.attn(h, h, h, need_weights=False)[0])
        return x + self.drop_path(self.mlp(x))


class TemporalTransformerHead(nn.Module):
    """``[B, N, K]`` → ``[B, classes]``: sin-cos positions, ``depth`` pre-norm blocks, LayerNorm, mean over time."""

    def __init__(
        self,
        embed_dim: int,
        num_classes: int,
        *,
        depth: int = 1,
        num_heads: int = 4,
        mlp_dim: int | None = None,
        dropout: float = 0.0,
        stochastic_depth: float = 0.0,
    ) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} must be divisible by num_heads={num_heads}")
        self.blocks = nn.Sequential(
            *(_Block(embed_dim, num_heads, mlp_dim or 2 * embed_dim, dropout, stochastic_depth) for _ in range(depth))
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(embed_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, classes]`` of a sequence ``[B, N, K]``."""
        x = x + sinusoidal_positions(x.shape[1], x.shape[2]).to(x)
        x = self.norm(self.blocks(x)).mean(dim=1)
        return self.classifier(self.dropout(x))


def _frame_features(backbone: nn.Module, video: Tensor) -> Tensor:
    features = getattr(backbone, "features", None)
    return features(video) if callable(features) else backbone(video)


class FrameFeatures(nn.Module):
    """Any video trunk ``[B, 3, T, H, W] → [B, C, T', H', W']`` as a backbone of per-frame features ``[B, T', C]``.

    Pools over space only, so a trunk from another library (e.g. pytorchvideo's X3D without its
    head) plugs into :class:`GRWVideoClassifier`.
    """

    def __init__(self, trunk: nn.Module, num_features: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.num_features = num_features

    def forward(self, video: Tensor) -> Tensor:
        x = self.trunk(video)
        if x.ndim != 5 or x.shape[1] != self.num_features:
            raise ValueError(f"expected the trunk to give [B, {self.num_features}, T, H, W], got {tuple(x.shape)}")
        return x.mean(dim=(3, 4)).transpose(1, 2)


class GRWVideoClassifier(nn.Module):
    """Backbone per-frame features ``[B, N, F]`` → linear → ``Z [B, N, K]`` → LayerNorm → head → logits.

    The backbone gives per-frame features through ``backbone.features(video)`` if it has that method,
    else through ``backbone(video)``; its width comes from ``feature_dim`` or ``backbone.num_features``.
    ``forward`` returns :class:`ClassifierOutput` so a training loop can add ``lam · grw_loss(Z, T)``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        embed_dim: int,
        head: nn.Module | None = None,
        *,
        num_classes: int | None = None,
        feature_dim: int | None = None,
    ) -> None:
        super().__init__()
        feature_dim = feature_dim or getattr(backbone, "num_features", None)
        if feature_dim is None:
            raise ValueError("give feature_dim: the backbone has no `num_features` attribute")
        if head is None:
            if num_classes is None:
                raise ValueError("give num_classes (to build the default TemporalTransformerHead) or a head")
            head = TemporalTransformerHead(embed_dim, num_classes)
        self.backbone = backbone
        self.embed = nn.Linear(feature_dim, embed_dim)
        self.norm = nn.LayerNorm(embed_dim)
        self.head = head

    def forward(self, video: Tensor) -> ClassifierOutput:
        """``video`` in the backbone's layout → ``(logits [B, classes], Z [B, N, K])``."""
        features = _frame_features(self.backbone, video)
        if features.ndim != 3:
            raise ValueError(f"the backbone must give per-frame features [B, N, F], got shape {tuple(features.shape)}")
        Z = self.embed(features)
        return ClassifierOutput(self.head(self.norm(Z)), Z)

