"""Benchmarks behind ``python -m grw bench …``: speed and memory as ratios measured side by side in one run.

Peak memory on the CPU is the rise of the process's peak resident set (``VmHWM``, reset through
``/proc/self/clear_refs``) over its size before the measured call, each case in a fresh process so
that memory freed by one case cannot hide the next one's. On CUDA it is the rise of
``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import json
import logging
import math
import multiprocessing
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
from torch import nn

from grw.contracts import ClassifierOutput
from grw.io import text_table, write_atomic

# torch.utils.benchmark imports the C++-extension toolchain, which warns "No CUDA runtime is found" on a CPU machine;
# nothing here compiles. Quieted unless the user has set that logger's level.
if logging.getLogger("torch.utils.cpp_extension").level == logging.NOTSET:
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)

LOSS_CASES: tuple[tuple[int, int, int], ...] = ((64, 5, 480), (64, 7, 480), (256, 7, 480), (64, 16, 480), (64, 6, 2048))


PROC_STATUS = Path("/proc/self/status")
PROC_CLEAR_REFS = Path("/proc/self/clear_refs")


def _proc_status_kb(field: str) -> int:
    with open(PROC_STATUS) as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in {PROC_STATUS}")


def _trim_heap() -> None:
    """Give freed heap pages back to the system (glibc), so the resident set is what is in use."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: freed pages may stay resident and hide part of a rise
        pass


def peak_extra_bytes(fn: Callable[[], Any], device: torch.device) -> int | None:
    """Peak memory ``fn()`` needs above what is allocated before it (bytes); ``None`` where it cannot be measured.

    On the CPU this needs Linux's ``/proc`` (macOS and Windows have no resettable peak): elsewhere ``fn``
    still runs and the result is ``None``, shown as "n/a" in the tables.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    try:
        _trim_heap()
        PROC_CLEAR_REFS.write_text("5")  # reset the peak resident set to the current one
        before = _proc_status_kb("VmRSS")
    except OSError:
        fn()
        return None
    fn()
    return (_proc_status_kb("VmHWM") - before) * 1024


def megabytes(size: int | None) -> float | None:
    """Bytes → MiB, ``None`` kept (not measured)."""
    return None if size is None else size / 2**20


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a / max(b, 1)


def seconds_per_call(fn: Callable[[], Any], min_run_time: float = 1.0, num_threads: int = 1) -> float:
    """Median seconds per call of ``fn`` (``torch.utils.benchmark``) on ``num_threads`` CPU threads.

    The accelerator is synchronised at every reading only where it may hold work: where this process has started
    CUDA (or on MPS). A CPU measurement never touches CUDA, which in a process forked from one that had started
    it is an error (the fresh processes of :func:`fresh_processes` on a GPU machine).
    """
    from torch.utils import benchmark  # imported here: it pulls in the C++-extension toolchain
    from torch.utils.benchmark.utils.timer import timer as synchronising_timer

    accelerator_busy = torch.cuda.is_initialized() or torch.backends.mps.is_available()
    timer = benchmark.Timer("fn()", globals={"fn": fn}, num_threads=num_threads,
                            timer=synchronising_timer if accelerator_busy else time.perf_counter)
    return timer.blocked_autorange(min_run_time=min_run_time).median


def in_fresh_process(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a new Python process (for clean CPU memory measurements)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def _write_json(results: dict, json_path: Path | None) -> None:
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(json_path, json.dumps(results, indent=2) + "\n")


def _print_table(rows: list[dict[str, Any]], columns: dict[str, str]) -> None:
    """Print ``rows`` as an aligned table; ``columns`` maps a key to its format spec; ``None`` or NaN reads "n/a"."""
    def cell(value: Any, spec: str) -> str:
        return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)

    print(text_table(list(columns), [[cell(row[key], spec) for key, spec in columns.items()] for row in rows], align="r" * len(columns)))


# --------------------------------------------------------------------------------------------
# The GRW loss: three forms (a loop over orderings, materialized, Gram), their peak memory, measured and predicted
# --------------------------------------------------------------------------------------------

LOSS_FORMS: tuple[str, ...] = ("loop", "materialized", "Gram")


def grw_loss_loop(
    Z: torch.Tensor, T: int, alpha: float = 0.5, *, max_perms: int = 1000, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The GRW loss of ``Z [B, N, K]`` one ordering at a time: ``P`` permuted windows ``[W, T, K]``, each kept for backward.

    The definition as written, to compare with ``grw_loss_reference`` (all orderings at once) and ``grw_loss`` (Gram form).
    """
    from grw.loss import _check_embeddings, permutations, windows

    _check_embeddings(Z, T)
    w = windows(Z.to(torch.promote_types(Z.dtype, torch.float32)), T)  # [W, T, K]
    orderings = permutations(T, max_perms, generator, device=Z.device)
    logits = torch.stack([-0.5 * w[:, p].diff(n=2, dim=1).pow(2).sum(dim=(1, 2)) for p in orderings], dim=1)  # [W, P]
    target = torch.zeros(len(w), dtype=torch.long, device=Z.device)  # the identity is ordering 0
    ordering = torch.nn.functional.cross_entropy(logits, target)
    return ordering + alpha * 0.5 * w.diff(dim=1).pow(2).sum(dim=(1, 2)).mean()


