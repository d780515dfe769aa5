"""Recipes: one module per experiment, wiring its data, model and the GRW loss into the engine.

A recipe module defines a data spec and a model spec (dataclasses of :func:`grw.options.option`
fields), the model factory, and ``run(data, model, smoothing, cfg)``; its :data:`RECIPE` names
them. Every recipe has the same command line, made from those dataclasses::

    python -m grw train kinetics --data-root /data/k600 --frames 50 --lam 0.1 --out-dir runs/k600
    python -m grw train kinetics --preset a3b --data-root /data/k600 ...   # a released model's settings
    torchrun --nproc_per_node=8 -m grw train kinetics ...          # the same run, 8 processes

and the same notebook call, :func:`launch`, which runs in the kernel or starts ``torchrun``. A recipe
with presets (the settings of published models) takes ``--preset NAME``, whose values become the
defaults of the options it sets, so an option given explicitly wins. A recipe's ``run`` calls
:func:`check_run` before it reads any data and passes its specs to :func:`grw.train.fit`, which saves
them in every checkpoint and resumes only a run with the same.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from grw.io import write_atomic
from grw.loss import GRWLoss
from grw.options import add_options, check_fields, from_args, option, to_args
from grw.train import RESULTS, TrainConfig, TrainResult, check_out_dir, init_distributed, world

__all__ = ["RECIPES", "Recipe", "Run", "Smoothing", "add_train_command", "check_run", "get_recipe", "launch", "summarize",
           "torchrun_command"]

RECIPES = ("airplanes", "kinetics")


@dataclass
class Smoothing:
    """The GRW loss of a run: CE + lam · GRW(Z) over windows of T frames."""

    lam: float = option(0.1, "weight of the GRW loss (paper: 0.1); 0 trains the baseline", at_least=0)
    alpha: float = option(0.5, "weight of the scale term inside the GRW loss (paper: 0.5)", at_least=0)
    T: int = option(5, "frames per GRW window (paper: 5 or 6)", at_least=3, at_most=64)
    max_perms: int = option(1000, "orderings scored per window when T > 7 (a random sample)", at_least=2,
                            at_most=100_000)

    def __post_init__(self) -> None:
        check_fields(self)

    def regularizer(self) -> GRWLoss | None:
        """The loss on ``Z`` to pass to :func:`grw.train.fit`; ``None`` for the baseline (``lam = 0``)."""
        return GRWLoss(self.T, self.alpha, self.max_perms) if self.lam > 0 else None


class Run(NamedTuple):
    """What a recipe's ``run`` gives back: the engine's result and the summary it wrote to ``results.json``."""

    result: TrainResult
    summary: dict[str, Any]


@dataclass(frozen=True)
class Recipe:
    """One experiment: its name, one line about it, its data and model specs, its ``run`` and its presets, if any.

    ``preset_options(name)`` gives the spec fields (by field name) that the preset ``name``, one of
    ``presets``, sets; it raises a ``ValueError`` naming the valid presets for any other name.
    """

    name: str
    description: str
    data: type
    model: type
    run: Callable[[Any, Any, Smoothing, TrainConfig], Run]
    presets: tuple[str, ...] = ()
    preset_options: Callable[[str], dict[str, Any]] | None = None


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name`` (one of :data:`RECIPES`)."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; expected one of {', '.join(RECIPES)}")
    return importlib.import_module(f"grw.recipes.{name}").RECIPE


def check_run(data: Any, smoothing: Smoothing, cfg: TrainConfig) -> None:
    """What can be refused before any data is read: a clip shorter than one GRW window, an ``--out-dir`` holding another run."""
    if smoothing.lam > 0 and data.frames < smoothing.T:
        raise ValueError(f"--frames {data.frames} is fewer than one GRW window of --T {smoothing.T} frames: "
                         "use more frames, a smaller T, or --lam 0 (the baseline)")
    check_out_dir(cfg)


def summarize(data: Any, model: Any, smoothing: Smoothing, cfg: TrainConfig, result: TrainResult, **extra: Any) -> dict[str, Any]:
    """The ``results.json`` of a run: its settings, final validation scores, history, ``extra``; written to ``cfg.out_dir`` on rank 0."""
    final = result.history[-1]
    summary = {
        "data": dataclasses.asdict(data),
        "model": dataclasses.asdict(model),
        "smoothing": dataclasses.asdict(smoothing),
        "config": dataclasses.asdict(cfg),
        **{key: final.get(f"val_{key}") for key in ("top1", "top5")},
        **{f"ema_{key}": final.get(f"ema_val_{key}") for key in ("top1", "top5")},
        **extra,
        "history": result.history,
        "world_size": world()[1],
        "seconds": result.seconds,
    }
    if cfg.out_dir and world()[0] == 0:
        write_atomic(Path(cfg.out_dir) / RESULTS, json.dumps(summary, indent=2) + "\n")
    return summary


# --------------------------------------------------------------------------------------------
# Command line and launcher
# --------------------------------------------------------------------------------------------

def _spec_classes(recipe: Recipe) -> dict[str, type]:
    return {"data": recipe.data, "model": recipe.model, "smoothing": Smoothing, "config": TrainConfig}


class _RecipeParser(argparse.ArgumentParser):
    """The parser of ``train <recipe>``: before it parses, the values of ``--preset NAME`` become its defaults,
    so an option given explicitly wins and ``--help`` shows the preset's values; an unknown preset is one
    ``error:`` line and exit status 1.
    """

    def __init__(self, *args: Any, preset_options: Callable[[str], dict[str, Any]] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.preset_options = preset_options

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> tuple[argparse.Namespace, list[str]]:
        if self.preset_options is not None:
            peek = argparse.ArgumentParser(add_help=False)
            peek.add_argument("--preset")
            name = peek.parse_known_args(args)[0].preset
            if name is not None:
                try:
                    self.set_defaults(**self.preset_options(name))
                except ValueError as error:
                    self.exit(1, "error: " + " ".join(str(error).split()) + "\n")
        return super().parse_known_args(args, namespace)


def add_train_command(commands: argparse._SubParsersAction) -> None:
    """``train <recipe> [options]``: one sub-command per recipe, its options made from the recipe's dataclasses."""
    train = commands.add_parser("train", help="train a recipe (one process, or many under torchrun)")
    recipes = train.add_subparsers(dest="recipe", required=True, metavar="RECIPE", parser_class=_RecipeParser)
    for name in RECIPES:
        recipe = get_recipe(name)
        parser = recipes.add_parser(name, help=recipe.description, description=recipe.description,
                                    formatter_class=train.formatter_class, preset_options=recipe.preset_options)
        if recipe.preset_options is not None:
            sets = ", ".join("--" + field.replace("_", "-") for field in recipe.preset_options(recipe.presets[0]))
            parser.add_argument("--preset", metavar="NAME", help=(
                f"the settings of a published model ({', '.join(recipe.presets)}): the defaults of {sets}; "
                "an option given explicitly wins (default: %(default)s)"))
        for role, cls in _spec_classes(recipe).items():
            add_options(parser, cls, f"{role} ({cls.__name__})")
        parser.set_defaults(run=_run_from_args)


