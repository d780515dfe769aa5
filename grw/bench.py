"""Benchmarks behind ``python -m grw bench …``: speed and memory as ratios measured side by side in one run."""

from __future__ import annotations

from pathlib import Path


def bench_loss(device: str = "cpu", json_path: Path | None = None) -> dict:
    """Reference vs vectorized GRW loss: forward+backward time and peak extra memory."""
    raise NotImplementedError  # written in this module next


def bench_airplanes(device: str = "cpu", json_path: Path | None = None) -> dict:
    """Rendering speed of the Airplanes dataset (videos/s)."""
    raise NotImplementedError


def bench_movinet(device: str = "cpu", json_path: Path | None = None) -> dict:
    """MoViNet A0 base/stream training-step throughput, peak memory and streaming latency."""
    raise NotImplementedError


def bench_kinetics(device: str = "cpu", json_path: Path | None = None) -> dict:
    """Kinetics loader clips/s per worker, A0 training-step clips/s, and GRW overhead on the step."""
    raise NotImplementedError
