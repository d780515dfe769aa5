"""Kinetics layout loading: the synthetic stand-in round trip, clip sampling, skipped files, the layout checker, the CLI."""

import hashlib
import math
import os
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from torchvision import tv_tensors

import grw.data.kinetics as kinetics
from grw.__main__ import main
from grw.data.kinetics import (
    LayoutError,
    check_layout,
    clip_transform,
    eval_resize,
    kinetics_dataset,
    read_clip,
    synthetic_video,
    write_synthetic,
)
from grw.contracts import ClassifierOutput
from grw.train import TrainConfig, collate_clips, fit

SYNTH = dict(classes=3, train_per_class=2, val_per_class=1, seed=0, frames=30, size=32, fps=10)  # 3-s videos
CLIP = dict(frames=10, fps=5)  # 2 s: every other frame of the stand-in
TINY = dict(classes=2, train_per_class=1, val_per_class=1, frames=4, size=16, fps=4)


@pytest.fixture(scope="module")
def standin(tmp_path_factory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("kinetics") / "synth", **SYNTH)


def reference(split: str, label: int, index: int = 0) -> torch.Tensor:
    """The stand-in video as written, uint8 ``[frames, size, size, 3]``."""
    shape = {key: SYNTH[key] for key in ("classes", "frames", "size", "fps")}
    return torch.from_numpy(synthetic_video(SYNTH["seed"], split, label, index, **shape))


def nearest_frames(clip: torch.Tensor, video: torch.Tensor) -> list[int]:
    """For each frame of ``clip [T, H, W, 3]``, the index of the closest frame of ``video [N, H, W, 3]`` (same scale)."""
    errors = ((clip.float()[:, None] - video.float()[None]) ** 2).mean(dim=(2, 3, 4))  # [T, N]
    return errors.argmin(dim=1).tolist()


def files_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_standin_round_trips_through_the_loader(standin):
    data = kinetics_dataset(standin, "val", **CLIP, crop=32, resize=32, training=False)
    assert data.classes == sorted(p.name for p in (standin / "train").iterdir()) == kinetics._synthetic_classes(3)
    assert len(data) == 3
    for i in range(len(data)):
        video, label = data[i]
        assert Path(data.videos[i][0]).parent.name == data.classes[label]
        assert video.shape == (3, 10, 32, 32) and video.dtype == torch.float32
        assert 0 <= video.min() and video.max() <= 1 and video.std() > 0.1
        # frame k is the stand-in's frame 2k: in order, at 5 fps from the first frame
        as_uint8 = (video.permute(1, 2, 3, 0) * 255).round()
        assert nearest_frames(as_uint8, reference("val", label)) == list(range(0, 20, 2))
    small, _ = kinetics_dataset(standin, "val", **CLIP, crop=24, training=False)[0]
    assert small.shape == (3, 10, 24, 24)


def test_read_clip_places_the_window_and_pads_a_short_video(standin, tmp_path):
    path = standin / "val" / kinetics._synthetic_classes(3)[2] / f"{kinetics._synthetic_classes(3)[2]}_0000.mp4"
    video = reference("val", 2)
    for position, first in ((0.0, 0), (0.5, 5), (1.0, 10)):  # 3-s video, 2-s window: start at position · 1 s
        clip = read_clip(path, **CLIP, position=position)
        assert clip.shape == (10, 32, 32, 3) and clip.dtype == torch.uint8
        assert nearest_frames(clip, video) == list(range(first, first + 20, 2))
    # a 1-s video read as a 2-s clip: frames 0, 2, 4, 6, 8, then the last frame (9) repeated
    short = tmp_path / "short.mp4"
    kinetics._write_mp4(short, video[:10].numpy(), fps=10)
    clip = read_clip(short, **CLIP)
    assert nearest_frames(clip, video) == [0, 2, 4, 6, 8, 9, 9, 9, 9, 9]
    assert all(torch.equal(clip[5], clip[k]) for k in range(6, 10)) and not torch.equal(clip[4], clip[5])


