"""Metrics: top-k accuracy (per clip and per video), confusion matrices and the smoothness of embedding trajectories."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "ClipVideoAccuracy",
    "confusion_matrix",
    "effective_rank",
    "gmacs",
    "mean_squared_acceleration",
    "paired_difference",
    "pose_tracking",
    "prefix_accuracy",
    "standardize",
    "straightness",
    "student_t_quantile",
    "topk_correct",
    "velocity_direction_probe",
    "window_smoothness",
]


def topk_correct(logits: Tensor, labels: Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, Tensor]:
    """Number of samples whose label is among the top-k of ``logits [n, classes]``, for each k (capped at classes).

    The counts are 0-d tensors on the logits' device, so a loop can sum them without waiting for it.
    """
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"expected logits [n, classes] and labels [n], got {tuple(logits.shape)} and {tuple(labels.shape)}")
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices  # [n, k]
    hits = top == labels[:, None]
    return {k: hits[:, :k].any(dim=1).sum() for k in ks}


class ClipVideoAccuracy:
    """Top-k accuracy over clips and video-level top-1 (each video's clip softmax averaged), summed batch by batch.

    ``update(logits [B, classes], labels [B], videos [B])`` adds a batch of clips, ``videos`` being the
    index (in ``[0, num_videos)``) of each clip's video; all clips of a video carry its label. Sums stay
    on ``device``; :meth:`all_reduce` adds those of every process, so clips scored once by one process
    each are counted once in all. :meth:`compute` gives fractions in [0, 1]; a video counts when it
    gave at least one clip. Top-k with ``k`` above the number of classes counts every clip.
    """

    def __init__(
        self, num_videos: int, num_classes: int, *, ks: tuple[int, ...] = (1, 5), device: str | torch.device = "cpu"
    ) -> None:
        self.ks = ks
        self.hits = torch.zeros(len(ks), dtype=torch.float64, device=device)  # clips with the label in the top k
        self.probability_sums = torch.zeros(num_videos, num_classes, dtype=torch.float64, device=device)
        self.clips = torch.zeros(num_videos, dtype=torch.float64, device=device)  # clips of each video
        self.labels = torch.full((num_videos,), -1, dtype=torch.long, device=device)  # -1: no clip yet

    def update(self, logits: Tensor, labels: Tensor, videos: Tensor) -> None:
        """Add the clips ``logits [B, classes]`` with ``labels [B]`` of the videos ``videos [B]``."""
        if videos.shape != labels.shape:
            raise ValueError(f"expected one video index per clip, got {tuple(videos.shape)} for labels {tuple(labels.shape)}")
        self.hits += torch.stack(list(topk_correct(logits, labels, self.ks).values())).double()
        self.probability_sums.index_add_(0, videos, logits.double().softmax(dim=1))
        self.clips.index_add_(0, videos, torch.ones_like(videos, dtype=torch.float64))
        self.labels[videos] = labels

    def all_reduce(self) -> None:
        """Sum the counts of every process of the default process group (nothing outside one)."""
        if dist.is_available() and dist.is_initialized():
            for total in (self.hits, self.probability_sums, self.clips):
                dist.all_reduce(total)
            dist.all_reduce(self.labels, op=dist.ReduceOp.MAX)

    def compute(self) -> dict[str, float | int]:
        """``clips``, ``videos`` (with at least one clip), ``top{k}`` over clips and ``video_top1``; accuracies in [0, 1].

        With no clip scored, accuracy is undefined: a ValueError, not 0 %.
        """
        clips = int(self.clips.sum().item())
        if clips == 0:
            raise ValueError("no clip was scored (every video missing, unreadable or shorter than one clip of frames / "
                             "fps seconds): there is no accuracy to report")
        scored = self.clips > 0
        video_hits = (self.probability_sums[scored].argmax(dim=1) == self.labels[scored]).sum()
        videos = int(scored.sum().item())
        return {"clips": clips, "videos": videos,
                **{f"top{k}": hits / clips for k, hits in zip(self.ks, self.hits.tolist())},
                "video_top1": video_hits.item() / videos}


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


def effective_rank(Z: Tensor) -> float:
    """Effective rank of embeddings ``[n, N, K]`` over all frames: ``exp`` of the entropy of the normalised singular values.

    The frames are centred first; K equal singular values give K, one direction gives 1 (Roy & Vetterli, 2007).
    """
    flat = Z.reshape(-1, Z.shape[-1]).double()
    singular = torch.linalg.svdvals(flat - flat.mean(dim=0))
    p = singular / singular.sum().clamp_min(1e-300)
    return float(torch.exp(-(p * p.clamp_min(1e-300).log()).sum()))


def window_smoothness(Z: Tensor, T: int) -> dict[str, float]:
    """Smoothness of ``Z [n, N, K]`` where the GRW loss acts (inside its windows of ``T`` frames) and where it does not.

    ``msa_within`` / ``msa_across``: :func:`mean_squared_acceleration` (standardized channels) over the accelerations
    whose three frames lie in one window / straddle a window boundary. ``straightness_within``: :func:`straightness`
    of the loss's windows; ``straightness_across``: of the ``T``-frame windows centred on each boundary.
    """
    if Z.ndim != 3 or T < 3 or Z.shape[1] < 2 * T:
        raise ValueError(f"expected embeddings [n, N >= 2T, K] and T >= 3 (two windows at least), got {tuple(Z.shape)}, T={T}")
    C = Z.shape[1] // T
    Z = standardize(Z[:, : C * T]).double()
    acceleration = Z.diff(n=2, dim=1).pow(2).mean(dim=2)  # [n, C·T - 2], index t: frames t, t+1, t+2
    within = (torch.arange(C * T - 2) % T) < T - 2
    shift = T // 2  # windows straddling each boundary: frames cT - shift … cT - shift + T - 1
    across = torch.stack([Z[:, c * T - shift : c * T - shift + T] for c in range(1, C)], dim=1)
    return {
        "msa_within": float(acceleration[:, within].mean()),
        "msa_across": float(acceleration[:, ~within].mean()),
        "straightness_within": straightness(Z.reshape(-1, T, Z.shape[2])),
        "straightness_across": straightness(across.flatten(0, 1)),
    }


def _ranks(x: Tensor) -> Tensor:
    """Ranks ``0 … n-1`` of the values ``x [n]``, equal values sharing their average rank (as Spearman's ρ needs)."""
    ranks = torch.empty_like(x)
    ranks[x.argsort()] = torch.arange(len(x), dtype=x.dtype)
    _, tie = torch.unique(x, return_inverse=True)
    return torch.zeros_like(x).index_add_(0, tie, ranks)[tie] / torch.bincount(tie).to(x.dtype)[tie]


def pose_tracking(Z: Tensor, angles: Tensor) -> float:
    """Spearman correlation between distance in ``Z [n, N, K]`` and the angle between poses, over every pair of frames.

    ``angles [n, N, N]``: the angle between the poses of frames ``s`` and ``t`` of each clip. The channels are
    standardized first (:func:`standardize`); the pairs ``s < t`` of all clips are pooled, so 1 means that a larger turn
    always moves the embedding further, whichever the clip. Equal values share their average rank.
    """
    if Z.ndim != 3 or angles.shape != (*Z.shape[:2], Z.shape[1]) or Z.shape[1] < 2:
        raise ValueError(f"expected Z [n, N >= 2, K] and angles [n, N, N], got {tuple(Z.shape)} and "
                         f"{tuple(angles.shape)}")
    Z = standardize(Z).double()
    s, t = torch.triu_indices(Z.shape[1], Z.shape[1], offset=1)
    distance = (Z[:, t] - Z[:, s]).norm(dim=-1).flatten()
    ranks = torch.stack([_ranks(distance), _ranks(angles[:, s, t].double().flatten())])
    return float(torch.corrcoef(ranks)[0, 1])


def prefix_accuracy(classify: Callable[[Tensor], Tensor], Z: Tensor, labels: Tensor) -> list[float]:
    """Accuracy after each number of frames seen, ``[acc(Z[:, :1]), …, acc(Z[:, :N])]``, of ``Z [n, N, K]``, ``labels``.

    ``classify`` maps embeddings ``[n, m, K]`` to logits (e.g. :meth:`grw.models.GRWVideoClassifier.classify`); with a
    causal encoder, whose frame ``t`` sees frames ``<= t`` only, this is the online prediction after each frame.
    """
    if Z.ndim != 3 or labels.shape != Z.shape[:1]:
        raise ValueError(f"expected Z [n, N, K] and labels [n], got {tuple(Z.shape)} and {tuple(labels.shape)}")
    with torch.no_grad():
        return [float((classify(Z[:, :m]).argmax(dim=1) == labels).double().mean()) for m in range(1, Z.shape[1] + 1)]


def velocity_direction_probe(Z: Tensor, labels: Tensor, T: int, *, folds: int = 5, seed: int = 0, l2: float = 1e-3) -> float:
    """Cross-validated accuracy of a linear probe that reads the class from each window's mean velocity direction.

    Each window of ``T`` frames of ``Z [n, N, K]`` gives the unit vector of ``z_{T-1} - z_0``; a multinomial logistic
    regression (L-BFGS, L2 weight ``l2``) is fitted on ``folds - 1`` folds of clips and scored on the windows of the
    held-out clips. Accuracy in [0, 1]; chance is ``1 / classes``.
    """
    if Z.ndim != 3 or labels.shape != Z.shape[:1] or Z.shape[1] < T or folds < 2:
        raise ValueError(f"expected Z [n, N >= T, K], labels [n] and folds >= 2, got {tuple(Z.shape)}, "
                         f"{tuple(labels.shape)}, folds={folds}")
    C = Z.shape[1] // T
    w = Z[:, : C * T].double().reshape(len(Z), C, T, -1)
    direction = torch.nn.functional.normalize(w[:, :, -1] - w[:, :, 0], dim=-1)  # [n, C, K]
    classes = int(labels.max()) + 1
    fold = torch.empty(len(Z), dtype=torch.long)
    fold[torch.randperm(len(Z), generator=torch.Generator().manual_seed(seed))] = torch.arange(len(Z)) % folds
    correct = 0
    for k in range(folds):
        train, test = fold != k, fold == k
        x, y = direction[train].flatten(0, 1), labels[train].repeat_interleave(C)
        weight = torch.zeros(x.shape[1] + 1, classes, dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([weight], max_iter=200, line_search_fn="strong_wolfe")

        def objective() -> Tensor:
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(x @ weight[:-1] + weight[-1], y) + l2 * weight[:-1].pow(2).sum()
            loss.backward()
            return loss

        optimizer.step(objective)
        with torch.no_grad():
            predicted = (direction[test] @ weight[:-1] + weight[-1]).argmax(dim=-1)  # [n_test, C]
            correct += int((predicted == labels[test][:, None]).sum())
    return correct / (len(Z) * C)


def student_t_quantile(p: float, df: int) -> float:
    """The ``p``-quantile of Student's t distribution with ``df`` degrees of freedom (``p`` in (0.5, 1)).

    Bisection on the CDF, the density integrated with Simpson's rule in float64 (accurate to about 1e-6).
    """
    if not 0.5 < p < 1 or df < 1:
        raise ValueError(f"expected 0.5 < p < 1 and df >= 1, got p={p}, df={df}")
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(x: float) -> float:
        t = torch.linspace(0, x, 4001, dtype=torch.float64)
        f = torch.exp(log_norm - (df + 1) / 2 * torch.log1p(t * t / df))
        simpson = f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum()
        return 0.5 + float(simpson) * x / (3 * 4000)

    low, high = 0.0, 1.0
    while cdf(high) < p:
        low, high = high, 2 * high
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if cdf(middle) < p else (low, middle)
    return (low + high) / 2


def paired_difference(treated: Sequence[float], control: Sequence[float], confidence: float = 0.95) -> dict[str, float | list[float]]:
    """Mean of the paired differences ``treated[i] - control[i]`` and its Student-t confidence interval.

    ``{"mean": m, "ci95": [lo, hi]}`` (the key names the interval whatever ``confidence``); needs two pairs or more.
    """
    if len(treated) != len(control) or len(treated) < 2:
        raise ValueError(f"expected two equally long sequences of at least 2 paired values, got {len(treated)} and {len(control)}")
    d = torch.tensor(treated, dtype=torch.float64) - torch.tensor(control, dtype=torch.float64)
    mean, half = float(d.mean()), student_t_quantile((1 + confidence) / 2, len(d) - 1) * float(d.std()) / math.sqrt(len(d))
    return {"mean": mean, "ci95": [mean - half, mean + half]}
