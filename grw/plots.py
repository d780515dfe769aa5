"""Figures shared by the notebooks: learning curves, confusion matrices, embedding trajectories, a paired study."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from torch import Tensor

__all__ = ["ARM_STYLES", "CLASS_COLORS", "ENCODER_COLORS", "pca_project", "plot_clip_grid", "plot_confusion",
           "plot_learning_curves", "plot_study", "plot_trajectories"]

CLASS_COLORS = ("tab:green", "tab:blue", "tab:red", "tab:orange", "tab:purple")  # the paper's yaw, pitch, roll


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
    colors: Sequence[str] = CLASS_COLORS,
    annotate_frames: bool = True,
    fontsize: float = 9,
) -> None:
    """Draw per-clip trajectories ``points [n, N, 2]``, coloured by class, each point labelled with its frame index.

    The labels sit in small white boxes next to their points, so they stay legible where paths cross.
    """
    for clip, label in zip(points, labels.tolist()):
        color = colors[label % len(colors)]
        ax.plot(clip[:, 0], clip[:, 1], "-o", color=color, ms=4, lw=1.5, alpha=0.9)
        if annotate_frames:
            for t, (x, y) in enumerate(clip.tolist()):
                ax.annotate(str(t), (x, y), fontsize=fontsize, xytext=(4, 4), textcoords="offset points", color=color,
                            bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8})
    for label, name in enumerate(class_names):
        ax.plot([], [], "-o", color=colors[label % len(colors)], label=name)
    ax.legend(loc="best", fontsize=8)
    ax.set(xlabel="PC 1", ylabel="PC 2")


def plot_clip_grid(
    points: Tensor, labels: Tensor, class_names: Sequence[str], window: int, *, cols: int = 6,
    colors: Sequence[str] = CLASS_COLORS, title: str = "",
) -> plt.Figure:
    """Small multiples: one panel per clip of ``points [n, N, 2]`` (its whole trajectory), all on the same axes.

    Each loss window of ``window`` frames is drawn solid; the step across a window boundary is dashed; frame 0 is
    a square.
    """
    rows = -(-len(points) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 1.9 * rows), sharex=True, sharey=True, squeeze=False)
    for ax, clip, label in zip(axes.flat, points, labels.tolist()):
        color = colors[label % len(colors)]
        for start in range(0, clip.shape[0], window):
            ax.plot(clip[start : start + window, 0], clip[start : start + window, 1], "-o", color=color, ms=2.5, lw=1.2)
            if start > 0:
                ax.plot(clip[start - 1 : start + 1, 0], clip[start - 1 : start + 1, 1], "--", color=color, lw=0.8)
        ax.plot(clip[0, 0], clip[0, 1], "s", color="black", ms=4)
        ax.set_title(class_names[label], fontsize=8, color=color)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(points):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


ENCODER_COLORS = {"per_frame": "tab:orange", "causal": "tab:blue"}
ARM_STYLES = {"baseline": "--", "grw": "-"}


def plot_study(study: Mapping[str, Any], arms: Mapping[str, str] = ARM_STYLES) -> plt.Figure:
    """Accuracy against training-set size, one line per (encoder, arm) with its 95 % band and seeds, and each encoder's
    paired gain (mean and 95 % interval).

    ``study`` is the ``study`` entry of a results.json (see :func:`grw.study.summarize_study`); ``arms`` maps each arm
    to its line style, the encoders get their colours from ``ENCODER_COLORS``.
    """
    from grw.metrics import paired_difference

    sizes, encoders = study["sizes"], study["encoders"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    for e, (encoder, result) in enumerate(encoders.items()):
        color = ENCODER_COLORS.get(encoder, f"C{e}")
        for arm, style in arms.items():
            per_size = [[100 * a for a in result[arm][str(size)]] for size in sizes]
            means = [sum(v) / len(v) for v in per_size]
            bands = [paired_difference(v, [0.0] * len(v))["ci95"] for v in per_size]  # the mean's own 95 % interval
            left.plot(sizes, means, style, marker="o", color=color, label=f"{encoder}, {arm}", lw=2)
            left.fill_between(sizes, [b[0] for b in bands], [b[1] for b in bands], color=color,
                              alpha=0.25 if arm == "grw" else 0.1)
            for size, values in zip(sizes, per_size):
                left.scatter([size] * len(values), values, color=color, s=8, alpha=0.5)
        gains = [result["paired_gain_pp"][str(size)] for size in sizes]
        means = [g["mean"] for g in gains]
        shifted = [size * 10 ** (0.02 * (2 * e - len(encoders) + 1)) for size in sizes]
        right.errorbar(shifted, means, yerr=[[m - g["ci95"][0] for m, g in zip(means, gains)],
                                             [g["ci95"][1] - m for m, g in zip(means, gains)]],
                       fmt="o-", capsize=4, color=color, label=encoder)
    left.set(xscale="log", xlabel="training clips", ylabel="test top-1 (%)",
             title=f"accuracy (mean, 95 % band, {len(study['seeds'])} seeds)")
    left.legend(fontsize=8)
    right.axhline(0, color="gray", lw=1)
    right.set(xscale="log", xlabel="training clips", ylabel="GRW − baseline (points)",
              title="paired gain per encoder: mean and 95 % interval")
    right.legend(fontsize=8)
    fig.tight_layout()
    return fig


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