def test_training_clips_are_a_function_of_seed_epoch_and_index(standin):
    data = kinetics_dataset(standin, "train", **CLIP, crop=24, training=True, seed=1)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = data[3][0]
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone
    torch.rand(5)
    assert torch.equal(data[3][0], first) and first.shape == (3, 10, 24, 24)
    assert not torch.equal(data[4][0], first)
    data.set_epoch(1)
    assert not torch.equal(data[3][0], first)
    data.set_epoch(0)
    assert torch.equal(data[3][0], first)
    assert not torch.equal(kinetics_dataset(standin, "train", **CLIP, crop=24, training=True, seed=2)[3][0], first)
    # each of two ranks loads its share with worker processes; together they give the same clips as the dataset
    data.set_epoch(2)
    loaded = {}
    for rank in range(2):
        sampler = DistributedSampler(data, num_replicas=2, rank=rank, shuffle=True, seed=0)
        sampler.set_epoch(2)
        loader = DataLoader(data, batch_size=2, sampler=sampler, num_workers=2, collate_fn=collate_clips)
        videos = torch.cat([x for x, _, _ in loader])
        loaded.update(zip(sampler, videos))
    assert sorted(loaded) == list(range(6))
    assert all(torch.equal(video, data[i][0]) for i, video in loaded.items())


def test_the_class_is_in_the_motion_and_reversing_time_mirrors_it():
    names = kinetics._synthetic_classes(120)
    assert sorted(names) == names and names[7] == "007_up_79deg"  # sorted folder names give the class index
    classes, size, fps = 5, 48, 10
    for label in range(classes):
        for index in range(2):
            video = synthetic_video(7, "train", label, index, classes=classes, frames=21, size=size, fps=fps)
            gray = video.astype(np.float64).mean(axis=-1)
            dx, dy = _displacement(gray[0], gray[20])
            heading = math.degrees(math.atan2(dy, abs(dx)))
            assert heading == pytest.approx(-90 + 180 * (label + 0.5) / classes, abs=6)
            assert 0.15 * 2 * size - 1 <= math.hypot(dx, dy) <= 0.25 * 2 * size + 1  # 15-25 % of the frame per second
            # reversed in time, the heading is that of class (classes - 1 - label)
            rdx, rdy = _displacement(gray[20], gray[0])
            assert math.degrees(math.atan2(rdy, abs(rdx))) == pytest.approx(-90 + 180 * (classes - label - 0.5) / classes, abs=6)