def _loss_function(form: str) -> Callable[..., torch.Tensor]:
    from grw.loss import grw_loss, grw_loss_reference

    functions = {"loop": grw_loss_loop, "materialized": grw_loss_reference, "Gram": grw_loss}
    if form not in functions:
        raise ValueError(f"form must be one of {list(functions)}, got {form!r}")
    return functions[form]


def predicted_peak_bytes(form: str, W: int, T: int, K: int, P: int, itemsize: int = 4) -> int:
    """Bytes of the tensors alive together at the peak of one forward + backward of ``form`` on ``W`` windows.

    With ``n = W·T·K`` (one copy of the windows) and ``P`` orderings:

    * loop: every ordering's accelerations ``[W, T-2, K]``, saved for the backward pass, + 4n;
    * materialized: three ``[W, P, T, K]`` in the backward of the first time difference (the gradient of each
      of its two slices, scattered into zeros of full size, and their sum) + 2n;
    * Gram: the centred windows and three more ``n`` in the backward of the Gram product (one product per
      side and their sum), the ``P`` forms' ``T(T+1)/2`` upper entries, the logits and their gradient ``[W, P]``.
    """
    n = W * T * K
    elements = {
        "loop": P * W * (T - 2) * K + 4 * n,
        "materialized": 3 * W * P * T * K + 2 * n,
        "Gram": 4 * n + P * T * (T + 1) // 2 + 2 * W * P,
    }
    if form not in elements:
        raise ValueError(f"form must be one of {list(elements)}, got {form!r}")
    return itemsize * elements[form]


