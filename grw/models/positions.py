"""The fixed sin-cos code of frame positions, shared by the temporal head and MoViNet's stream squeeze-excite."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["sinusoidal_positions"]


def sinusoidal_positions(positions: int | Tensor, dim: int, temperature: float = 10000.0, *, endpoint: bool = False) -> Tensor:
    """Sin-cos code ``[n, dim]`` of frame indices ``[n]`` (or of ``0 … n-1`` for an int): sines, then cosines.

    Frequencies ``temperature ** -(i / m)`` for ``i < dim / 2``: ``m = dim / 2`` as in the official MoViNet,
    or, with ``endpoint=True``, ``m = dim / 2 - 1`` so that the lowest frequency is exactly ``1 / temperature``,
    as in the GRW authors' temporal head (``posemb_sincos_1d``).
    """
    half = dim // 2
    if dim % 2 or (endpoint and half < 2):
        raise ValueError(f"the position code needs an even width{' of at least 4' if endpoint else ''}, got {dim}")
    if isinstance(positions, int):
        positions = torch.arange(positions)
    exponents = torch.arange(half, device=positions.device, dtype=torch.float32) / (half - 1 if endpoint else half)
    angles = positions.float()[:, None] * (temperature**-exponents)[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)
