"""The ``python -m grw`` command line: training recipes, benchmarks, Kinetics layout tools and the notebook tour."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grw.recipes import add_train_command


def _bench(args: argparse.Namespace) -> None:
    from grw import bench

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
        seed=args.seed,
    )
    print(f"synthetic Kinetics-layout stand-in at {root}")


def _tour(args: argparse.Namespace) -> None:
    from grw.tour import run_tour

    run_tour(Path(args.notebooks), Path(args.out))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m grw``."""
    parser = argparse.ArgumentParser(prog="python -m grw", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    add_train_command(commands)

    bench = commands.add_parser("bench", help="speed and memory, measured side by side as ratios")
    bench.add_argument("what", choices=["loss", "airplanes", "movinet", "kinetics"])
    bench.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    bench.add_argument("--json", type=Path, default=None, help="also write the measurements to this JSON file")
    bench.set_defaults(run=_bench)

    kinetics = commands.add_parser("kinetics", help="Kinetics-layout tools").add_subparsers(dest="action", required=True)
    check = kinetics.add_parser("check", help="validate ROOT/{train,val,test}/<class>/<video> and report")
    check.add_argument("root", type=Path)
    check.set_defaults(run=_kinetics_check)
    synth = kinetics.add_parser("synth", help="write a synthetic stand-in in the Kinetics layout (H.264 .mp4)")
    synth.add_argument("out", type=Path)
    synth.add_argument("--classes", type=int, default=4)
    synth.add_argument("--train-per-class", type=int, default=16)
    synth.add_argument("--val-per-class", type=int, default=4)
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(run=_kinetics_synth)

    tour = commands.add_parser("tour", help="execute every notebook with papermill and summarise results.json")
    tour.add_argument("--notebooks", default="notebooks")
    tour.add_argument("--out", default="runs/tour")
    tour.set_defaults(run=_tour)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m grw`` and the ``grw`` script."""
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
