"""Benchmarks behind ``python -m grw bench …``: speed and memory as ratios measured side by side in one run.

Peak memory on the CPU is the rise of the process's peak resident set (``VmHWM``, reset through
``/proc/self/clear_refs``) over its size before the measured call, each case in a fresh process so
that memory freed by one case cannot hide the next one's. On CUDA it is the rise of
``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

LOSS_CASES: tuple[tuple[int, int, int], ...] = ((64, 5, 480), (64, 7, 480), (256, 7, 480), (64, 16, 480), (64, 6, 2048))


def _proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_extra_bytes(fn: Callable[[], Any], device: torch.device) -> int:
    """Peak memory ``fn()`` needs above what is allocated before it (bytes)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed heap pages back, so `before` is what is in use
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # reset the peak resident set to the current one
    before = _proc_status_kb("VmRSS")
    fn()
    return (_proc_status_kb("VmHWM") - before) * 1024


def seconds_per_call(fn: Callable[[], Any], min_run_time: float = 1.0) -> float:
    """Median seconds per call of ``fn`` (``torch.utils.benchmark``, synchronising CUDA)."""
    from torch.utils import benchmark  # imported here: it pulls in the C++-extension toolchain

    return benchmark.Timer("fn()", globals={"fn": fn}).blocked_autorange(min_run_time=min_run_time).median


def in_fresh_process(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a new Python process (for clean CPU memory measurements)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def _write_json(results: dict, json_path: Path | None) -> None:
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(results, indent=2) + "\n")


def _print_table(rows: list[dict[str, Any]], columns: dict[str, str]) -> None:
    """Print ``rows`` as an aligned table; ``columns`` maps a key to its format spec."""
    cells = [[format(row[key], spec) for key, spec in columns.items()] for row in rows]
    widths = [max(len(key), *(len(c[i]) for c in cells)) for i, key in enumerate(columns)]
    print("  ".join(key.rjust(w) for key, w in zip(columns, widths)))
    for c in cells:
        print("  ".join(v.rjust(w) for v, w in zip(c, widths)))


def _loss_case(impl: str, B: int, T: int, K: int, device: str) -> dict[str, float]:
    """Time, peak extra memory and value of one loss implementation, forward + backward, on ``[B, T, K]``."""
    from grw.loss import grw_loss, grw_loss_reference

    torch.manual_seed(0)
    dev = torch.device(device)
    loss_fn = {"reference": grw_loss_reference, "vectorized": grw_loss}[impl]
    Z = torch.randn(B, T, K, device=dev, requires_grad=True)

    def step() -> torch.Tensor:
        loss = loss_fn(Z, T, generator=torch.Generator().manual_seed(0))
        loss.backward()
        Z.grad = None
        return loss.detach()

    value = float(step())  # warm-up, and the value to compare
    peak = peak_extra_bytes(step, dev)
    return {"seconds": seconds_per_call(step, min_run_time=0.5), "peak_bytes": peak, "value": value}


def bench_loss(device: str = "cpu", json_path: Path | None = None) -> dict:
    """Reference vs vectorized GRW loss on ``Z [B, T, K]`` (one window per clip): forward+backward time and peak extra memory."""
    rows = []
    for B, T, K in LOSS_CASES:
        measured = {
            impl: (in_fresh_process if device == "cpu" else lambda f, *a: f(*a))(_loss_case, impl, B, T, K, device)
            for impl in ("reference", "vectorized")
        }
        ref, vec = measured["reference"], measured["vectorized"]
        rows.append({
            "B": B, "T": T, "K": K,
            "reference_ms": 1e3 * ref["seconds"],
            "vectorized_ms": 1e3 * vec["seconds"],
            "speedup": ref["seconds"] / vec["seconds"],
            "reference_MB": ref["peak_bytes"] / 2**20,
            "vectorized_MB": vec["peak_bytes"] / 2**20,
            "memory_ratio": vec["peak_bytes"] / max(ref["peak_bytes"], 1),
            "relative_difference": abs(ref["value"] - vec["value"]) / abs(ref["value"]),
        })
    print(f"GRW loss, forward + backward on {device} ({torch.get_num_threads()} threads): reference vs vectorized")
    _print_table(rows, {
        "B": "d", "T": "d", "K": "d", "reference_ms": ".1f", "vectorized_ms": ".3f", "speedup": ".0f",
        "reference_MB": ".1f", "vectorized_MB": ".2f", "memory_ratio": ".4f", "relative_difference": ".1e",
    })
    worst = max(row["relative_difference"] for row in rows)
    if worst > 1e-5:
        raise RuntimeError(f"the two implementations disagree: relative difference {worst:.2e} > 1e-5")
    results = {"device": device, "threads": torch.get_num_threads(), "cases": rows}
    _write_json(results, json_path)
    return results


def bench_airplanes(device: str = "cpu", json_path: Path | None = None) -> dict:
    """Rendering speed of the default Airplanes dataset (1,000 + 100 videos), without touching the cache."""
    import time

    from grw.data.airplanes import AirplanesConfig, render_airplanes

    config = AirplanesConfig()
    started = time.perf_counter()
    videos = sum(len(render_airplanes(config, split, progress=False)["labels"]) for split in ("train", "test"))
    seconds = time.perf_counter() - started
    results = {"config": dataclasses.asdict(config), "videos": videos, "seconds": seconds, "videos_per_second": videos / seconds}
    print(f"Airplanes: {videos} videos of {config.frames}×{config.size}² in {seconds:.1f} s "
          f"({videos / seconds:.0f} videos/s, {torch.get_num_threads()} threads)")
    _write_json(results, json_path)
    return results


def bench_movinet(device: str = "cpu", json_path: Path | None = None) -> dict:
    """MoViNet A0 base/stream training-step throughput, peak memory and streaming latency."""
    raise NotImplementedError


def bench_kinetics(device: str = "cpu", json_path: Path | None = None) -> dict:
    """Kinetics loader clips/s per worker, A0 training-step clips/s, and GRW overhead on the step."""
    raise NotImplementedError
