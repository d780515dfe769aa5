"""Metrics: top-k accuracy, confusion matrices and the smoothness of embedding trajectories."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["confusion_matrix", "gmacs", "mean_squared_acceleration", "standardize", "straightness", "topk_correct"]


def topk_correct(logits: Tensor, labels: Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, Tensor]:
    """Number of samples whose label is among the top-k of ``logits [n, classes]``, for each k (capped at classes).

    The counts are 0-d tensors on the logits' device, so a loop can sum them without waiting for it.
    """
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"expected logits [n, classes] and labels [n], got {tuple(logits.shape)} and {tuple(labels.shape)}")
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices  # [n, k]
    hits = top == labels[:, None]
    return {k: hits[:, :k].any(dim=1).sum() for k in ks}


def confusion_matrix(predictions: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """``[classes, classes]`` counts; row = true class, column = predicted class."""
    index = labels.long() * num_classes + predictions.long()
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def standardize(Z: Tensor) -> Tensor:
    """Scale embeddings ``[n, N, K]`` so that each channel has zero mean and unit variance over all frames."""
    flat = Z.reshape(-1, Z.shape[-1])
    return (Z - flat.mean(dim=0)) / flat.std(dim=0).clamp_min(1e-12)


def mean_squared_acceleration(Z: Tensor, standardized: bool = True) -> float:
    """Mean over clips and frames of ``||z_{t+2} - 2 z_{t+1} + z_t||² / K`` for ``Z [n, N, K]``.

    With ``standardized=True`` the channels are standardized first, so the value is comparable across
    models whose embeddings have different scales (a random, time-independent embedding gives about 6).
    """
    if Z.ndim != 3 or Z.shape[1] < 3:
        raise ValueError(f"expected embeddings [n, N >= 3, K], got {tuple(Z.shape)}")
    Z = standardize(Z) if standardized else Z
    return float(Z.double().diff(n=2, dim=1).pow(2).mean())


def straightness(Z: Tensor) -> float:
    """Mean over clips of chord length / path length of the trajectories ``Z [n, N, K]``: 1 for a straight line.

    Scale-free and blind to spacing; :func:`mean_squared_acceleration` sees both bends and uneven steps.
    """
    if Z.ndim != 3 or Z.shape[1] < 2:
        raise ValueError(f"expected embeddings [n, N >= 2, K], got {tuple(Z.shape)}")
    Z = Z.double()
    path = Z.diff(dim=1).norm(dim=-1).sum(dim=1)
    chord = (Z[:, -1] - Z[:, 0]).norm(dim=-1)
    return float((chord / path.clamp_min(1e-12)).mean())


def gmacs(model: nn.Module, input_shape: Sequence[int]) -> float:
    """Billions of multiply-accumulates of one forward pass on an ``input_shape`` tensor (e.g. ``[1, 3, T, H, W]``).

    Counts convolutions and matrix products, like published model costs, on a copy of ``model`` on
    the meta device: instant, and the model itself is untouched.
    """
    meta = copy.deepcopy(model).to("meta").eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta(torch.empty(*input_shape, device="meta"))
    return counter.get_total_flops() / 2e9
