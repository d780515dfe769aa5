"""Benchmark plumbing that must work everywhere: memory where /proc is missing, the engine's step, tables."""

import ctypes

import torch

from grw import bench
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