def allocated_bytes(fn: Callable[[], Any]) -> tuple[int, int]:
    """``(total, largest)``: bytes of all the new tensor storages that ``fn()``'s operators create (freed or not), and the largest.

    Counted op by op (views and in-place results reuse a storage and count nothing), on any device.
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    sizes: list[int] = []

    def storages(tree: Any) -> dict[int, int]:  # address -> bytes of the storage of every tensor in ``tree``
        tensors = [t for t in tree_leaves(tree) if isinstance(t, torch.Tensor)]
        return {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN202
            out = func(*args, **(kwargs or {}))
            inputs = storages((args, kwargs))
            sizes.extend(size for pointer, size in storages(out).items() if pointer not in inputs)
            return out

    with Count():
        fn()
    return sum(sizes), max(sizes, default=0)


CPU_CACHES = Path("/sys/devices/system/cpu/cpu0/cache")


def describe_device(device: str) -> str:
    """One line naming the device that measurements come from: the GPU's name and memory, or the CPU's kernels and caches."""
    if torch.device(device).type == "cuda":
        memory = torch.cuda.get_device_properties(device).total_memory / 2**30
        return f"{device}: {torch.cuda.get_device_name(device)}, {memory:.0f} GiB"
    caches = [
        f"L{(index / 'level').read_text().strip()} {(index / 'size').read_text().strip()}"
        for index in sorted(CPU_CACHES.glob("index*"))
        if (index / "type").read_text().strip() != "Instruction"
    ] if CPU_CACHES.is_dir() else ["caches unknown"]
    return (f"{device}: {platform.machine()}, {torch.backends.cpu.get_cpu_capability()} kernels, "
            f"caches {', '.join(caches)}")


def cuda_seconds_per_call(fn: Callable[[], Any], min_run_time: float = 1.0, blocks: int = 5) -> float:
    """Median seconds per call of ``fn`` on the current CUDA device, timed with CUDA events around blocks of calls.

    A block runs enough calls to last ``min_run_time / blocks``; nothing inside a block waits for the device.
    """
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def block_seconds(calls: int) -> float:
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3  # elapsed_time is in ms

    calls = 1
    while block_seconds(calls) < min_run_time / blocks and calls < 2**20:
        calls *= 2
    return statistics.median(block_seconds(calls) / calls for _ in range(blocks))


@contextlib.contextmanager
def _cpu_threads(threads: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def loss_form_case(
    form: str, B: int, T: int, K: int, device: str = "cpu", min_run_time: float = 0.5, threads: int = 1
) -> dict[str, Any]:
    """One loss form on ``Z [B, T, K]`` (one window per clip, ``W = B``), forward and forward + backward.

    Returns seconds per forward (graph built, then dropped) and per forward + backward, the peak extra bytes of
    forward + backward (:func:`peak_extra_bytes`; ``None`` where not measurable) and the predicted peak
    (:func:`predicted_peak_bytes`), the bytes it allocates in all and its largest tensor (:func:`allocated_bytes`),
    and the loss value. Every call runs on ``threads`` CPU threads; CUDA is timed with events
    (:func:`cuda_seconds_per_call`).
    """
    from grw.loss import permutations

    loss_fn = _loss_function(form)
    torch.manual_seed(0)
    dev = torch.device(device)
    Z = torch.randn(B, T, K, device=dev, requires_grad=True)

    def forward() -> torch.Tensor:
        return loss_fn(Z, T, generator=torch.Generator().manual_seed(0))  # the same orderings every call when T > 7

    def step() -> torch.Tensor:
        loss = forward()
        loss.backward()
        Z.grad = None
        return loss.detach()

    timer = cuda_seconds_per_call if dev.type == "cuda" else functools.partial(seconds_per_call, num_threads=threads)
    with _cpu_threads(threads):
        value = float(step())  # warm-up (a call under allocated_bytes' dispatch mode is not one), and the value to compare
        peak = peak_extra_bytes(step, dev)
        allocated, largest = allocated_bytes(step)
        forward_seconds, seconds = timer(forward, min_run_time), timer(step, min_run_time)
    P = len(permutations(T, generator=torch.Generator().manual_seed(0)))
    return {
        "form": form, "device": device, "threads": threads, "B": B, "T": T, "K": K, "P": P,
        "forward_seconds": forward_seconds, "seconds": seconds,
        "peak_bytes": peak, "predicted_peak_bytes": predicted_peak_bytes(form, B, T, K, P),
        "allocated_bytes": allocated, "largest_tensor_bytes": largest, "value": value,
    }


FRESH_PROCESS_PRELOAD = ("torch", "torch._dynamo", "grw.bench", "torch.utils.benchmark")  # grw.bench first: it quiets
"""Imported once by the server that fresh processes fork from (``torch._dynamo``: a dispatch mode's first use imports it)."""


@contextlib.contextmanager
def fresh_processes(preload: Sequence[str] = FRESH_PROCESS_PRELOAD) -> Iterator[Callable[..., Any]]:
    """``run(fn, *args)`` calls ``fn(*args)`` in a new process every time (``fn`` must be importable).

    Where the platform can fork, the processes are forked from a server that imported ``preload`` once, so
    a call costs tens of milliseconds rather than a new interpreter's seconds; none inherits another's memory.
    """
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload(list(preload))
    with ProcessPoolExecutor(1, mp_context=context, max_tasks_per_child=1) as pool:
        yield lambda fn, *args: pool.submit(fn, *args).result()


def measure_loss_forms(
    cases: Iterable[tuple[int, int, int]],
    forms: Sequence[str] = LOSS_FORMS,
    device: str = "cpu",
    min_run_time: float = 0.5,
    threads: int = 1,
) -> list[dict[str, Any]]:
    """:func:`loss_form_case` of every form on every ``(B, T, K)``, one row each, on ``threads`` CPU threads.

    On the CPU each row is measured in a fresh process (:func:`fresh_processes`), so that memory freed by one
    case cannot hide the next one's growth; on CUDA in this one (``max_memory_allocated`` counts live tensors only).
    """
    jobs = [(form, *case, device, min_run_time, threads) for case in cases for form in forms]
    if torch.device(device).type != "cpu":
        return [loss_form_case(*job) for job in jobs]
    with fresh_processes() as run:
        return [run(loss_form_case, *job) for job in jobs]


def _tiny_call_case(device: str, rounds: int = 7) -> dict[int, float]:
    """Seconds per forward + backward ``GRWLoss(T)`` call on a tiny ``Z [2, 16, 8]``, one thread, for T = 7, 8, 16.

    Median over ``rounds`` interleaved rounds (T = 7, 8, 16, then again), so that a machine whose speed drifts
    during the run moves all three alike. Timed in this process, whose allocator is warm like a training
    process's: in a freshly spawned one, glibc maps the call's larger temporaries anew each call (zeroed pages).
    """
    from grw.loss import GRWLoss

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    Z = torch.randn(2, 16, 8, device=device, requires_grad=True)

    def call(T: int) -> Callable[[], None]:
        loss_fn = GRWLoss(T).to(device)

        def step() -> None:
            loss_fn(Z).backward()
            Z.grad = None

        step()  # warm-up
        return step

    try:
        steps = {T: call(T) for T in (7, 8, 16)}
        seconds: dict[int, list[float]] = {T: [] for T in steps}
        for _ in range(rounds):
            for T, step in steps.items():
                seconds[T].append(seconds_per_call(step, min_run_time=0.1))
        return {T: statistics.median(times) for T, times in seconds.items()}
    finally:
        torch.set_num_threads(threads)


def bench_loss(device: str = "cpu", json_path: Path | None = None) -> dict:
    """Reference vs vectorized GRW loss on ``Z [B, T, K]`` (one window per clip): forward+backward time and peak extra memory.

    Then the fixed cost of a ``GRWLoss`` call, exhaustive (T = 7) vs sampled orderings (T = 8, 16), on a tiny ``Z``.
    """
    measured = measure_loss_forms(LOSS_CASES, ("materialized", "Gram"), device)
    rows = []
    for ref, vec in zip(measured[::2], measured[1::2]):
        rows.append({
            "B": ref["B"], "T": ref["T"], "K": ref["K"],
            "reference_ms": 1e3 * ref["seconds"],
            "vectorized_ms": 1e3 * vec["seconds"],
            "speedup": ref["seconds"] / vec["seconds"],
            "reference_MB": megabytes(ref["peak_bytes"]),
            "vectorized_MB": megabytes(vec["peak_bytes"]),
            "memory_ratio": _ratio(vec["peak_bytes"], ref["peak_bytes"]),
            "relative_difference": abs(ref["value"] - vec["value"]) / abs(ref["value"]),
        })
    print(f"GRW loss, forward + backward on {device} ({measured[0]['threads']} thread): reference vs vectorized")
    _print_table(rows, {
        "B": "d", "T": "d", "K": "d", "reference_ms": ".1f", "vectorized_ms": ".3f", "speedup": ".0f",
        "reference_MB": ".1f", "vectorized_MB": ".2f", "memory_ratio": ".4f", "relative_difference": ".1e",
    })
    worst = max(row["relative_difference"] for row in rows)
    if worst > 1e-5:
        raise RuntimeError(f"the two implementations disagree: relative difference {worst:.2e} > 1e-5")
    seconds = _tiny_call_case(device)
    tiny = [{"T": T, "ms_per_call": 1e3 * s, "ratio_to_T7": s / seconds[7]} for T, s in seconds.items()]
    print(f"\nGRWLoss(T) fixed cost per call on a tiny Z [2, 16, 8], one thread, forward + backward on {device}")
    _print_table(tiny, {"T": "d", "ms_per_call": ".3f", "ratio_to_T7": ".2f"})
    results = {"device": device, "threads": measured[0]["threads"], "cases": rows, "tiny_call": tiny}
    _write_json(results, json_path)
    return results


def bench_airplanes(device: str = "cpu", json_path: Path | None = None) -> dict:
    """Rendering speed of the default Airplanes dataset (1,000 + 100 videos), without touching the cache."""

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


MOVINET_CLIP = (2, 16, 172)  # batch, frames, size of the training-step clips
MOVINET_TRAIN_CASES: tuple[tuple[bool, bool, bool], ...] = tuple(
    (stream, compiled, channels_last) for stream in (False, True) for compiled in (False, True) for channels_last in (False, True)
)


class _PublishedClassifier(nn.Module):
    """A MoViNet with its own classifier under the engine's contract (Z: the logits, one frame), to time the engine's step."""

    def __init__(self, movinet: nn.Module, num_classes: int = 600) -> None:
        super().__init__()
        self.movinet, self.num_classes = movinet, num_classes

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"backbone": list(self.movinet.parameters()), "head": []}

    def forward(self, video: torch.Tensor) -> ClassifierOutput:
        logits = self.movinet(video)
        return ClassifierOutput(logits, logits[:, None])


