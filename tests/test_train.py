"""The training loop: one process vs DDP, exact resume, protected output folders, stops, schedules, parameter groups."""

import dataclasses
import json
import os
import re
import socket
import sys
from dataclasses import dataclass

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import Dataset, DistributedSampler

from grw import GRWLoss
from grw.io import UnreadableCheckpoint
from grw.models import GRWVideoClassifier, TemporalTransformerHead
from grw.options import option
from grw.train import TrainConfig, TrainingStopped, evaluate, fit, init_distributed, resolve_device, warmup_cosine


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
    assert resumed.seconds >= sum(h["seconds"] for h in resumed.history)  # the killed process's epoch counts too


def test_a_stop_between_the_last_checkpoint_and_its_metrics_line_loses_nothing(tmp_path):
    cfg = TrainConfig(**CONFIG, out_dir=str(tmp_path))
    fit(toy_model(), ToyClips(), ToyClips(), cfg, **GRW)
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(metrics.read_text().splitlines(keepends=True)[0])  # as if killed before the last line was written
    again = fit(toy_model(), ToyClips(), ToyClips(), dataclasses.replace(cfg, resume=True), **GRW)
    assert [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()] == [1, 2] == [h["epoch"] for h in again.history]


def test_one_run_per_folder_a_second_is_refused_at_once(tmp_path):
    import subprocess
    import sys

    from grw.io import lock_holder
    from grw.train import check_out_dir

    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", f"from grw.io import folder_lock\nimport time\n"
                               f"with folder_lock({str(out)!r}):\n    print('held', flush=True)\n    time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        cfg = TrainConfig(**CONFIG, out_dir=str(out), overwrite=True)
        for attempt in (lambda: check_out_dir(cfg), lambda: fit(toy_model(), ToyClips(), ToyClips(), cfg, **GRW)):
            with pytest.raises(ValueError, match=f"{re.escape(str(out))} is in use by another run \\(pid {holder.pid} on "):
                attempt()
        assert sorted(path.name for path in out.iterdir()) == [".lock"]  # nothing of the first run was touched
    finally:
        holder.kill()
        holder.wait()
    assert lock_holder(out) is None  # a killed holder leaves no stale lock
    fit(toy_model(), ToyClips(), ToyClips(), cfg, **GRW)
    assert (out / "checkpoint.pt").is_file()


@dataclass
class ClipSpec:
    """A recipe's data spec in miniature: one setting that defines the run, one that does not."""

    frames: int = option(10, "frames per clip")
    data_root: str = option("data", "where the clips are", defines_run=False)


def test_resume_refuses_other_settings_or_length_but_not_other_display(tmp_path):
    spec = ClipSpec()
    with pytest.raises(KeyboardInterrupt):  # a 2-epoch run stopped after its first
        fit(toy_model(), ToyClips(interrupt_at_epoch=1), None, TrainConfig(**CONFIG, out_dir=str(tmp_path)), **GRW,
            specs={"data": spec})
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["settings"]
    assert saved["data"] == {"frames": 10} and saved["loss"]["lam"] == 0.1 and "log_epochs" not in saved["config"]
    resume = TrainConfig(**CONFIG, out_dir=str(tmp_path), resume=True)
    with pytest.raises(ValueError, match=r"other settings: loss.lam \(0.1 there, 0.5 now\); pass --overwrite"):
        fit(toy_model(), ToyClips(), None, resume, regularizer=GRWLoss(T=5), lam=0.5, specs={"data": spec})
    with pytest.raises(ValueError, match=r"data.frames \(10 there, 8 now\)"):
        fit(toy_model(), ToyClips(), None, resume, **GRW, specs={"data": ClipSpec(frames=8)})
    with pytest.raises(ValueError, match=r"config.lr \(0.003 there, 0.01 now\), loss.regularizer .*data.frames \(10 there, unset now\)"):
        fit(toy_model(), ToyClips(), None, TrainConfig(**dict(CONFIG, lr=1e-2), out_dir=str(tmp_path), resume=True),
            regularizer=GRWLoss(T=4), lam=0.1)
    with pytest.raises(ValueError, match=r"config.epochs \(2 there, 3 now\)"):  # the schedule spans the planned epochs
        fit(toy_model(), ToyClips(), None, TrainConfig(**dict(CONFIG, epochs=3), out_dir=str(tmp_path), resume=True), **GRW,
            specs={"data": spec})
    elsewhere = ClipSpec(data_root="/scratch/data")  # not a setting of the run: the data moved
    resumed = fit(toy_model(), ToyClips(), None,
                  TrainConfig(**dict(CONFIG, log_epochs=False, log_interval=3, max_unreadable=0.9), out_dir=str(tmp_path),
                              resume=True), **GRW, specs={"data": elsewhere})
    assert [h["epoch"] for h in resumed.history] == [1, 2]