def _displacement(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Circular shift ``(dx, dy)`` in pixels that takes image ``a`` to ``b`` (phase correlation, integer pixels)."""
    cross = np.fft.fft2(b) * np.conj(np.fft.fft2(a))
    peak = np.unravel_index(np.argmax(np.fft.ifft2(cross / np.abs(cross)).real), a.shape)
    dy, dx = ((p + n // 2) % n - n // 2 for p, n in zip(peak, a.shape))
    return float(dx), float(dy)


def test_writing_is_deterministic_and_seeded(standin, tmp_path):
    again = write_synthetic(tmp_path / "again", **SYNTH)
    assert files_digest(again) == files_digest(standin)
    other = files_digest(write_synthetic(tmp_path / "other", **{**SYNTH, "seed": 1}))
    videos = [name for name in other if name.endswith(".mp4")]
    assert len(videos) == 9 and all(other[name] != files_digest(standin)[name] for name in videos)


def test_standin_is_reused_rebuilt_or_refused(tmp_path, monkeypatch):
    out = write_synthetic(tmp_path / "s", **TINY)
    written = files_digest(out)
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # an ordinary folder, not a private temporary one
    writes = []
    real_write = kinetics._write_mp4
    monkeypatch.setattr(kinetics, "_write_mp4", lambda *args: (writes.append(args[0]), real_write(*args)))

    assert write_synthetic(out, **TINY) == out and writes == []  # complete and the same parameters: reused
    with pytest.raises(ValueError, match="other parameters"):
        write_synthetic(out, **{**TINY, "seed": 5})
    assert files_digest(out) == written

    (out / kinetics.SYNTHETIC_MARKER).unlink()  # without its marker it is never taken as whole: rebuilt
    (out / "val" / kinetics._synthetic_classes(2)[1] / f"{kinetics._synthetic_classes(2)[1]}_0000.mp4").unlink()
    write_synthetic(out, **TINY)
    assert len(writes) == 4 and files_digest(out) == written

    (out / kinetics.SYNTHETIC_MARKER).unlink()
    (out / "train" / "notes.txt").write_text("mine")  # a folder with something else in it is not deleted
    with pytest.raises(ValueError, match="not a complete synthetic stand-in"):
        write_synthetic(out, **TINY)
    assert (out / "train" / "notes.txt").read_text() == "mine"

    def interrupted(path, video, fps):
        if len(writes) == 2:
            raise KeyboardInterrupt("killed while writing")
        writes.append(path)
        real_write(path, video, fps)

    writes.clear()
    monkeypatch.setattr(kinetics, "_write_mp4", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_synthetic(tmp_path / "t", **TINY)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # nothing that looks complete, no temporary left


class MeanColour(nn.Module):
    """The smallest classifier of the engine's contract: Z = each frame's mean colour, logits from their mean."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.num_classes = classes
        self.classifier = nn.Linear(3, classes)

    def parameter_groups(self) -> dict:
        return {"backbone": [], "head": list(self.parameters())}

    def forward(self, video: torch.Tensor) -> ClassifierOutput:  # [B, 3, T, H, W] → [B, classes], Z [B, T, 3]
        Z = video.mean(dim=(3, 4)).transpose(1, 2)
        return ClassifierOutput(self.classifier(Z.mean(dim=1)), Z)


def cut_at(path: Path, seconds: float) -> Path:
    """Truncate a video file at its first packet of a frame shown at or after ``seconds`` (a download that stopped)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        cut = next(p.pos for p in container.demux(stream) if p.pts is not None and p.pts * stream.time_base >= seconds)
    path.write_bytes(path.read_bytes()[:cut])
    return path


def test_unreadable_videos_are_skipped_counted_and_reported(standin, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(standin, root)
    names = kinetics._synthetic_classes(3)
    garbage = root / "train" / names[0] / f"{names[0]}_0001.mp4"
    garbage.write_bytes(np.random.default_rng(0).bytes(4000))
    truncated = cut_at(root / "train" / names[2] / f"{names[2]}_0000.mp4", 1.0)  # every 2-s window runs past 1 s
    empty = root / "val" / names[1] / f"{names[1]}_0000.mp4"
    empty.write_bytes(b"")
    tail_cut = cut_at(root / "val" / names[2] / f"{names[2]}_0000.mp4", 2.2)  # the evaluation window (0-2 s) is intact

    train = kinetics_dataset(root, "train", **CLIP, crop=16, training=True)
    assert [train[i] is None for i in range(6)] == [False, True, False, False, True, False]
    videos, labels, skipped = collate_clips([train[i] for i in range(6)])
    assert videos.shape == (4, 3, 10, 16, 16) and labels.tolist() == [0, 1, 1, 2] and skipped == 2
    assert collate_clips([None]).videos is None and collate_clips([None, None]).skipped == 2

    val = kinetics_dataset(root, "val", **CLIP, crop=16, training=False)
    result = fit(MeanColour(3), train, val, TrainConfig(epochs=1, batch_size=3, progress=False))
    assert result.history[0]["skipped"] == 2 and result.history[0]["val_skipped"] == 1 and result.history[0]["val_n"] == 2
    one_by_one = fit(MeanColour(3), train, None, TrainConfig(epochs=1, batch_size=1, progress=False))
    assert one_by_one.history[0]["skipped"] == 2 and math.isfinite(one_by_one.history[0]["train_loss"])  # empty batches pass

    # the checker also decodes each video's end, so it reports the file whose tail is missing
    report = check_layout(root)
    assert sorted(report.unreadable) == sorted([garbage, truncated, empty, tail_cut])
    assert report.durations == {"train": [3.0] * 4, "val": [3.0]}


def _layout(root: Path, files: list[str]) -> Path:
    for name in files:  # a name ending in "/" is an empty folder
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).mkdir() if name.endswith("/") else (root / name).write_bytes(b"")
    return root


@pytest.mark.parametrize(
    "files,message",
    [
        (["videos/a/x.mp4"], r"has no split folders \(found: videos\); expected ROOT/train and ROOT/val"),
        (["train/a/x.mp4"], "has no val folder; expected ROOT/train and ROOT/val"),
        (["train/a/x.mp4", "val/"], "the val split at .* is empty; expected one folder per class holding videos"),
        (["train/a/x.mp4", "train/b/y.mp4", "val/a/z.mp4"], r"1 class\(es\) in train have no folder in val: b; expected the"),
        (["train/a/x.mp4", "val/a/y.mp4", "val/c/z.mp4"], r"class\(es\) in val have no folder in train: c"),
        (["train/a/x.mp4", "train/y.mp4", "val/a/z.mp4"], "directly in the train folder; expected .*/train/<class>/<video>"),
        (["train/a/x.txt", "val/a/z.mp4"], "class folder .*/train/a has no videos; expected .mp4/.avi/.mkv/.webm files"),
        (["train/a/b/x.mp4", "val/a/z.mp4"], "is a folder inside the class folder a; expected the videos directly"),
    ],
)
def test_layout_checker_says_what_was_expected(tmp_path, files, message):
    with pytest.raises(LayoutError, match=message):
        check_layout(_layout(tmp_path / "root", files))


def test_layout_report_counts_and_ignored_files(standin, tmp_path):
    with pytest.raises(LayoutError, match="does not exist; expected ROOT/train"):
        check_layout(tmp_path / "missing")
    root = tmp_path / "root"
    shutil.copytree(standin, root)
    (root / "train" / "README.txt").write_text("not a class")
    (root / "val" / kinetics._synthetic_classes(3)[0] / "thumbs.db").write_bytes(b"")
    report = check_layout(root)
    names = kinetics._synthetic_classes(3)
    assert report.classes == names
    assert report.videos == {"train": dict.fromkeys(names, 2), "val": dict.fromkeys(names, 1)}
    assert report.unreadable == [] and report.probed == {"train": 6, "val": 3}
    assert sorted(p.name for p in report.ignored) == ["README.txt", "thumbs.db"]
    text = str(report).splitlines()
    assert text[0].endswith(": 3 classes")
    assert text[2].split() == ["train", "3", "6", "2", "/", "2", "/", "2", "6", "0", "3.0", "/", "3.0", "/", "3.0"]
    assert text[3].split()[:5] == ["val", "3", "3", "1", "/"]
    assert "ignored files (not videos): 2" in text


def test_manifest_input(standin, tmp_path):
    (tmp_path / "videos").symlink_to(standin)
    folder = kinetics_dataset(standin, "val", **CLIP, crop=16, training=False)
    lines = [f"videos/{Path(path).relative_to(standin)} {info['label']}" for path, info in (folder.videos[i] for i in range(3))]
    (tmp_path / "val.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "classes.txt").write_text("\n".join(folder.classes) + "\n")
    for root in (tmp_path, tmp_path / "{split}.txt"):
        listed = kinetics_dataset(root, "val", **CLIP, crop=16, training=False)
        assert listed.classes == folder.classes and len(listed) == 3
        for i in range(3):
            assert listed[i][1] == folder[i][1] and torch.equal(listed[i][0], folder[i][0])

    (tmp_path / "val.txt").write_text("videos/nowhere.mp4 0\n")
    with pytest.raises(FileNotFoundError, match="relative to"):
        kinetics_dataset(tmp_path, "val", **CLIP, crop=16, training=False)
    (tmp_path / "val.txt").write_text(lines[0].rsplit(" ", 1)[0] + "\n")
    with pytest.raises(ValueError, match="without a label"):
        kinetics_dataset(tmp_path, "val", **CLIP, crop=16, training=False)
    with pytest.raises(FileNotFoundError, match="expected a folder .*/test/<class>/<video>.mp4 or a manifest"):
        kinetics_dataset(tmp_path, "test", **CLIP, crop=16, training=False)


def test_command_line_synth_and_check(tmp_path, capsys):
    out = tmp_path / "cli"
    main(["kinetics", "synth", str(out), "--classes", "2", "--train-per-class", "1", "--val-per-class", "1", "--seed", "3"])
    assert f"stand-in at {out}" in capsys.readouterr().out
    assert len(list(out.rglob("*.mp4"))) == 4
    main(["kinetics", "check", str(out)])
    checked = capsys.readouterr().out
    assert "2 classes" in checked and "10.0 / 10.0 / 10.0" in checked  # the default stand-in: 10-s videos
    with pytest.raises(SystemExit, match="error: .* has no split folders"):
        main(["kinetics", "check", str(out / "train")])


@pytest.mark.parametrize("crop,resize", [(172, 200), (224, 256), (256, 300)])
def test_eval_transform_squashes_to_a_square_then_centre_crops(crop, resize):
    assert eval_resize(crop) == resize
    video = torch.zeros(2, 3, 60, 120, dtype=torch.uint8)
    video[..., :30] = 255  # the left quarter is white
    out = clip_transform(crop, training=False)(tv_tensors.Video(video))
    assert out.shape == (2, 3, crop, crop) and out.dtype == torch.float32
    # squashed (not cropped) to resize², the band is resize/4 wide; the centre crop cuts (resize - crop)/2 of it
    band = resize // 4 - (resize - crop) // 2
    assert (out[..., : band - 2] > 0.99).all() and (out[..., band + 2 :] < 0.01).all()


def test_training_transform_crops_and_flips_all_frames_alike():
    torch.manual_seed(0)
    frame = torch.randint(0, 256, (1, 3, 40, 50), dtype=torch.uint8)
    for _ in range(5):
        out = clip_transform(24, training=True)(tv_tensors.Video(frame.expand(4, -1, -1, -1)))
        assert out.shape == (4, 3, 24, 24) and out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1
        assert all(torch.equal(out[0], out[t]) for t in range(1, 4))