def _training_step(model: nn.Module, video: torch.Tensor, labels: torch.Tensor, regularizer: Callable | None = None) -> Callable[[], torch.Tensor]:
    """The engine's step (:meth:`grw.train.Trainer.step`) on one batch: CE (+ 0.1 · ``regularizer(Z)``), backward, AdamW."""
    from grw.train import Trainer, TrainConfig

    cfg = TrainConfig(lr=1e-4, device=str(video.device), progress=False)
    trainer = Trainer(model, cfg, steps_per_epoch=1, regularizer=regularizer, lam=0.1, device=video.device)
    return lambda: trainer.step(video, labels)


def _movinet_case(kind: str, stream: bool, compiled: bool, channels_last: bool, device: str) -> dict[str, Any]:
    """One MoViNet-A0 measurement: a training step (``kind="train"``) or a streamed frame (``kind="stream"``)."""

    from grw.models.movinet import create_movinet

    torch.manual_seed(0)
    dev = torch.device(device)
    layout = torch.channels_last_3d if channels_last else torch.contiguous_format
    model = create_movinet("a0", stream=stream).to(dev, memory_format=layout)
    if kind == "train":
        B, T, size = MOVINET_CLIP
        video = torch.rand(B, 3, T, size, size, device=dev).contiguous(memory_format=layout)
        labels = torch.randint(600, (B,), device=dev)
        classifier = _PublishedClassifier(model)
        step = _training_step(torch.compile(classifier) if compiled else classifier, video, labels)
    else:
        model.eval()
        frame = torch.rand(1, 3, 1, 172, 172, device=dev).contiguous(memory_format=layout)
        step_fn = torch.compile(model.step) if compiled else model.step
        state = step_fn(frame, None)[1]

        @torch.no_grad()
        def step() -> torch.Tensor:
            nonlocal state
            logits, state = step_fn(frame, state)
            return logits

    started = time.perf_counter()
    step()  # warm-up (and compilation), then the carried state has its steady shape
    step()
    first_calls = time.perf_counter() - started
    peak = peak_extra_bytes(step, dev)
    return {"seconds": seconds_per_call(step, min_run_time=2.0), "peak_bytes": peak, "warmup_seconds": first_calls}