def test_a_checkpoint_that_runs_code_is_refused_on_resume_and_nothing_runs(tmp_path, code_running):
    hook, marker = code_running
    torch.save({"epoch": 1, "settings": {}, "history": [], "payload": hook}, tmp_path / "checkpoint.pt")
    with pytest.raises(UnreadableCheckpoint, match="could run code"):
        fit(toy_model(), ToyClips(), None, TrainConfig(**CONFIG, out_dir=str(tmp_path), resume=True), **GRW)
    assert not marker.exists()


def test_an_out_dir_holding_a_run_needs_resume_or_overwrite(tmp_path):
    cfg = dict(CONFIG, epochs=1)
    first = fit(toy_model(), ToyClips(), None, TrainConfig(**cfg, out_dir=str(tmp_path)), **GRW)
    (tmp_path / "results.json").write_text("{}")  # what a recipe writes at the end
    written = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ValueError, match=r"holds the checkpoint of a run \(checkpoint.pt\): pass --resume to continue it, "
                                         r"or --overwrite to start again"):
        fit(toy_model(), ToyClips(), None, TrainConfig(**cfg, out_dir=str(tmp_path), seed=1), **GRW)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == written
    with pytest.raises(ValueError, match="pass one of them"):
        TrainConfig(resume=True, overwrite=True)

    again = fit(toy_model(), ToyClips(), None, TrainConfig(**cfg, out_dir=str(tmp_path), seed=1, overwrite=True), **GRW)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "checkpoint.pt", "metrics.jsonl"]  # nothing of the old run
    assert again.history[0]["train_loss"] != first.history[0]["train_loss"]
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["config"]["seed"] == 1


def test_the_previous_checkpoint_is_kept_and_a_damaged_latest_is_one_clear_line(tmp_path):
    cfg = dict(CONFIG, epochs=3, ema_decay=0.9)
    whole = fit(toy_model(), ToyClips(), None, TrainConfig(**cfg), **GRW)
    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        fit(toy_model(), ToyClips(interrupt_at_epoch=2), None, TrainConfig(**cfg, out_dir=str(run_dir)), **GRW)
    latest, previous = run_dir / "checkpoint.pt", run_dir / "checkpoint.prev.pt"
    assert torch.load(latest, weights_only=True)["epoch"] == 2 and torch.load(previous, weights_only=True)["epoch"] == 1

    latest.write_bytes(latest.read_bytes()[:5000])  # a disk that filled up, a copy that stopped
    stale = run_dir / ".checkpoint.pt.tmp99999999"  # what a save killed half-way leaves behind
    stale.write_bytes(b"half")
    with pytest.raises(UnreadableCheckpoint) as refused:
        fit(toy_model(), ToyClips(), None, TrainConfig(**cfg, out_dir=str(run_dir), resume=True), **GRW)
    message = str(refused.value)
    assert "\n" not in message and f"{latest} is truncated or corrupt" in message
    assert f"the previous checkpoint {previous} (after epoch 1) is readable: pass --resume-previous" in message

    resumed = fit(toy_model(seed=5), ToyClips(), None, TrainConfig(**cfg, out_dir=str(run_dir), resume_previous=True), **GRW)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    for name, value in whole.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name
    assert not stale.exists()
    assert (run_dir / "checkpoint.set-aside.pt").stat().st_size == 5000  # the damaged file is kept, not lost
    assert torch.load(previous, weights_only=True)["epoch"] == 2 and torch.load(latest, weights_only=True)["epoch"] == 3

    latest.unlink()
    previous.write_bytes(b"")
    with pytest.raises(UnreadableCheckpoint, match=r"there is no .*checkpoint.pt; the previous checkpoint cannot be used "
                                                   r"either .*: pass --overwrite to start again"):
        fit(toy_model(), ToyClips(), None, TrainConfig(**cfg, out_dir=str(run_dir), resume=True), **GRW)


