"""Benchmark plumbing that must work everywhere: memory where /proc is missing, the engine's step, tables, and
the GRW loss measurements (three forms, predicted and measured memory, fresh processes)."""

import ctypes
import os

import pytest
import torch

from grw import bench, grw_loss
from grw.loss import grw_loss_reference
from grw.models.movinet import create_movinet


def test_peak_memory_is_measured_on_linux_and_not_available_without_proc(monkeypatch, capsys, tmp_path):
    big = lambda: torch.ones(64, 2**20, dtype=torch.uint8).add_(1)  # noqa: E731  # a 64 MiB temporary
    measured = bench.peak_extra_bytes(big, torch.device("cpu"))
    assert 60 * 2**20 < measured < 200 * 2**20

    calls = []
    monkeypatch.setattr(bench, "PROC_CLEAR_REFS", tmp_path / "no-proc" / "clear_refs")  # macOS, Windows
    monkeypatch.setattr(ctypes, "CDLL", lambda name: (_ for _ in ()).throw(OSError(f"{name} not found")))
    assert bench.peak_extra_bytes(lambda: calls.append(1), torch.device("cpu")) is None and calls == [1]
    bench._print_table([{"case": "x", "peak_MB": bench.megabytes(None), "ratio": bench._ratio(None, 3)}],
                       {"case": "s", "peak_MB": ".1f", "ratio": ".2f"})
    assert capsys.readouterr().out.splitlines()[1].split() == ["x", "n/a", "n/a"]


def test_benchmarks_time_the_engines_training_step():
    torch.manual_seed(0)
    model = bench._PublishedClassifier(create_movinet("a0", stream=True))
    video, labels = torch.rand(2, 3, 3, 32, 32), torch.tensor([1, 2])
    step = bench._training_step(model, video, labels)
    before = [p.detach().clone() for p in model.parameters()]
    loss, ce, smooth = step()
    assert loss == ce and smooth == 0 and torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # AdamW stepped


# --------------------------------------------------------------------------------------------
# The GRW loss measurements
# --------------------------------------------------------------------------------------------


def test_the_loop_over_orderings_is_the_same_loss_as_the_other_two_forms():
    Z = torch.randn(3, 17, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for T in (3, 5, 8):  # T = 8: a sample of orderings, the same one for the three forms
        values = [f(Z, T, 0.3, max_perms=50, generator=torch.Generator().manual_seed(1)).item()
                  for f in (bench.grw_loss_loop, grw_loss_reference, grw_loss)]
        assert values[0] == pytest.approx(values[1], rel=1e-12) and values[0] == pytest.approx(values[2], rel=1e-12)
    with pytest.raises(ValueError, match=r"\[B, N, K\]"):
        bench.grw_loss_loop(torch.randn(16, 6), 4)


def test_allocated_bytes_counts_every_new_tensor_once_and_no_view():
    def fn() -> None:
        x = torch.ones(1000)  # 4000 bytes
        x.view(10, 100).add_(1)  # a view, in place: nothing new
        y = x * 2  # 4000 bytes
        torch.cat([y, y, y])  # 12000 bytes

    assert bench.allocated_bytes(fn) == (20_000, 12_000)


def test_predicted_peak_memory_of_the_materialized_form_is_what_a_fresh_process_measures():
    # Every [16, 720, T', 256] float32 tensor (T' = 5, 6, 7) is over glibc's 32 MiB mmap threshold: mapped when made and
    # unmapped when freed, so the resident set follows the live tensors (smaller ones stay resident in the heap)
    B, T, K = 16, 7, 256
    with bench.fresh_processes() as run:
        row = run(bench.loss_form_case, "materialized", B, T, K, "cpu", 0.01)
    if row["peak_bytes"] is None:
        pytest.skip("peak memory is not measurable on this platform (no /proc)")
    assert row["P"] == 720 and row["largest_tensor_bytes"] == 4 * B * 720 * T * K
    assert row["predicted_peak_bytes"] == 4 * (3 * B * 720 * T * K + 2 * B * T * K)
    assert 0.85 < row["peak_bytes"] / row["predicted_peak_bytes"] < 1.15  # 2 or 4 such tensors would be far outside


def test_predicted_peak_bytes_of_each_form_and_a_clear_error_for_another():
    W, T, K, P = 8, 5, 16, 24
    n = W * T * K
    assert bench.predicted_peak_bytes("loop", W, T, K, P) == 4 * (P * W * 3 * K + 4 * n)
    assert bench.predicted_peak_bytes("Gram", W, T, K, P, itemsize=8) == 8 * (4 * 640 + 24 * 15 + 2 * 8 * 24)  # U = 15 upper entries at T = 5
    with pytest.raises(ValueError, match="form must be one of"):
        bench.predicted_peak_bytes("gram", W, T, K, P)


def test_a_loss_case_reports_times_memory_and_the_value_of_its_form():
    row = bench.loss_form_case("Gram", 4, 5, 8, "cpu", 0.01)
    torch.manual_seed(0)
    assert row["value"] == grw_loss(torch.randn(4, 5, 8), 5).item()  # the same Z as the case's
    assert (row["form"], row["device"], row["B"], row["T"], row["K"], row["P"]) == ("Gram", "cpu", 4, 5, 8, 24)
    assert row["seconds"] > 0 and row["forward_seconds"] > 0 and row["allocated_bytes"] > row["largest_tensor_bytes"] > 0
    assert row["predicted_peak_bytes"] == bench.predicted_peak_bytes("Gram", 4, 5, 8, 24)
    with pytest.raises(ValueError, match="form must be one of"):
        bench.loss_form_case("vectorised", 4, 5, 8)


def _pid_and_calls() -> tuple[int, int]:
    _CALLS.append(1)
    return os.getpid(), len(_CALLS)


_CALLS: list[int] = []


def test_fresh_processes_share_nothing_between_calls():
    with bench.fresh_processes() as run:
        (first, calls_first), (second, calls_second) = run(_pid_and_calls), run(_pid_and_calls)
    assert calls_first == calls_second == 1 and len({first, second, os.getpid()}) == 3


def test_the_device_line_names_what_measured():
    line = bench.describe_device("cpu")
    assert line.startswith("cpu: ") and torch.backends.cpu.get_cpu_capability() in line and "caches" in line


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_events_time_the_device_not_the_launch():
    # torch.cuda._sleep spins the GPU for a number of clock cycles and returns at once on the host
    short, long = (bench.cuda_seconds_per_call(lambda c=c: torch.cuda._sleep(c), min_run_time=0.2)
                   for c in (10**6, 2 * 10**6))
    assert 1.6 < long / short < 2.4


def test_timing_synchronises_the_accelerator_only_where_this_process_started_it(monkeypatch):
    # in a process forked from one that started CUDA, touching CUDA is an error: a CPU measurement must not sync it
    syncs = []
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    monkeypatch.setattr(torch.accelerator, "synchronize", lambda *args: syncs.append(args))
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    assert bench.seconds_per_call(lambda: torch.ones(4).sum(), min_run_time=0.01) > 0
    assert syncs == []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)  # CUDA work may be in flight: wait for it
    assert bench.seconds_per_call(lambda: torch.ones(4).sum(), min_run_time=0.01) > 0
    assert len(syncs) > 10