def _run_from_args(args: argparse.Namespace) -> None:
    recipe = get_recipe(args.recipe)
    specs = {role: from_args(cls, args) for role, cls in _spec_classes(recipe).items()}
    init_distributed(specs["config"].device)
    try:
        recipe.run(*specs.values())
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def torchrun_command(
    recipe: str, data: Any, model: Any, smoothing: Smoothing, cfg: TrainConfig, *,
    nproc_per_node: int, nnodes: int = 1, rdzv_endpoint: str = "localhost:29400",
) -> list[str]:
    """The ``torchrun`` command of this node for a run of ``recipe`` over ``nnodes`` × ``nproc_per_node`` processes."""
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc_per_node}"]
    if nnodes > 1:
        command += [f"--nnodes={nnodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}", "--rdzv-id=grw"]
    return command + ["-m", "grw", "train", recipe, *(arg for spec in (data, model, smoothing, cfg) for arg in to_args(spec))]


def launch(
    recipe: str, data: Any, model: Any, smoothing: Smoothing, cfg: TrainConfig, *,
    nproc_per_node: int = 1, nnodes: int = 1, rdzv_endpoint: str = "localhost:29400",
) -> dict[str, Any]:
    """Run ``recipe`` in this process (one process in all) or under ``torchrun`` (streaming its output); its results.json.

    Under torchrun the run writes into ``cfg.out_dir``, which is then required.
    """
    if nproc_per_node * nnodes == 1:
        return get_recipe(recipe).run(data, model, smoothing, cfg).summary
    if not cfg.out_dir:
        raise ValueError("a torchrun launch needs cfg.out_dir: its results.json is read from there")
    command = torchrun_command(recipe, data, model, smoothing, cfg, nproc_per_node=nproc_per_node, nnodes=nnodes,
                               rdzv_endpoint=rdzv_endpoint)
    print(" ".join(command), flush=True)
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as job:
        for line in job.stdout:  # type: ignore[union-attr]
            print(line, end="", flush=True)
    if job.returncode:
        raise subprocess.CalledProcessError(job.returncode, command)
    return json.loads((Path(cfg.out_dir) / RESULTS).read_text())