def bench_movinet(device: str = "cpu", json_path: Path | None = None) -> dict:
    """MoViNet A0 base/stream training-step throughput, peak memory and streaming latency.

    Training step = forward + cross-entropy backward + AdamW step on ``[2, 3, 16, 172, 172]``, eager vs
    ``torch.compile``, contiguous vs ``channels_last_3d``; streaming = ``step`` on one 172² frame with the
    state carried, batch 1, no grad. A case that fails (e.g. compilation) is a row with the error.
    """
    run = in_fresh_process if device == "cpu" else (lambda f, *a: f(*a))

    def measure(kind: str, stream: bool, compiled: bool, channels_last: bool) -> dict[str, Any]:
        row: dict[str, Any] = {
            "model": "A0 stream" if stream else "A0 base",
            "mode": "compile" if compiled else "eager",
            "layout": "channels_last_3d" if channels_last else "contiguous",
        }
        try:
            row |= run(_movinet_case, kind, stream, compiled, channels_last, device)
            row["note"] = ""
        except Exception as error:  # reported in the table, not hidden
            row |= {"seconds": float("nan"), "peak_bytes": None, "warmup_seconds": float("nan")}
            row["note"] = f"failed: {type(error).__name__}: {str(error).splitlines()[0][:80] if str(error) else ''}"
        return row

    B, T, size = MOVINET_CLIP
    train = [measure("train", *case) for case in MOVINET_TRAIN_CASES]
    for row in train:
        eager = next(r for r in train if r["model"] == row["model"] and r["mode"] == "eager" and r["layout"] == "contiguous")
        row |= {
            "clips_per_s": B / row["seconds"],
            "speedup": eager["seconds"] / row["seconds"],
            "peak_MB": megabytes(row["peak_bytes"]),
            "memory_ratio": _ratio(row["peak_bytes"], eager["peak_bytes"]),
        }
    print(f"MoViNet-A0 training step (forward + backward + AdamW), batch {B}, {T}×{size}², on {device} "
          f"({torch.get_num_threads()} threads); ratios vs eager contiguous of the same model")
    _print_table(train, {
        "model": "s", "mode": "s", "layout": "s", "clips_per_s": ".2f", "speedup": ".2f", "peak_MB": ".0f",
        "memory_ratio": ".2f", "warmup_seconds": ".0f", "note": "s",
    })
    streaming = [measure("stream", True, compiled, False) for compiled in (False, True)]
    for row in streaming:
        row |= {"ms_per_frame": 1e3 * row["seconds"], "frames_per_s": 1 / row["seconds"], "peak_MB": megabytes(row["peak_bytes"])}
    print(f"\nMoViNet-A0 stream, one 172² frame per step() with the state carried, batch 1, no grad, on {device}")
    _print_table(streaming, {
        "mode": "s", "ms_per_frame": ".1f", "frames_per_s": ".1f", "peak_MB": ".1f", "warmup_seconds": ".0f", "note": "s",
    })
    results = {"device": device, "threads": torch.get_num_threads(), "clip": MOVINET_CLIP, "train": train, "streaming": streaming}
    _write_json(results, json_path)
    return results


