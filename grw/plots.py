"""Figures shared by the notebooks: learning curves, confusion matrices, embedding trajectories."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from torch import Tensor

__all__ = ["pca_project", "plot_confusion", "plot_learning_curves", "plot_trajectories"]


def pca_project(Z: Tensor, dims: int = 2) -> Tensor:
    """Project embeddings ``[n, N, K]`` on their first ``dims`` principal components (over all frames): ``[n, N, dims]``.

    Signs are fixed so that each component's largest-magnitude loading is positive, making plots of
    different runs comparable.
    """
    flat = Z.reshape(-1, Z.shape[-1]).double()
    centred = flat - flat.mean(dim=0)
    _, _, Vh = torch.linalg.svd(centred, full_matrices=False)
    components = Vh[:dims]  # [dims, K]
    signs = components.gather(1, components.abs().argmax(dim=1, keepdim=True)).sign()
    return (centred @ (components * signs).T).reshape(*Z.shape[:-1], dims).to(Z.dtype)


def plot_trajectories(
    ax: Axes,
    points: Tensor,
    labels: Tensor,
    class_names: Sequence[str],
    *,
    colors: Sequence[str] = ("tab:green", "tab:blue", "tab:red", "tab:orange", "tab:purple"),
    annotate_frames: bool = True,
) -> None:
    """Draw per-clip trajectories ``points [n, N, 2]``, coloured by class, frame indices written at each point."""
    for clip, label in zip(points, labels.tolist()):
        ax.plot(clip[:, 0], clip[:, 1], "-o", color=colors[label % len(colors)], ms=3, lw=1, alpha=0.8)
        if annotate_frames:
            for t, (x, y) in enumerate(clip.tolist()):
                ax.annotate(str(t), (x, y), fontsize=6, xytext=(2, 2), textcoords="offset points")
    for label, name in enumerate(class_names):
        ax.plot([], [], "-o", color=colors[label % len(colors)], label=name)
    ax.legend(loc="best", fontsize=8)
    ax.set(xlabel="PC 1", ylabel="PC 2")


def plot_confusion(ax: Axes, matrix: Tensor, class_names: Sequence[str], title: str = "") -> None:
    """Confusion matrix ``[classes, classes]`` (rows: true class) with counts written in the cells."""
    ax.imshow(matrix, cmap="Blues")
    for i, row in enumerate(matrix.tolist()):
        for j, count in enumerate(row):
            ax.text(j, i, str(count), ha="center", va="center", color="white" if count > matrix.max() / 2 else "black")
    ax.set_xticks(range(len(class_names)), class_names)
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set(xlabel="predicted", ylabel="true", title=title)


def plot_learning_curves(
    runs: Mapping[str, Sequence[Mapping[str, Any]]], keys: Sequence[str] = ("train_loss", "val_top1")
) -> plt.Figure:
    """One panel per history key (e.g. ``val_top1``), one line per run; ``runs`` maps a name to ``TrainResult.history``."""
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.5), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for name, history in runs.items():
            points = [(h["epoch"], h[key]) for h in history if key in h]
            if points:
                ax.plot(*zip(*points), "-o", ms=3, label=name)
        ax.set(xlabel="epoch", ylabel=key, title=key)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
