"""The ``python -m grw`` command line: training recipes, benchmarks, Kinetics layout tools and the notebook tour.

Every command reports a bad parameter, a file it cannot read or write, a device it cannot use, and a
run that stopped, as one ``error:`` line on stderr and exit status 1, without a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grw.io import check_writable
from grw.recipes import add_train_command
from grw.tour import NotebookError, parse_value
from grw.train import TrainingStopped, resolve_device

USER_ERRORS = (ValueError, OSError, TrainingStopped, NotebookError)
"""What a command reports as one line: bad parameters and data (``ValueError``), files, stopped runs and notebooks."""


def _bench(args: argparse.Namespace) -> None:
    from grw import bench

    resolve_device(args.device)  # a device that is not there is a clear error before any work
    if args.json is not None:
        check_writable(args.json, "--json file")
    runner = {
        "loss": bench.bench_loss,
        "airplanes": bench.bench_airplanes,
        "movinet": bench.bench_movinet,
        "kinetics": bench.bench_kinetics,
    }[args.what]
    runner(device=args.device, json_path=args.json)


def _kinetics_check(args: argparse.Namespace) -> None:
    from grw.data.kinetics import check_layout

    print(check_layout(args.root))


def _kinetics_synth(args: argparse.Namespace) -> None:
    from grw.data.kinetics import write_synthetic

    root = write_synthetic(
        args.out,
        classes=args.classes,
        train_per_class=args.train_per_class,
        val_per_class=args.val_per_class,
        test_per_class=args.test_per_class,
        seed=args.seed,
        layout=args.layout,
    )
    print(f"synthetic Kinetics-layout stand-in at {root}")


def _kinetics_evaluate(args: argparse.Namespace) -> None:
    import torch.distributed as dist

    from grw.recipes.kinetics import evaluate_checkpoint
    from grw.train import init_distributed

    if args.json is not None:
        check_writable(args.json, "--json file")
    init_distributed(args.device)  # under torchrun: each process scores its share of the clips
    try:
        evaluate_checkpoint(args.checkpoint, args.root, args.split, args.preset, ema=args.ema, batch_size=args.batch_size,
                            workers=args.workers, device=args.device, json_path=args.json)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _tour(args: argparse.Namespace) -> None:
    from grw.tour import run_tour

    run_tour(Path(args.notebooks), Path(args.out), {name: parse_value(value) for name, value in args.parameter})


class _Parser(argparse.ArgumentParser):
    """The parser of every command: its ``--help`` shows the default of every option."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m grw``."""
    parser = _Parser(prog="python -m grw", description=__doc__.split("\n")[0].replace("``", ""))
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    add_train_command(commands)

    bench = commands.add_parser("bench", help="speed and memory, measured side by side as ratios")
    bench.add_argument("what", choices=["loss", "airplanes", "movinet", "kinetics"], help="what to measure")
    bench.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    bench.add_argument("--json", type=Path, default=None, help="also write the measurements to this JSON file")
    bench.set_defaults(run=_bench)

    kinetics = commands.add_parser("kinetics", help="Kinetics-layout tools").add_subparsers(dest="action", required=True)
    check = kinetics.add_parser("check", help="validate ROOT/{train,val,test}/<class>/<video> (or the release layout, "
                                              "ROOT/annotations/<split>.csv) and report")
    check.add_argument("root", type=Path, help="the Kinetics-layout folder")
    check.set_defaults(run=_kinetics_check)
    synth = kinetics.add_parser("synth", help="write a synthetic stand-in in the Kinetics layout (H.264 .mp4)")
    synth.add_argument("out", type=Path, help="the folder to write (reused when it holds the same stand-in)")
    synth.add_argument("--classes", type=int, default=4, help="number of classes")
    synth.add_argument("--train-per-class", type=int, default=16, help="training videos per class")
    synth.add_argument("--val-per-class", type=int, default=4, help="validation videos per class")
    synth.add_argument("--test-per-class", type=int, default=0, help="test videos per class")
    synth.add_argument("--seed", type=int, default=0, help="seed of the videos (the same seed writes the same bytes)")
    synth.add_argument("--layout", choices=["folders", "release"], default="folders",
                       help="class folders, or the official release: annotations/<split>.csv and flat <split>/ folders")
    synth.set_defaults(run=_kinetics_synth)
    evaluate = kinetics.add_parser(
        "evaluate", help="the paper's evaluation: every non-overlapping clip of the test (or val) split, clip and video accuracy")
    evaluate.add_argument("--checkpoint", type=Path, required=True,
                          help="a released GRW snapshot (a0s_v10_….pt) or a checkpoint.pt of `train kinetics`")
    evaluate.add_argument("--root", type=Path, required=True, help="the Kinetics folder: class folders or the release layout")
    evaluate.add_argument("--split", choices=["test", "val"], default="test", help="the split to score")
    evaluate.add_argument("--preset", required=True, help="the model's protocol: a0s, a1s, a2s or a3b (fps, frames, resize, crop)")
    evaluate.add_argument("--ema", action="store_true", help="score the EMA weights instead of the raw ones")
    evaluate.add_argument("--batch-size", type=int, default=16, help="clips per batch and process")
    evaluate.add_argument("--workers", type=int, default=4, help="decoding processes per process")
    evaluate.add_argument("--device", default="cpu", help="cpu, cuda (under torchrun: each process its cuda:LOCAL_RANK) or cuda:N")
    evaluate.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    evaluate.set_defaults(run=_kinetics_evaluate)

    tour = commands.add_parser("tour", help="execute every notebook with papermill and summarise results.json")
    tour.add_argument("--notebooks", default="notebooks", help="folder of the notebooks to run")
    tour.add_argument("--out", default="runs/tour", help="folder of the executed notebooks, figures and results")
    tour.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                      help="set a parameter (a Python literal, else text) of every notebook that declares NAME, or with "
                           "NB:NAME of the one notebook whose name starts with NB (e.g. 03:preset); repeatable")
    tour.set_defaults(run=_tour)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m grw`` and the ``grw`` script."""
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except USER_ERRORS as error:
        sys.exit("error: " + " ".join(str(error).split()))


if __name__ == "__main__":
    main()
