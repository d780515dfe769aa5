"""The fixed sin-cos code of frame positions, shared by the temporal head and MoViNet's stream squeeze-excite."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["sinusoidal_positions"]


def sinusoidal_positions(positions: int | Tensor, dim: int, temperature: float = 10000.0) -> Tensor:
    """Sin-cos code ``[n, dim]`` of frame indices ``[n]`` (or of ``0 … n-1`` for an int): sines, then cosines.

    Frequencies ``temperature ** (-i / (dim / 2))`` for ``i < dim / 2``, as in the official MoViNet.
    """
    if dim % 2:
        raise ValueError(f"the position code needs an even width, got {dim}")
    if isinstance(positions, int):
        positions = torch.arange(positions)
    omega = temperature ** (-torch.arange(dim // 2, device=positions.device, dtype=torch.float32) / (dim // 2))
    angles = positions.float()[:, None] * omega[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)
