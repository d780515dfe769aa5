"""Final-layer GRW-smoothing: per-frame features → linear → Z → LayerNorm → temporal Transformer → logits.

The GRW loss is applied to ``Z`` *before* the LayerNorm (as in the published models); the head
reads ``LayerNorm(Z)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops import StochasticDepth

from grw.contracts import ClassifierOutput
from grw.models.positions import sinusoidal_positions

__all__ = ["ClassifierOutput", "FrameFeatures", "GRWVideoClassifier", "TemporalTransformerHead"]


class _Block(nn.Module):
    """Pre-norm Transformer block: LN → attention, then LN → Linear → GELU → Linear; stochastic depth on both residuals."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, drop_path: float) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))
        self.drop_path = StochasticDepth(drop_path, mode="row")  # a fresh draw per call, so per branch

    def forward(self, x: Tensor) -> Tensor:
        h = self.attn_norm(x)
        x = x + self.drop_path(self.attn(h, h, h, need_weights=False)[0])
        return x + self.drop_path(self.mlp(x))


class TemporalTransformerHead(nn.Module):
    """``[B, N, K]`` → ``[B, classes]``: the GRW authors' released temporal head.

    It computes what ``SimpleViT`` in ``grw_smoothing_models/model/attention.py`` of their repository
    (github.com/gilgoldm/grw-smoothing) computes, so their weights give their logits: add their sin-cos
    code (frequencies ``10000 ** -(i / (K/2 - 1))``); ``depth`` pre-norm blocks, stochastic depth (per
    sample) on both residual branches, no dropout inside; final LayerNorm → mean over time → dropout →
    linear. ``dropout`` is that last dropout only.
    """

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
            *(_Block(embed_dim, num_heads, mlp_dim or 2 * embed_dim, stochastic_depth) for _ in range(depth))
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.num_classes = num_classes
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(embed_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, classes]`` of a sequence ``[B, N, K]``."""
        positions = torch.arange(x.shape[1], device=x.device)
        x = x + sinusoidal_positions(positions, x.shape[2], endpoint=True).to(x.dtype)
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

    ``video [B, C, T, H, W]``: the backbone gives per-frame features through ``backbone.features(video)``
    if it has that method, else through ``backbone(video)``; its width comes from ``feature_dim`` or
    ``backbone.num_features``. ``forward`` returns :class:`ClassifierOutput` so a training loop can add
    ``lam · grw_loss(Z, T)``; the backbone's parameters form the ``"backbone"`` group, the rest ``"head"``.
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
        num_classes = num_classes or getattr(head, "num_classes", None)
        if num_classes is None:
            raise ValueError("give num_classes: the head has no `num_classes` attribute (or give no head for the default one)")
        self.num_classes = num_classes
        self.backbone = backbone
        self.embed = nn.Linear(feature_dim, embed_dim)
        self.norm = nn.LayerNorm(embed_dim)
        self.head = head if head is not None else TemporalTransformerHead(embed_dim, num_classes)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """The trainable parameters of the backbone and of everything after it (linear, LayerNorm, head)."""
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        ids = {id(p) for p in backbone}
        return {"backbone": backbone, "head": [p for p in self.parameters() if p.requires_grad and id(p) not in ids]}

    def forward(self, video: Tensor) -> ClassifierOutput:
        """``video [B, C, T, H, W]`` → ``(logits [B, classes], Z [B, N, K])``."""
        features = _frame_features(self.backbone, video)
        if features.ndim != 3:
            raise ValueError(f"the backbone must give per-frame features [B, N, F], got shape {tuple(features.shape)}")
        Z = self.embed(features)
        return ClassifierOutput(self.classify(Z), Z)

    def classify(self, Z: Tensor) -> Tensor:
        """Logits ``[B, classes]`` of embeddings ``Z [B, n, K]``, e.g. the first ``n`` frames of a causal model's."""
        return self.head(self.norm(Z))