class Unreadable(ToyClips):
    """Clips of which only every ``keep``-th can be read (``keep=0``: none), each from its own file."""

    def __init__(self, keep: int) -> None:
        super().__init__()
        self.keep = keep

    def __getitem__(self, i: int):
        return super().__getitem__(i) if self.keep and i % self.keep == 0 else None

    def path(self, i: int) -> str:
        return f"videos/clip{i:02d}.mp4"


def test_an_epoch_of_mostly_unreadable_clips_stops_the_run(tmp_path):
    with pytest.raises(TrainingStopped) as stopped:
        fit(toy_model(), Unreadable(keep=4), None, TrainConfig(**CONFIG, out_dir=str(tmp_path)), **GRW)
    message = str(stopped.value)
    assert message.startswith("36 of the 48 training clips of epoch 1 were unreadable, more than --max-unreadable 0.5")
    named = re.findall(r"videos/clip(\d\d).mp4", message)
    assert len(named) == 5 and all(int(i) % 4 for i in named)
    assert not (tmp_path / "checkpoint.pt").exists()  # the epoch did not count

    with pytest.raises(TrainingStopped, match="48 of the 48 training clips"):
        fit(toy_model(), Unreadable(keep=0), None, TrainConfig(**CONFIG), **GRW)
    kept = fit(toy_model(), Unreadable(keep=4), None, TrainConfig(**CONFIG, max_unreadable=0.8), **GRW)
    assert [h["skipped"] for h in kept.history] == [36, 36]


