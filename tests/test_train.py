"""The training loop: one process vs DDP, exact resume, schedules, parameter groups, atomic writes."""

import json
import os
import socket
import sys

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import Dataset

from grw import GRWLoss
from grw.models import GRWVideoClassifier, TemporalTransformerHead
from grw.train import TrainConfig, evaluate, fit, init_distributed, warmup_cosine


class ToyClips(Dataset):
    """Videos ``[4, N, 1, 1]`` (4 channels, N frames, one pixel) whose class is the sign of the mean slope of channel 0."""

    classes = ("down", "up")

    def __init__(self, n: int = 48, frames: int = 10, interrupt_at_epoch: int | None = None) -> None:
        g = torch.Generator().manual_seed(0)
        slope = torch.randn(n, 1, generator=g)
        self.x = torch.randn(n, frames, 4, generator=g) * 0.3 + slope[:, :, None] * torch.arange(frames)[:, None] / frames
        self.y = (slope[:, 0] > 0).long()
        self.interrupt_at_epoch = interrupt_at_epoch

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i].T[:, :, None, None], int(self.y[i])

    def set_epoch(self, epoch: int) -> None:
        if epoch == self.interrupt_at_epoch:
            raise KeyboardInterrupt("simulated kill at the start of an epoch")


class FrameEncoder(nn.Module):
    num_features = 8

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.GELU())

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.net(video.mean(dim=(3, 4)).transpose(1, 2))  # [B, C, N, H, W] → [B, N, 8]


class MeanHead(nn.Module):
    num_classes = 2

    def __init__(self) -> None:
        super().__init__()
        self.classifier = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x.mean(dim=1))


def toy_model(dropout: float = 0.0, seed: int = 0, transformer: bool = True) -> GRWVideoClassifier:
    torch.manual_seed(seed)
    head = TemporalTransformerHead(8, 2, num_heads=2, dropout=dropout) if transformer else MeanHead()
    return GRWVideoClassifier(FrameEncoder(), 8, head)


CONFIG = dict(epochs=2, batch_size=8, lr=3e-3, backbone_lr=1e-3, progress=False, warmup_epochs=0.5)
GRW = dict(regularizer=GRWLoss(T=5), lam=0.1)


def _ddp_worker(rank: int, world_size: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    init_distributed("cpu")
    result = fit(toy_model(transformer=False), ToyClips(), ToyClips(), TrainConfig(**CONFIG), **GRW)
    if rank == 0:
        torch.save({"state": result.model.state_dict(), "history": result.history}, out)
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process(tmp_path):
    # The head is a mean + linear: attention's key bias has an exactly-zero gradient, which Adam's
    # normalisation turns into steps driven by rounding noise, different in every reduction order.
    single = fit(toy_model(transformer=False), ToyClips(), ToyClips(), TrainConfig(**CONFIG), **GRW)
    out = tmp_path / "ddp.pt"
    mp.start_processes(_ddp_worker, args=(2, _free_port(), str(out)), nprocs=2, start_method="spawn")
    ddp = torch.load(out)
    assert len(ddp["history"]) == len(single.history) == 2
    for name, value in single.model.state_dict().items():
        assert torch.allclose(ddp["state"][name], value, atol=1e-5), name
    for a, b in zip(single.history, ddp["history"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_top1"] == pytest.approx(b["val_top1"]) and b["val_n"] == 48


def test_resume_after_a_kill_ends_like_an_uninterrupted_run(tmp_path):
    cfg = dict(CONFIG, epochs=3, ema_decay=0.9)
    whole = fit(toy_model(dropout=0.2), ToyClips(), ToyClips(), TrainConfig(**cfg, out_dir=str(tmp_path / "whole")), **GRW)

    run_dir = str(tmp_path / "killed")
    with pytest.raises(KeyboardInterrupt):
        fit(toy_model(dropout=0.2), ToyClips(interrupt_at_epoch=1), ToyClips(), TrainConfig(**cfg, out_dir=run_dir), **GRW)
    assert [json.loads(line)["epoch"] for line in open(f"{run_dir}/metrics.jsonl")] == [1]

    resumed = fit(toy_model(dropout=0.2, seed=99), ToyClips(), ToyClips(), TrainConfig(**cfg, out_dir=run_dir, resume=True), **GRW)
    for name, value in whole.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name
    for name, value in whole.ema.state_dict().items():
        assert torch.equal(resumed.ema.state_dict()[name], value), name
    strip = lambda h: {k: v for k, v in h.items() if k != "seconds"}  # noqa: E731
    assert [strip(h) for h in resumed.history] == [strip(h) for h in whole.history]
    assert len(open(f"{run_dir}/metrics.jsonl").readlines()) == 3


def test_resume_refuses_other_settings_but_not_other_display_or_length(tmp_path):
    fit(toy_model(), ToyClips(), None, TrainConfig(**dict(CONFIG, epochs=1), out_dir=str(tmp_path)), **GRW)
    with pytest.raises(ValueError, match=r"other settings for lam \(0.1 there, 0.5 now\)"):
        fit(toy_model(), ToyClips(), None, TrainConfig(**CONFIG, out_dir=str(tmp_path), resume=True),
            regularizer=GRWLoss(T=5), lam=0.5)
    with pytest.raises(ValueError, match="other settings for lr .*regularizer"):
        fit(toy_model(), ToyClips(), None, TrainConfig(**dict(CONFIG, lr=1e-2), out_dir=str(tmp_path), resume=True),
            regularizer=GRWLoss(T=4), lam=0.1)
    resumed = fit(toy_model(), ToyClips(), None,
                  TrainConfig(**dict(CONFIG, log_epochs=False, log_interval=3), out_dir=str(tmp_path), resume=True), **GRW)
    assert [h["epoch"] for h in resumed.history] == [1, 2]


def test_grw_term_is_trained_only_with_a_regularizer():
    baseline = fit(toy_model(), ToyClips(), None, TrainConfig(**CONFIG))
    smoothed = fit(toy_model(), ToyClips(), None, TrainConfig(**CONFIG), **GRW)
    assert baseline.history[0]["train_grw"] == 0.0
    assert smoothed.history[0]["train_grw"] > 0
    assert smoothed.history[0]["train_loss"] == pytest.approx(smoothed.history[0]["train_ce"] + 0.1 * smoothed.history[0]["train_grw"])


def test_evaluate_counts_top1_and_top5():
    model = toy_model()
    scores = evaluate(model, ToyClips(), batch_size=7)
    assert scores["n"] == 48 and scores["top5"] == 100.0  # two classes: always in the top 5
    data = ToyClips()
    logits = model(torch.stack([data[i][0] for i in range(len(data))]))[0]
    assert scores["top1"] == pytest.approx(100 * (logits.argmax(1) == ToyClips().y).float().mean().item())


def test_warmup_cosine_schedule():
    assert warmup_cosine(0, 100, 10, 0.01) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10, 0.01) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 10, 0.01) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10, 0.01) == pytest.approx(0.01 + 0.99 * 0.5)
    assert warmup_cosine(100, 100, 10, 0.01) == pytest.approx(0.01)


