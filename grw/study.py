"""A planned two-factor comparison on the Airplanes recipe: test accuracy with and without GRW, for encoders with and
without temporal context, over training-set sizes and seeds.

Every run goes through the engine (:func:`grw.train.fit`) with the recipe's model. The runs of one (encoder, size,
seed) share their training clips, initial weights and batch order, whatever their loss, so the difference between
the two arms is a paired measurement; :func:`summarize_study` reports its mean and 95 % interval, and the contrasts
between the encoders paired by seed (same training clips).
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from grw.contracts import ClipDataset
from grw.data.airplanes import CLASSES, AirplanesDataset
from grw.loss import GRWLoss
from grw.metrics import paired_difference
from grw.models import GRWVideoClassifier
from grw.recipes.airplanes import AirplanesModel, build_model
from grw.train import Predictions, TrainConfig, fit, predict, seed_everything

__all__ = ["ENCODERS", "PRESETS", "GRWTerm", "Job", "RunSettings", "Trained", "encoder_settings", "resolve_parameters",
           "run_study", "summarize_study", "train_and_score", "train_many"]

ENCODERS = {"per_frame": 1, "causal": 3}  # encoder → frames each of its layers sees (its temporal kernel)
MAX_RENDERED_BYTES = 8 * 2**30  # the rendered clips of a study are held in memory

PRESETS: dict[str, dict[str, Any]] = {
    # chosen on validation runs with seeds 100 and 101 (notebook 03 tells how); the notebook in minutes on 2 CPU cores
    "laptop": {"encoders": ["per_frame", "causal"], "sizes": [100, 250, 500, 1000], "seeds": [0, 1, 2, 3, 4],
               "frames": 10, "size": 24, "width": 8, "stages": 3, "K": 16, "heads": 2, "T": 5,
               "steps": {"per_frame": 900, "causal": 600}, "batch_size": 16, "lr": 3e-3, "n_val": 150, "n_test": 300,
               "ablation_encoder": "per_frame", "ablation_size": 500, "ablation_seeds": [0, 1, 2],
               "lam_sweep": [0.01, 1.0]},
    # the paper's warm-up scale (64² frames, 12 frames = two windows of 6, K = 32), ten seeds; hours on a CPU.
    # The per-frame budget is twice the causal one, as the laptop's rule gives at 24² (1,200 against 600 steps), not
    # validated at this scale.
    "paper": {"encoders": ["per_frame", "causal"], "sizes": [30, 100, 300, 1000], "seeds": list(range(10)),
              "frames": 12, "size": 64, "width": 16, "stages": 3, "K": 32, "heads": 4, "T": 6,
              "steps": {"per_frame": 3200, "causal": 1600}, "batch_size": 32, "lr": 1e-3, "n_val": 200, "n_test": 500,
              "ablation_encoder": "per_frame", "ablation_size": 300, "ablation_seeds": [0, 1, 2, 3, 4],
              "lam_sweep": [0.01, 0.03, 0.3, 1.0, 3.0]},
}


def resolve_parameters(preset: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """The preset's parameters, each replaced by the value in ``given`` unless that value is ``None`` (left unset).

    An explicitly passed value always wins; an unknown preset or a parameter no preset knows is an error. The ablation's
    encoder, size and seeds left unset follow the study's own when the preset's are not part of it (the ablation reuses
    the study's runs): the first encoder, the size nearest the preset's on a log scale, the first seeds. ``steps`` may
    be one number for every encoder. Every value is then checked (:func:`check_parameters`).
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    unknown = sorted(set(given) - set(PRESETS[preset]))
    if unknown:
        raise ValueError(f"the presets set no parameter called {', '.join(unknown)}; "
                         f"they set {', '.join(PRESETS[preset])}")
    passed = {name: value for name, value in given.items() if value is not None}
    p = {**PRESETS[preset], **passed}
    if isinstance(p["steps"], int) and not isinstance(p["steps"], bool):
        p["steps"] = {encoder: p["steps"] for encoder in ENCODERS}
    if "ablation_encoder" not in passed and p["ablation_encoder"] not in p["encoders"] and p["encoders"]:
        p["ablation_encoder"] = p["encoders"][0]
    if "ablation_size" not in passed and p["ablation_size"] not in p["sizes"] and p["sizes"]:
        p["ablation_size"] = min(p["sizes"], key=lambda n: abs(math.log(n / p["ablation_size"])) if n > 0 else math.inf)
    if "ablation_seeds" not in passed and not set(p["ablation_seeds"]) <= set(p["seeds"]):
        p["ablation_seeds"] = list(p["seeds"][: len(p["ablation_seeds"])])
    check_parameters(p)
    return p


def check_parameters(p: Mapping[str, Any]) -> None:
    """Raise a ``ValueError`` naming the first study parameter that is out of range or inconsistent with another."""

    def fail(name: str, expected: str) -> None:
        raise ValueError(f"parameter {name} = {p[name]!r}: expected {expected}")

    positive = ("frames", "size", "width", "stages", "K", "heads", "T", "batch_size", "n_val", "n_test")
    for name in positive:
        if p[name] < 1:
            fail(name, "an integer >= 1")
    if not p["encoders"] or len(set(p["encoders"])) < len(p["encoders"]) or not set(p["encoders"]) <= set(ENCODERS):
        fail("encoders", f"a list of distinct encoders out of {list(ENCODERS)}")
    if not isinstance(p["steps"], Mapping) or not set(p["encoders"]) <= set(p["steps"]) \
            or any(not isinstance(s, int) or s < 1 for s in p["steps"].values()):
        fail("steps", f"an integer >= 1, or one per encoder ({', '.join(p['encoders'])}) as a dict")
    if not p["sizes"] or any(n < len(CLASSES) for n in p["sizes"]) or len(set(p["sizes"])) < len(p["sizes"]):
        fail("sizes", f"distinct training-set sizes of at least {len(CLASSES)} clips (one per class)")
    if len(p["seeds"]) < 2 or len(set(p["seeds"])) < len(p["seeds"]) or any(s < 0 for s in p["seeds"]):
        fail("seeds", "at least two distinct seeds >= 0 (an interval needs two paired runs)")
    if p["T"] < 3 or 2 * p["T"] > p["frames"]:
        fail("T", f"a window of 3 frames or more that fits twice in the clip's frames = {p['frames']}")
    rendered = (max(p["sizes"]) + 2 * p["n_val"] + p["n_test"]) * p["frames"] * p["size"] ** 2 * 3  # uint8 pixels
    if rendered > MAX_RENDERED_BYTES:
        fail("sizes", f"clips that fit in {MAX_RENDERED_BYTES / 2**30:.0f} GiB once rendered: the largest size, n_val and "
                      f"n_test at {p['frames']} frames of {p['size']}² pixels take {rendered / 2**30:.1f} GiB")
    if p["size"] < 2 ** p["stages"]:
        fail("size", f"at least 2 ** stages = {2 ** p['stages']} pixels (each stage halves the frame)")
    if p["K"] % p["heads"] or p["K"] % 2:
        fail("K", f"an even width divisible by heads = {p['heads']}")
    if not (0 < p["lr"] < 1):
        fail("lr", "a learning rate in (0, 1)")
    if p["ablation_encoder"] not in p["encoders"]:
        fail("ablation_encoder", f"one of the study's encoders {p['encoders']}")
    if p["ablation_size"] not in p["sizes"]:
        fail("ablation_size", f"one of the study's sizes {p['sizes']} (the ablation reuses those runs)")
    if len(p["ablation_seeds"]) < 2 or len(set(p["ablation_seeds"])) < len(p["ablation_seeds"]) \
            or not set(p["ablation_seeds"]) <= set(p["seeds"]):
        fail("ablation_seeds", f"two or more distinct seeds out of the study's seeds {p['seeds']}")
    if any(not math.isfinite(w) or w <= 0 for w in p["lam_sweep"]):
        fail("lam_sweep", "finite λ values > 0 (λ = 0 and the study's λ are always included)")


@dataclass(frozen=True)
class RunSettings:
    """What every run of one encoder shares: the model, the GRW window and scale weight, and the optimisation.

    Every run takes ``steps`` optimizer steps (a fixed budget whatever the training-set size), in batches of
    ``batch_size`` clips (fewer when the training set is smaller), AdamW with a 5 % warm-up and a cosine schedule.
    """

    model: AirplanesModel = field(default_factory=AirplanesModel)
    T: int = 5
    alpha: float = 0.5
    steps: int = 200
    batch_size: int = 32
    lr: float = 1e-3
    device: str = "cpu"

    def config(self, size: int, seed: int) -> TrainConfig:
        """The engine's configuration of a run on ``size`` clips: enough whole epochs for at least ``steps`` steps."""
        batch = min(self.batch_size, size)
        epochs = math.ceil(self.steps / (size // batch))
        return TrainConfig(epochs=epochs, batch_size=batch, lr=self.lr, warmup_epochs=0.05 * epochs, seed=seed,
                           device=self.device, progress=False, log_epochs=False)


def encoder_settings(p: Mapping[str, Any], *, alpha: float, device: str) -> dict[str, RunSettings]:
    """The :class:`RunSettings` of each encoder of resolved parameters ``p``: one model but for the temporal kernel."""
    model = AirplanesModel(embed_dim=p["K"], width=p["width"], stages=p["stages"], head_heads=p["heads"])
    return {encoder: RunSettings(replace(model, temporal_kernel=ENCODERS[encoder]), T=p["T"], alpha=alpha,
                                 steps=p["steps"][encoder], batch_size=p["batch_size"], lr=p["lr"], device=device)
            for encoder in p["encoders"]}


class GRWTerm(nn.Module):
    """One part of the GRW loss as a regularizer on ``Z [B, N, K]``: ``"ordering"``, ``"scale"`` or the whole
    ``"loss"``."""

    def __init__(self, T: int, alpha: float = 0.5, term: Literal["loss", "ordering", "scale"] = "loss") -> None:
        super().__init__()
        if term not in ("loss", "ordering", "scale"):
            raise ValueError(f"term must be 'loss', 'ordering' or 'scale', got {term!r}")
        self.grw, self.term = GRWLoss(T, alpha), term

    def forward(self, Z: Tensor) -> Tensor:
        return getattr(self.grw(Z, return_terms=True), self.term)


class Trained(NamedTuple):
    """One run: accuracy on the scored set (a fraction), its predictions there (logits, Z, labels), history, seconds and
    the trained model (on the CPU, in eval mode)."""

    accuracy: float
    predictions: Predictions
    history: list[dict[str, Any]]
    seconds: float
    model: GRWVideoClassifier


def train_and_score(
    train: ClipDataset, score: ClipDataset, settings: RunSettings, *, seed: int, lam: float,
    regularizer: nn.Module | None = None,
) -> Trained:
    """Train the recipe's model on ``train`` with ``CE + lam · regularizer(Z)`` and score it on ``score``.

    The regularizer defaults to the GRW loss; it is computed (and logged as ``train_grw``) even when ``lam = 0``,
    so the baseline's history shows the GRW loss it is not trained on, on the same scale as the GRW run's.
    """
    seed_everything(seed)
    model = build_model(settings.model, len(train.classes))
    regularizer = regularizer if regularizer is not None else GRWLoss(settings.T, settings.alpha)
    result = fit(model, train, None, settings.config(len(train), seed), regularizer=regularizer, lam=lam)
    predictions = predict(result.model, score, device=settings.device)
    accuracy = float((predictions.logits.argmax(dim=1) == predictions.labels).double().mean())
    return Trained(accuracy, predictions, result.history, result.seconds, result.model.cpu().eval())


class Job(NamedTuple):
    """The arguments of one :func:`train_and_score` call."""

    train: ClipDataset
    score: ClipDataset
    settings: RunSettings
    seed: int
    lam: float
    regularizer: nn.Module | None = None


def train_many(jobs: Sequence[Job], *, processes: int = 1, progress: bool = True, desc: str = "runs") -> list[Trained]:
    """:func:`train_and_score` of every job, in order; ``processes > 1`` trains that many at once.

    The processes are spawned with this process's thread count; every run is seeded on its own, so the results are
    the same as one after another.
    """
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    calls = [(job[:3], {"seed": job.seed, "lam": job.lam, "regularizer": job.regularizer}) for job in jobs]
    with tqdm(total=len(jobs), desc=desc, disable=not progress) as bar:
        if processes == 1:
            done = []
            for args, kwargs in calls:
                done.append(train_and_score(*args, **kwargs))
                bar.update()
            return done
        context = multiprocessing.get_context("spawn")  # not fork: the parent's thread pools do not survive a fork
        with ProcessPoolExecutor(processes, mp_context=context, initializer=torch.set_num_threads,
                                 initargs=(torch.get_num_threads(),)) as workers:
            futures = [workers.submit(train_and_score, *args, **kwargs) for args, kwargs in calls]
            done = []
            for future in futures:
                done.append(future.result())
                bar.update()
            return done


Runs = dict[str, dict[str, dict[int, list[Trained]]]]


def run_study(
    pool: AirplanesDataset, score: ClipDataset, settings: Mapping[str, RunSettings], *, sizes: Sequence[int],
    seeds: Sequence[int], arms: Mapping[str, float], processes: int = 1, progress: bool = True,
) -> Runs:
    """``runs[encoder][arm][size][i]``: each encoder (name → settings) and arm (name → λ) trained on the same
    ``size`` clips of ``pool`` for ``seeds[i]``.

    The clips of a (size, seed) are a class-balanced draw from ``pool`` seeded by the seed; every encoder and arm of it
    share them, and the arms of one encoder share its initial weights and batch order.
    """
    keys = [(encoder, arm, size, i) for encoder in settings for size in sizes for i in range(len(seeds))
            for arm in arms]
    jobs = [Job(pool.subset(size, seeds[i]), score, settings[encoder], seeds[i], arms[arm])
            for encoder, arm, size, i in keys]
    runs: Runs = {encoder: {arm: {size: [] for size in sizes} for arm in arms} for encoder in settings}
    for (encoder, arm, size, _), trained in zip(keys, train_many(jobs, processes=processes, progress=progress)):
        runs[encoder][arm][size].append(trained)  # the keys list the seeds in order
    return runs


def summarize_study(
    accuracy: Mapping[str, Mapping[str, Mapping[int, Sequence[float]]]], seeds: Sequence[int], *,
    baseline: str = "baseline", treated: str = "grw",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(study, headline)`` of per-seed accuracies ``accuracy[encoder][arm][size]`` (fractions in [0, 1]).

    ``study``: sizes, seeds and per encoder each arm's accuracies by size and the paired gain ``treated - baseline`` in
    points with its 95 % interval. With both a ``per_frame`` and a ``causal`` encoder also, per size and paired by seed,
    ``interaction_pp`` (the per-frame gain minus the causal gain) and ``per_frame_grw_vs_causal_baseline_pp`` (points).
    ``headline``: the (encoder, size) with the largest mean gain, that gain, its interval and the number of seeds.
    """
    encoders = list(accuracy)
    sizes = sorted(accuracy[encoders[0]][baseline])
    for encoder in encoders:
        for arm in (baseline, treated):
            if sorted(accuracy[encoder][arm]) != sizes:
                raise ValueError(f"{encoder}/{arm}: expected the sizes {sizes}, got {sorted(accuracy[encoder][arm])}")
            for size in sizes:
                values = accuracy[encoder][arm][size]
                if len(values) != len(seeds) or not all(0 <= a <= 1 for a in values):
                    raise ValueError(f"{encoder}/{arm} at size {size}: expected {len(seeds)} accuracies in [0, 1], "
                                     f"got {list(values)}")

    def points(encoder: str, arm: str, size: int) -> list[float]:
        return [100 * a for a in accuracy[encoder][arm][size]]

    def gains(encoder: str, size: int) -> list[float]:
        return [g - b for g, b in zip(points(encoder, treated, size), points(encoder, baseline, size))]

    def arm_accuracy(encoder: str, arm: str) -> dict[str, list[float]]:
        return {str(size): list(accuracy[encoder][arm][size]) for size in sizes}

    study: dict[str, Any] = {"sizes": sizes, "seeds": list(seeds), "encoders": {
        encoder: {baseline: arm_accuracy(encoder, baseline), treated: arm_accuracy(encoder, treated),
                  "paired_gain_pp": {str(size): paired_difference(points(encoder, treated, size),
                                                                  points(encoder, baseline, size)) for size in sizes}}
        for encoder in encoders}}
    if {"per_frame", "causal"} <= set(encoders):
        study["interaction_pp"] = {str(size): paired_difference(gains("per_frame", size), gains("causal", size))
                                   for size in sizes}
        study["per_frame_grw_vs_causal_baseline_pp"] = {
            str(size): paired_difference(points("per_frame", treated, size), points("causal", baseline, size))
            for size in sizes}
    encoder, size = max(((e, n) for e in encoders for n in sizes),
                        key=lambda key: study["encoders"][key[0]]["paired_gain_pp"][str(key[1])]["mean"])
    best = study["encoders"][encoder]["paired_gain_pp"][str(size)]
    headline = {"encoder": encoder, "size": size, "gain_pp": best["mean"], "ci95": best["ci95"], "seeds": len(seeds)}
    return study, headline
