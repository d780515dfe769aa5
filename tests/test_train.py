"""The training loop: one process vs DDP, exact resume, schedules, parameter groups, atomic writes."""

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import Dataset

from grw.loss import grw_loss
from grw.models import GRWVideoClassifier, TemporalTransformerHead
from grw.train import TrainConfig, evaluate, fit, save_atomic, warmup_cosine


class ToyClips(Dataset):
    """Sequences ``[N, 4]`` whose class is the sign of the mean slope of channel 0."""

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
        return self.x[i], self.y[i]

    def set_epoch(self, epoch: int) -> None:
        if epoch == self.interrupt_at_epoch:
            raise KeyboardInterrupt("simulated kill at the start of an epoch")


class FrameEncoder(nn.Module):
    num_features = 8

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.GELU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MeanHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.classifier = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x.mean(dim=1))


def toy_model(dropout: float = 0.0, seed: int = 0, transformer: bool = True) -> GRWVideoClassifier:
    torch.manual_seed(seed)
    head = TemporalTransformerHead(8, 2, num_heads=2, dropout=dropout) if transformer else MeanHead()
    return GRWVideoClassifier(FrameEncoder(), 8, head)


CONFIG = dict(epochs=2, batch_size=8, lr=3e-3, backbone_lr=1e-3, lam=0.1, T=5, progress=False, warmup_epochs=0.5)


def _ddp_worker(rank: int, world_size: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    result = fit(toy_model(transformer=False), ToyClips(), ToyClips(), TrainConfig(**CONFIG))
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
    single = fit(toy_model(transformer=False), ToyClips(), ToyClips(), TrainConfig(**CONFIG))
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
    whole = fit(toy_model(dropout=0.2), ToyClips(), ToyClips(), TrainConfig(**cfg, out_dir=str(tmp_path / "whole")))

    run_dir = str(tmp_path / "killed")
    with pytest.raises(KeyboardInterrupt):
        fit(toy_model(dropout=0.2), ToyClips(interrupt_at_epoch=1), ToyClips(), TrainConfig(**cfg, out_dir=run_dir))
    assert [json.loads(line)["epoch"] for line in open(f"{run_dir}/metrics.jsonl")] == [1]

    resumed = fit(toy_model(dropout=0.2, seed=99), ToyClips(), ToyClips(), TrainConfig(**cfg, out_dir=run_dir, resume=True))
    for name, value in whole.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name
    for name, value in whole.ema.state_dict().items():
        assert torch.equal(resumed.ema.state_dict()[name], value), name
    strip = lambda h: {k: v for k, v in h.items() if k != "seconds"}  # noqa: E731
    assert [strip(h) for h in resumed.history] == [strip(h) for h in whole.history]
    assert len(open(f"{run_dir}/metrics.jsonl").readlines()) == 3


def test_resume_refuses_other_settings(tmp_path):
    fit(toy_model(), ToyClips(), None, TrainConfig(**dict(CONFIG, epochs=1), out_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="other settings for lam"):
        fit(toy_model(), ToyClips(), None, TrainConfig(**dict(CONFIG, lam=0.5), out_dir=str(tmp_path), resume=True))


def test_grw_term_is_trained_only_when_lam_is_positive():
    baseline = fit(toy_model(), ToyClips(), None, TrainConfig(**dict(CONFIG, lam=0.0)))
    smoothed = fit(toy_model(), ToyClips(), None, TrainConfig(**CONFIG))
    assert baseline.history[0]["train_grw"] == 0.0
    assert smoothed.history[0]["train_grw"] > 0
    assert smoothed.history[0]["train_loss"] == pytest.approx(smoothed.history[0]["train_ce"] + 0.1 * smoothed.history[0]["train_grw"])


def test_evaluate_counts_top1_and_top5():
    model = toy_model()
    scores = evaluate(model, ToyClips(), batch_size=7)
    assert scores["n"] == 48 and scores["top5"] == 100.0  # two classes: always in the top 5
    logits = model(ToyClips().x)[0]
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


def test_save_atomic_keeps_the_old_file_when_a_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_atomic({"epoch": 1}, path)

    def broken_save(obj, f):
        open(f, "wb").write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_atomic({"epoch": 2}, path)
    monkeypatch.undo()
    assert torch.load(path) == {"epoch": 1}
    assert list(tmp_path.iterdir()) == [path]


def test_kinetics_command_line_round_trips():
    from grw.train import KineticsSetup, kinetics_args, parse_kinetics_args, torchrun_command

    setup = KineticsSetup(data_root="/data/k600", model="a2", stream=False, init_checkpoint="a2.pth")
    cfg = TrainConfig(epochs=14, lam=0.1, backbone_lr=1e-4, amp="bf16", ema_decay=0.999, sync_bn=True, resume=True)
    assert parse_kinetics_args(kinetics_args(setup, cfg)) == (setup, cfg)
    command = torchrun_command(setup, cfg, nproc_per_node=8, nnodes=2, rdzv_endpoint="node0:29400")
    assert command[1:5] == ["-m", "torch.distributed.run", "--nproc_per_node=8", "--nnodes=2"]
    assert "--rdzv-endpoint=node0:29400" in command and command[command.index("grw.train") + 1] == "kinetics"


FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "movinet"


@pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"MoViNet fixtures not found at {FIXTURES}")
def test_kinetics_model_loads_published_weights_and_every_parameter_trains(tmp_path):
    from grw.models.movinet import create_movinet, load_movinet_pytorch_state_dict
    from grw.train import KineticsSetup, build_kinetics_model

    published = FIXTURES / "a0_stream_state_dict.pt"
    setup = KineticsSetup(data_root="unused", init_checkpoint=str(published), embed_dim=32)
    model = build_kinetics_model(setup, num_classes=5).eval()
    reference = create_movinet("a0", stream=True).eval()
    load_movinet_pytorch_state_dict(reference, torch.load(published, weights_only=True))
    video = torch.rand(2, 3, 5, 32, 32)
    torch.testing.assert_close(model.backbone.features(video), reference.features(video))

    # DDP needs a gradient for every parameter: the published classifier must be gone, the rest reached
    logits, Z = model.train()(video)
    (logits.sum() + grw_loss(Z, 5)).backward()
    assert all(p.grad is not None for p in model.parameters())
    assert not any("backbone.classifier" in name for name, _ in model.named_parameters())

    # A checkpoint of this loop restores the whole model; another class count is a clear error
    torch.save({"model": model.state_dict(), "config": {}}, tmp_path / "checkpoint.pt")
    again = build_kinetics_model(KineticsSetup("unused", init_checkpoint=str(tmp_path / "checkpoint.pt"), embed_dim=32), 5)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))
    with pytest.raises(ValueError, match="classifies 5 classes but the data has 7"):
        build_kinetics_model(KineticsSetup("unused", init_checkpoint=str(tmp_path / "checkpoint.pt"), embed_dim=32), 7)