def test_backbone_and_head_get_their_own_learning_rates():
    from grw.train import build_optimizer

    model = toy_model()
    optimizer = build_optimizer(model, TrainConfig(lr=1e-3, backbone_lr=1e-4, weight_decay=0.05))
    backbone = {id(p) for p in model.backbone.parameters()}
    for group in optimizer.param_groups:
        in_backbone = {id(p) in backbone for p in group["params"]}
        assert len(in_backbone) == 1
        assert group["lr"] == (1e-4 if in_backbone.pop() else 1e-3)
        assert group["weight_decay"] == (0.05 if all(p.ndim > 1 for p in group["params"]) else 0.0)


def test_class_count_mismatch_is_a_clear_error():
    torch.manual_seed(0)
    model = GRWVideoClassifier(FrameEncoder(), 8, num_classes=3)
    with pytest.raises(ValueError, match="classifies 3 classes but the data has 2"):
        fit(model, ToyClips(), None, TrainConfig(**CONFIG))


def test_running_losses_are_read_once_per_log_interval(monkeypatch):
    reads = []  # host reads of a tensor by grw's own code (the optimizer's CPU step counters are not device reads)
    original = torch.Tensor.item

    def item(t):
        if "/grw/" in sys._getframe(1).f_code.co_filename:
            reads.append(sys._getframe(1).f_code.co_name)
        return original(t)

    monkeypatch.setattr(torch.Tensor, "item", item)
    data = ToyClips()  # 48 clips, batch 4: 12 steps per epoch
    fit(toy_model(), data, None, TrainConfig(**dict(CONFIG, epochs=1, batch_size=4, progress=True, log_interval=4)), **GRW)
    assert len(reads) == 12 // 4


def test_contract_violations_are_refused_before_any_work(tmp_path):
    class Frames(ToyClips):  # an item in the [N, C] layout of a sequence model, not a video
        def __getitem__(self, i):
            return self.x[i], int(self.y[i])

    class Triples(ToyClips):
        def __getitem__(self, i):
            return (*super().__getitem__(i), 0)

    class Unnamed(ToyClips):
        classes = property(lambda self: (_ for _ in ()).throw(AttributeError))

    cfg = TrainConfig(**CONFIG, out_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"float tensor \[C, T, H, W\]"):
        fit(toy_model(), Frames(), None, cfg)
    with pytest.raises(TypeError, match=r"must be \(video \[C, T, H, W\], label\)"):
        fit(toy_model(), Triples(), None, cfg)
    with pytest.raises(TypeError, match="lacks classes"):
        fit(toy_model(), Unnamed(), None, cfg)
    with pytest.raises(TypeError, match="parameter_groups"):
        fit(nn.Linear(4, 2), ToyClips(), None, cfg)
    with pytest.raises(ValueError, match="fewer than one window of T=12"):  # 10 frames per clip
        fit(toy_model(), ToyClips(), None, cfg, regularizer=GRWLoss(T=12), lam=0.1)
    assert list(tmp_path.iterdir()) == []  # nothing was trained or written