def test_a_non_finite_loss_stops_the_run_at_the_next_log_interval(tmp_path):
    data = ToyClips()
    data.x[13] = float("nan")
    sampler = DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=0, drop_last=True)
    step = list(sampler).index(13) // 8 + 1  # the step of epoch 1 that meets the NaN clip
    read = -(-step // 2) * 2  # the running loss is read every 2 steps
    cfg = TrainConfig(**dict(CONFIG, log_interval=2), out_dir=str(tmp_path))
    with pytest.raises(TrainingStopped) as stopped:
        fit(toy_model(), data, None, cfg, **GRW)
    message = str(stopped.value)
    assert message.startswith(f"the training loss became nan in epoch 1, after step {read - 2} and by step {read}")
    assert "lr=0.003, backbone_lr=0.001" in message and "lam=0.1, regularizer=GRWLoss(T=5" in message
    assert not (tmp_path / "checkpoint.pt").exists()


def test_settings_that_cannot_train_are_refused():
    for settings, message in [
        (dict(lr=0.0), "lr must be a finite number > 0, got 0.0"),
        (dict(lr=-1.0), "lr must be a finite number > 0"),
        (dict(lr=float("nan")), "lr must be a finite number > 0"),
        (dict(device="foo"), "unknown device 'foo': expected cpu, cuda or cuda:N"),
        (dict(device="meta"), "unsupported device 'meta'"),
        (dict(max_unreadable=1.5), "max_unreadable must be a finite number in [0, 1], got 1.5"),
        (dict(precise_bn=-1), "precise_bn must be an integer in [0, 100000], got -1"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            TrainConfig(**settings)
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch sees no CUDA device; use --device cpu"):
            resolve_device("cuda:0")


class NormalizedFrames(nn.Module):
    """Per-frame channel means ``[B, N, 4]``, batch-normalised with MoViNet's slow momentum (1 % per step)."""

    num_features = 4

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(4, momentum=0.01)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.norm(video.mean(dim=(3, 4))).transpose(1, 2)  # [B, C, N] normalised over (B, N) per channel


def test_precise_bn_sets_the_statistics_of_raw_and_ema_weights_to_their_training_batch_means():
    data = ToyClips()
    cfg = TrainConfig(**{**CONFIG, "epochs": 1}, ema_decay=0.9, precise_bn=3)
    torch.manual_seed(0)
    result = fit(GRWVideoClassifier(NormalizedFrames(), 8, MeanHead()), data, data, cfg)
    sampler = DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=cfg.seed, drop_last=True)
    order = list(sampler)[: 3 * cfg.batch_size]  # the first three batches of the (only) epoch
    batches = [torch.stack([data[i][0].mean(dim=(2, 3)) for i in order[b : b + 8]]) for b in range(0, len(order), 8)]
    mean = torch.stack([x.mean(dim=(0, 2)) for x in batches]).mean(0)  # [4]: the mean of the batch means
    var = torch.stack([x.transpose(0, 1).reshape(4, -1).var(dim=1) for x in batches]).mean(0)  # unbiased, as BatchNorm keeps
    for weights in (result.model, result.ema):
        assert torch.allclose(weights.backbone.norm.running_mean, mean, atol=1e-6)
        assert torch.allclose(weights.backbone.norm.running_var, var, atol=1e-5)
    torch.manual_seed(0)
    lagging = fit(GRWVideoClassifier(NormalizedFrames(), 8, MeanHead()), data, data, TrainConfig(**{**CONFIG, "epochs": 1}))
    assert not torch.allclose(lagging.model.backbone.norm.running_mean, mean, atol=1e-2)  # 6 steps of 1 % from 0


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


@pytest.mark.parametrize("progress", [True, False])
def test_running_losses_are_read_once_per_log_interval(monkeypatch, progress):
    reads = []  # host reads of a tensor by grw's own code (the optimizer's CPU step counters are not device reads)
    original = torch.Tensor.item

    def item(t):
        if "/grw/" in sys._getframe(1).f_code.co_filename:
            reads.append(sys._getframe(1).f_code.co_name)
        return original(t)

    monkeypatch.setattr(torch.Tensor, "item", item)
    data = ToyClips()  # 48 clips, batch 4: 12 steps per epoch
    fit(toy_model(), data, None, TrainConfig(**dict(CONFIG, epochs=1, batch_size=4, progress=progress, log_interval=4)), **GRW)
    assert len(reads) == 12 // 4  # with or without a bar: the reads also check that the loss is finite


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


def test_a_checkpoint_that_cannot_be_saved_stops_the_run_with_one_line_and_keeps_the_last(tmp_path, monkeypatch):
    import grw.io

    real_save = torch.save
    saves = []

    def full_disk(obj, path, *args, **kwargs):
        saves.append(path)
        if len(saves) == 2:  # the second epoch's save finds the disk full, as torch reports it
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 4096 vs 2048")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(grw.io.torch, "save", full_disk)
    with pytest.raises(TrainingStopped, match=r"could not save epoch 2 into .* \(\[enforce fail.*\); the checkpoint of "
                                              r"epoch 1 is intact: free space and pass --resume"):
        fit(toy_model(), ToyClips(), None, TrainConfig(**CONFIG, out_dir=str(tmp_path)), **GRW)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "checkpoint.pt", "metrics.jsonl"]  # no temporary left


@pytest.mark.parametrize("previous", [False, True])
def test_a_save_stopped_between_its_two_renames_loses_no_epoch(tmp_path, previous):
    cfg = dict(CONFIG, epochs=3)
    whole = fit(toy_model(), ToyClips(), None, TrainConfig(**cfg), **GRW)
    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        fit(toy_model(), ToyClips(interrupt_at_epoch=2), None, TrainConfig(**cfg, out_dir=str(run_dir)), **GRW)
    latest = run_dir / "checkpoint.pt"
    latest.rename(run_dir / ".checkpoint.pt.tmp99999999")  # killed after "latest → previous", before "temporary → latest"
    (run_dir / ".checkpoint.pt.tmp99999998").write_bytes(b"half")  # and an older save killed while writing
    resumed = fit(toy_model(), ToyClips(), None, TrainConfig(**cfg, out_dir=str(run_dir), resume=not previous,
                                                             resume_previous=previous), **GRW)
    strip = lambda h: {k: v for k, v in h.items() if k != "seconds"}  # noqa: E731
    assert [strip(h) for h in resumed.history] == [strip(h) for h in whole.history]
    kept = torch.load(run_dir / "checkpoint.set-aside.pt", weights_only=True) if previous else None
    assert (kept["epoch"] == 2) if previous else not (run_dir / "checkpoint.set-aside.pt").exists()  # set aside, not lost
    assert not any(p.name.startswith(".checkpoint.pt.tmp") for p in run_dir.iterdir())