KINETICS_INPUT = (50, 5.0, 172)  # frames, fps, crop: the paper's A0 input
KINETICS_STEP_BATCH = 2


def _loader_case(root: str, training: bool, clips: int) -> dict[str, float]:
    """Clips/s of one data-loading worker (one process, one thread) over the paper's A0 input."""

    from grw.data.kinetics import kinetics_dataset

    torch.set_num_threads(1)
    frames, fps, crop = KINETICS_INPUT
    data = kinetics_dataset(root, "train", frames=frames, fps=fps, crop=crop, training=training)
    data[0]  # opens the codec libraries
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(clips):
        video, _ = data[i % len(data)]
        assert video.shape == (3, frames, crop, crop)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"clips_per_s": clips / wall, "clips_per_cpu_s": clips / cpu}


def _kinetics_step_case(variant: str, device: str, repeats: int) -> list[float]:
    """Seconds of ``repeats`` training steps of A0-stream on ``[2, 3, 50, 172, 172]``: published classifier or GRW head."""

    from grw.loss import GRWLoss
    from grw.models.movinet import create_movinet
    from grw.recipes.kinetics import KineticsModel, build_model

    torch.manual_seed(0)
    dev = torch.device(device)
    frames, _, crop = KINETICS_INPUT
    model = (_PublishedClassifier(create_movinet("a0", stream=True)) if variant == "MoViNet classifier"
             else build_model(KineticsModel(), 600)).to(dev)
    grw = GRWLoss(5).to(dev) if variant == "GRW head + GRW loss" else None
    video = torch.rand(KINETICS_STEP_BATCH, 3, frames, crop, crop, device=dev)
    labels = torch.randint(600, (KINETICS_STEP_BATCH,), device=dev)
    step = _training_step(model, video, labels, grw)
    step()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times.append(time.perf_counter() - started)
    return times


