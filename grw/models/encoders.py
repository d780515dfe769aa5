"""Small frame encoders for the warm-up: a causal video CNN and its per-frame ablation.

Both map a clip ``[B, 3, N, H, W]`` to per-frame features ``[B, N, F]`` (``num_features = F``), so
they plug into :class:`grw.models.GRWVideoClassifier`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CausalVideoEncoder"]


class _CausalConvBlock(nn.Module):
    """Conv3d with kernel ``(kt, 3, 3)``, spatial stride 2, padded only towards the past in time → BN → GELU."""

    def __init__(self, c_in: int, c_out: int, kt: int) -> None:
        super().__init__()
        self.kt = kt
        self.conv = nn.Conv3d(c_in, c_out, (kt, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=False)
        self.norm = nn.BatchNorm3d(c_out)

    def forward(self, x: Tensor) -> Tensor:
        if self.kt > 1:
            x = F.pad(x, (0, 0, 0, 0, self.kt - 1, 0))  # frame t sees frames t-kt+1 … t
        return F.gelu(self.norm(self.conv(x)))


class CausalVideoEncoder(nn.Module):
    """Clip ``[B, 3, N, H, W]`` → per-frame features ``[B, N, F]``; feature ``t`` depends on frames ``≤ t`` only.

    ``temporal_kernel=1`` gives the per-frame ablation (the same network without temporal context).
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64), temporal_kernel: int = 3) -> None:
        super().__init__()
        channels = (3, *widths)
        self.blocks = nn.Sequential(*(_CausalConvBlock(a, b, temporal_kernel) for a, b in zip(channels, channels[1:])))
        self.num_features = widths[-1]

    def forward(self, video: Tensor) -> Tensor:
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"expected a clip [B, 3, N, H, W] (channels, then time), got {tuple(video.shape)}")
        features = self.blocks(video)  # [B, F, N, h, w]
        return features.mean(dim=(3, 4)).transpose(1, 2)