def bench_kinetics(device: str = "cpu", json_path: Path | None = None) -> dict:
    """Kinetics loader clips/s per worker, A0-stream training-step clips/s, and the GRW overhead on the step.

    Loader: a 256², 25 fps, 10 s stand-in (``write_synthetic``) read at the paper's A0 input (50 frames
    at 5 fps, 172² crops), one process with one thread, as one ``DataLoader`` worker. Training step:
    forward + backward + AdamW on ``[2, 3, 50, 172, 172]`` for the published classifier, the GRW head
    trained without the GRW loss (the baseline of notebook 04) and with it; the three interleaved, so
    that drifts of the machine's speed hit them alike.
    """
    import statistics
    import tempfile

    from grw.data.kinetics import write_synthetic
    from grw.loss import GRWLoss

    with tempfile.TemporaryDirectory() as tmp:
        root = write_synthetic(Path(tmp) / "standin", classes=2, train_per_class=4, val_per_class=1, frames=250,
                               size=256, fps=25)
        loader = [{"transform": name, **in_fresh_process(_loader_case, str(root), training, 16)}
                  for name, training in (("training (random resized crop + flip)", True), ("evaluation (resize + centre crop)", False))]
    frames, fps, crop = KINETICS_INPUT
    print(f"Kinetics loader, one worker (1 process, 1 thread): {frames} frames at {fps:g} fps, {crop}² crops, "
          "from 10 s 256² 25 fps H.264 videos")
    _print_table(loader, {"transform": "s", "clips_per_s": ".2f", "clips_per_cpu_s": ".2f"})

    variants = ("MoViNet classifier", "GRW head, λ = 0", "GRW head + GRW loss")
    repeats = 3 if device == "cpu" else 20
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(2):  # two interleaved rounds
        for variant in variants:
            times[variant] += _kinetics_step_case(variant, device, repeats)
    baseline = statistics.median(times["GRW head, λ = 0"])
    steps = []
    for variant in variants:
        seconds = statistics.median(times[variant])
        steps.append({"model": variant, "seconds_per_step": seconds, "clips_per_s": KINETICS_STEP_BATCH / seconds,
                      "vs_grw_head_without_loss": seconds / baseline,
                      "spread": (max(times[variant]) - min(times[variant])) / seconds})
    print(f"\nMoViNet-A0-stream training step (forward + backward + AdamW), batch {KINETICS_STEP_BATCH}, "
          f"{frames}×{crop}², on {device} ({torch.get_num_threads()} threads), median of {2 * repeats}")
    _print_table(steps, {"model": "s", "seconds_per_step": ".2f", "clips_per_s": ".2f", "vs_grw_head_without_loss": ".3f", "spread": ".2f"})
    # The loss itself, timed alone on Z [2, 50, 256]: step-time ratios on a busy CPU are noisier than it is large.
    Z = torch.randn(KINETICS_STEP_BATCH, frames, 256, device=device, requires_grad=True)
    loss_fn = GRWLoss(5).to(device)
    loss_seconds = seconds_per_call(lambda: loss_fn(Z).backward())
    overhead = loss_seconds / baseline
    print(f"GRW loss forward + backward on Z {list(Z.shape)} with T = 5: {1e3 * loss_seconds:.2f} ms = "
          f"{100 * overhead:.2f} % of the step (paper: about 2 % of training time)")
    ratio, spread = steps[2]["vs_grw_head_without_loss"], min(steps[1]["spread"], steps[2]["spread"])
    print(f"(the step ratio, {ratio:.3f}, is {'within' if abs(ratio - 1) < spread else 'outside'} the spread of the "
          "step times, (max - min) / median: on this machine the loss is too cheap to time through whole steps)")
    results = {"device": device, "threads": torch.get_num_threads(), "input": KINETICS_INPUT, "loader": loader,
               "train_step": steps, "grw_loss_seconds": loss_seconds, "grw_overhead": overhead, "step_seconds": times}
    _write_json(results, json_path)
    return results
