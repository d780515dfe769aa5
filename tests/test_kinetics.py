"""Kinetics loading: the stand-in round trip in both layouts, clip sampling, every clip of the evaluation protocol,
skipped files and links, the layout checker, the evaluation loop and command, the CLI."""

import csv
import hashlib
import json
import logging
import math
import os
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from torchvision import tv_tensors
from torchvision.transforms import v2

import grw.data.kinetics as kinetics
import grw.recipes.kinetics as recipe
from grw.__main__ import main
from grw.contracts import ClassifierOutput
from grw.data.kinetics import (
    LayoutError,
    check_layout,
    clip_transform,
    eval_resize,
    kinetics_all_clips,
    kinetics_dataset,
    kinetics_videos,
    read_clip,
    read_frames,
    synthetic_video,
    write_synthetic,
)
from grw.io import load_checkpoint, save_atomic
from grw.recipes import Smoothing
from grw.recipes.kinetics import KineticsData, KineticsModel, Preset, build_model, evaluate_clips
from grw.train import TrainConfig, collate_clips, fit

SNAPSHOT = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "grw-snapshots" / "a0s_snapshot.pt"
SYNTH = dict(classes=3, train_per_class=2, val_per_class=1, seed=0, frames=30, size=32, fps=10)  # 3-s videos
CLIP = dict(frames=10, fps=5)  # 2 s: every other frame of the stand-in
TINY = dict(classes=2, train_per_class=1, val_per_class=1, frames=4, size=16, fps=4)


NAMES = kinetics._synthetic_classes(3)
RELEASE_NAMES = [name.replace("_", " ") for name in NAMES]  # the release layout's class names have spaces


@pytest.fixture(scope="module")
def standin(tmp_path_factory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("kinetics") / "synth", **SYNTH)


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("kinetics") / "release", **SYNTH, test_per_class=2, layout="release")


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


def test_the_class_is_the_drift_speed_in_any_direction():
    names = kinetics._synthetic_classes(4)
    assert names == ["00_drift_4-5pct", "01_drift_8-10pct", "02_drift_16-20pct", "03_drift_32-40pct"]
    many = kinetics._synthetic_classes(120)
    assert sorted(many) == many and many[0].startswith("000_") and many[119] == "119_drift_32-40pct"
    classes, size, fps, seconds = 4, 48, 10, 1  # at most 40 % of the frame: no wrap-around of the periodic texture
    headings = []
    for label in range(classes):
        lo, hi = kinetics._speed_band(label, classes)
        for index in range(3):
            video = synthetic_video(7, "train", label, index, classes=classes, frames=seconds * fps + 1, size=size, fps=fps)
            gray = video.astype(np.float64).mean(axis=-1)
            dx, dy = _displacement(gray[0], gray[-1])
            # integer-pixel phase correlation: within one pixel per axis of the drawn speed band
            assert lo * size * seconds - 1.5 <= math.hypot(dx, dy) <= hi * size * seconds + 1.5
            headings.append(math.atan2(dy, dx))
    assert np.ptp(headings) > math.pi  # directions spread around the circle, not one per class


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
    assert text[0].endswith(f"class folders layout at {root}: 3 classes, named by the class folders of {root / 'train'}")
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
    with pytest.raises(FileNotFoundError, match="expected a folder .*/test/<class>/<video>.mp4, the release layout "
                                                 ".*/annotations/test.csv with .*/test/<youtube_id>_<start>_<end>.mp4, or a manifest"):
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


def test_eval_transform_resizes_the_float_pixels():
    video = torch.randint(0, 256, (2, 3, 20, 30), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    out = clip_transform(12, training=False, resize=16)(tv_tensors.Video(video)).as_subclass(torch.Tensor)
    expected = v2.functional.center_crop(v2.functional.resize(video.float() / 255, [16, 16], antialias=True), [12, 12])
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)  # a uint8 resize rounds to multiples of 1/255
    assert not torch.equal(out * 255, (out * 255).round())


# --------------------------------------------------------------------------------------------
# Symlinks
# --------------------------------------------------------------------------------------------


def test_links_never_lead_back_into_the_tree_and_each_video_counts_once(standin, tmp_path):
    root, storage = tmp_path / "root", tmp_path / "storage"
    shutil.copytree(standin, root)
    train = root / "train"
    storage.mkdir()
    shutil.move(train / NAMES[2], storage / NAMES[2])
    (train / NAMES[2]).symlink_to(storage / NAMES[2])  # a class folder kept elsewhere: followed
    (train / "zz_back").symlink_to(train)  # torchvision's make_dataset made 80 duplicates of this, labelled zz_back
    (train / "zz_up").symlink_to(root)
    (train / "zz_loop").symlink_to("zz_loop")
    (train / "zz_gone").symlink_to(tmp_path / "nowhere")
    (train / NAMES[0] / "back").symlink_to(train)
    (train / NAMES[0] / "loop.mp4").symlink_to("loop.mp4")
    (train / NAMES[0] / "gone.mp4").symlink_to(tmp_path / "nowhere.mp4")
    twin = f"{NAMES[2]}_0000.mp4"
    (train / NAMES[1] / "twin.mp4").symlink_to(storage / NAMES[2] / twin)  # a link never takes a video into its class

    data = kinetics_dataset(root, "train", **CLIP, crop=16, training=False)
    assert data.classes == NAMES
    found = [(Path(path), info["label"]) for path, info in (data.videos[i] for i in range(len(data)))]
    assert found == [(train / name / f"{name}_{i:04d}.mp4", k) for k, name in enumerate(NAMES) for i in range(2)]
    assert kinetics_dataset(root, "val", **CLIP, crop=16, training=False).classes == NAMES

    report = check_layout(root)
    assert report.classes == NAMES and report.videos["train"] == dict.fromkeys(NAMES, 2) and report.unreadable == []
    back = f"a link back to {train.resolve()}, a folder it is in"
    assert {path.relative_to(train).as_posix(): why for path, why in report.skipped} == {
        "zz_back": back, "zz_up": f"a link back to {root.resolve()}, a folder it is in", "zz_loop": "a link loop",
        "zz_gone": "a dangling link", f"{NAMES[0]}/back": back, f"{NAMES[0]}/loop.mp4": "a link loop",
        f"{NAMES[0]}/gone.mp4": "a dangling link", f"{NAMES[1]}/twin.mp4": f"the same video as {train / NAMES[2] / twin}",
    }
    assert "links not followed and duplicates (not used): 8" in str(report)


# --------------------------------------------------------------------------------------------
# The release layout
# --------------------------------------------------------------------------------------------


def test_release_layout_round_trips_through_the_loader_and_the_checker(release):
    listing = kinetics_videos(release, "val")
    assert listing.classes == RELEASE_NAMES and listing.classes_from == str(release / "annotations" / "train.csv")
    with open(release / "annotations" / "val.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["label"] for row in rows] == RELEASE_NAMES
    assert [path.name for path in listing.paths] == [
        f"{row['youtube_id']}_{int(row['time_start']):06d}_{int(row['time_end']):06d}.mp4" for row in rows
    ]
    data = kinetics_dataset(release, "val", **CLIP, crop=32, resize=32, training=False)
    for i in range(3):
        video, label = data[i]
        assert label == i
        assert nearest_frames((video.permute(1, 2, 3, 0) * 255).round(), reference("val", label)) == list(range(0, 20, 2))

    report = check_layout(release)
    assert report.layout == "release" and report.classes == RELEASE_NAMES
    assert report.videos == {"train": dict.fromkeys(RELEASE_NAMES, 2), "val": dict.fromkeys(RELEASE_NAMES, 1),
                             "test": dict.fromkeys(RELEASE_NAMES, 2)}
    assert report.missing == report.unlisted == report.skipped == report.unreadable == []
    text = str(report).splitlines()
    assert text[0].endswith(f"release layout at {release}: 3 classes, named by {release / 'annotations' / 'train.csv'}")
    assert text[1].split()[:4] == ["split", "classes", "videos", "missing"] and text[3].split()[:4] == ["val", "3", "3", "0"]


def test_release_layout_counts_missing_and_unlisted_videos(release, tmp_path, caplog):
    root = tmp_path / "root"
    shutil.copytree(release, root)
    listed = kinetics_videos(root, "test").paths  # two per class, in the order of the CSV
    listed[1].unlink()
    extra = root / "test" / "extra_000001_000011.mp4"
    shutil.copy(listed[0], extra)
    (root / "test" / "notes.txt").write_text("not a video")

    with caplog.at_level(logging.WARNING, logger="grw.data.kinetics"):
        data = kinetics_dataset(root, "test", **CLIP, crop=16, training=False)
    assert [data.path(i) for i in range(len(data))] == [listed[0], *listed[2:]]
    assert "1 video(s) listed in the annotations but missing" in caplog.text
    assert "1 video(s) not in the annotations" in caplog.text
    listing = kinetics_videos(root, "test")
    assert listing.missing == [listed[1]] and listing.unlisted == [extra]

    report = check_layout(root)
    assert report.missing == [listed[1]] and report.unlisted == [extra] and report.ignored == [root / "test" / "notes.txt"]
    assert report.videos["test"] == {RELEASE_NAMES[0]: 1, RELEASE_NAMES[1]: 2, RELEASE_NAMES[2]: 2}
    row = next(line.split() for line in str(report).splitlines() if line.split()[0] == "test")
    assert row[:4] == ["test", "3", "5", "1"]

    for path in listing.paths:
        path.unlink()
    with pytest.raises(LayoutError, match=r"none of the 6 videos listed in .*test.csv is in .*test; expected files"):
        kinetics_videos(root, "test")


def _relabel(csv_path: Path, names: dict[str, str] | None = None, **columns: str) -> None:
    """Rewrite a release CSV with the csv module: labels renamed by ``names``; ``columns`` replace a column of the first row."""
    with open(csv_path, newline="") as file:
        rows = list(csv.DictReader(file))
    for row in rows:
        row["label"] = (names or {}).get(row["label"], row["label"])
    rows[0].update(columns)
    with open(csv_path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_release_class_names_with_quotes_commas_and_spaces(release, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(release, root)
    names = ['say "cheese", then smile', "massaging person's head", "passing American football (in game)"]
    for split in ("train", "val", "test"):
        _relabel(root / "annotations" / f"{split}.csv", dict(zip(RELEASE_NAMES, names)))
    assert '"say ""cheese"", then smile"' in (root / "annotations" / "val.csv").read_text()  # quoted as CSV quotes
    listing = kinetics_videos(root, "val")
    assert listing.classes == [names[1], names[2], names[0]]  # sorted, as torchvision's Kinetics indexes them
    assert [listing.classes[label] for label in listing.labels] == names  # each video keeps its class, at its new index
    assert check_layout(root).classes == listing.classes

    (root / "annotations" / "train.csv").unlink()  # without a train CSV, the split's own names
    alone = kinetics_videos(root, "test")
    assert alone.classes == listing.classes and alone.classes_from == str(root / "annotations" / "test.csv")


@pytest.mark.parametrize(
    "change,message,check_message",
    [
        (None, r"val.csv has no column time_end; expected a header line label,youtube_id,time_start,time_end", None),
        (dict(label=" "), r"val.csv, line 2: no label; expected the labelled annotations", None),
        (dict(time_start="1.5"), r"val.csv, line 2: time_start and time_end must be whole seconds, got '1.5'", None),
        (dict(label="juggling fire"), r"val.csv has labels that are not in .*train.csv: 'juggling fire'",
         r"1 class\(es\) in val have no videos listed in train: juggling fire"),
    ],
)
def test_release_annotations_errors_say_what_was_expected(release, tmp_path, change, message, check_message):
    root = tmp_path / "root"
    shutil.copytree(release, root)
    csv_path = root / "annotations" / "val.csv"
    if change is None:
        csv_path.write_text(csv_path.read_text().replace("time_end", "end"))
    else:
        _relabel(csv_path, **change)
    with pytest.raises(LayoutError, match=message):
        kinetics_videos(root, "val")
    with pytest.raises(LayoutError, match=check_message or message):
        check_layout(root)


def test_release_annotations_with_a_byte_order_mark_are_read_and_bad_bytes_name_the_file(release, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(release, root)
    csv_path = root / "annotations" / "val.csv"
    original = kinetics_videos(root, "val")
    csv_path.write_bytes(b"\xef\xbb\xbf" + csv_path.read_bytes())  # as spreadsheet programs save UTF-8
    with_mark = kinetics_videos(root, "val")
    assert with_mark.paths == original.paths and with_mark.labels == original.labels
    lines = csv_path.read_bytes().splitlines(keepends=True)
    csv_path.write_bytes(b"".join([*lines, lines[1]]))  # the same video twice with the same label: harmless
    assert kinetics_videos(root, "val").paths == original.paths
    csv_path.write_bytes(b"".join([*lines, lines[1].replace(b",", b" x,", 1)]))  # and with another label
    duplicate = rf"val.csv, line {len(lines) + 1}: video \S+ is listed with the label '.* x', and on line 2 with '.*'"
    with pytest.raises(LayoutError, match=duplicate + "; expected one label per video"):
        kinetics_videos(root, "val")
    csv_path.write_bytes(b"".join([lines[0], b"\xff\xfe" + lines[1]]))
    with pytest.raises(LayoutError, match=r"val.csv is not UTF-8 text \(invalid start byte at byte \d+\)"):
        kinetics_videos(root, "val")
    csv_path.write_bytes(b"".join([lines[0], b'"' + b"a" * (csv.field_size_limit() + 1) + b'",x,0,10,val\n']))
    with pytest.raises(LayoutError, match=r"val.csv, line \d+: not a readable CSV line \(field larger than"):
        kinetics_videos(root, "val")


# --------------------------------------------------------------------------------------------
# Every clip: the evaluation protocol
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source_fps,length,fps,frames,clips",
    [
        (10, 31, 5.0, 8, 2),  # step 2, a whole number: torchvision keeps ceil(31 / 2) = 16 frames (floor(31 · 5 / 10) = 15)
        (10, 30, 3.0, 4, 2),  # step 10/3: floor(30 · 3 / 10) = 9 frames, 2 clips and 1 frame left
        (8, 20, 12.0, 6, 5),  # step 2/3, resampled up: floor(20 · 12 / 8) = 30 frames, source frames repeat
        (10, 7, 5.0, 8, 0),  # 4 frames at 5 fps: shorter than one clip, dropped
    ],
)
def test_every_clip_is_a_non_overlapping_run_of_the_resampled_video(tmp_path, source_fps, length, fps, frames, clips):
    video = synthetic_video(0, "val", 0, 0, classes=2, frames=length, size=32, fps=source_fps)
    path = tmp_path / "root" / "val" / "a" / "clip.mp4"
    path.parent.mkdir(parents=True)
    kinetics._write_mp4(path, video, fps=source_fps)
    data = kinetics_all_clips(tmp_path / "root", "val", frames=frames, fps=fps, crop=24, resize=32, progress=False)
    step = source_fps / fps
    resampled = len(range(0, length, int(step))) if step.is_integer() else math.floor(length * fps / source_fps)
    assert len(data) == clips == resampled // frames and data.clip_video.tolist() == [0] * clips
    assert data.dropped_short == ([path] if clips == 0 else [])
    for c in range(clips):
        decoded = read_frames(path, data.clip_pts[c].tolist())
        assert nearest_frames(decoded, torch.from_numpy(video)) == [math.floor((c * frames + k) * step) for k in range(frames)]
        item, label = data[c]
        assert item.shape == (3, frames, 24, 24) and label == 0 and data.path(c) == path


class ClipTable(nn.Module):
    """A stub classifier: the logits of a clip are row ``i`` of ``table``, ``i`` being the value of the clip's pixels."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("table", table)
        self.num_classes = table.shape[1]

    def forward(self, video: torch.Tensor) -> ClassifierOutput:
        return ClassifierOutput(self.table[video[:, 0, 0, 0, 0].long()], video.mean(dim=(1, 3, 4))[..., None])


class NumberedClips(torch.utils.data.Dataset):
    """Clip ``i`` is a video filled with the number ``i``; the clips in ``unreadable`` give ``None``."""

    classes = [str(k) for k in range(6)]

    def __init__(self, labels: list[int], unreadable: set[int]) -> None:
        self.labels, self.unreadable = labels, unreadable

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int] | None:
        return None if i in self.unreadable else (torch.full((3, 2, 4, 4), float(i)), self.labels[i])


# 7 clips of 4 videos, 6 classes. Clip top-1: 0 2 5 6 right, 1 (confidently wrong, label last: also a top-5 miss) and 4
# (label 4th) wrong, 3 unreadable → 4/6, top-5 5/6. Videos: 0 wrong (class 1 averages 0.5 > class 0's 0.5 · e^10/(e^10 + 5)),
# 1 right (its one readable clip), 2 right (class 3 (0.032 + 0.999) / 2 > class 0 (0.634 + 0.000) / 2), 3 right → 3/4.
TABLE = torch.tensor([
    [10.0, 0, 0, 0, 0, 0], [0.0, 20, 1, 1, 1, 1],
    [0.0, 0, 1, 0, 0, 0], [0.0, 0, 0, 0, 0, 0],
    [5.0, 4, 3, 2, 1, 0], [0.0, 0, 0, 9, 0, 0],
    [0.0, 1, 0, 0, 0, 0],
])
LABELS, CLIP_VIDEO, UNREADABLE = [0, 0, 2, 2, 3, 3, 1], [0, 0, 1, 1, 2, 2, 3], {3}
EXPECTED = {"clips": 6, "videos": 4, "top1": 4 / 6, "top5": 5 / 6, "video_top1": 3 / 4, "unreadable_clips": 1,
            "unreadable_videos": 1}


@pytest.mark.parametrize("batch_size,workers", [(1, 0), (3, 0), (7, 2)])
def test_evaluation_loop_scores_clips_and_videos(batch_size, workers):
    data = NumberedClips(LABELS, UNREADABLE)
    model = ClipTable(TABLE).train()
    result = evaluate_clips(model, data, CLIP_VIDEO, batch_size=batch_size, workers=workers, progress=False)
    assert result == EXPECTED and model.training  # the model's mode is restored
    with pytest.raises(ValueError, match="expected the video index of each of the 7 clips"):
        evaluate_clips(model, data, CLIP_VIDEO[:6], progress=False)



def test_a_model_with_non_finite_logits_gets_no_score():
    table = TABLE.clone()
    table[5, 2] = float("nan")  # diverged weights: one clip's logits
    with pytest.raises(ValueError, match="logits are not finite on 1 clips .*no accuracy to report"):
        evaluate_clips(ClipTable(table), NumberedClips(LABELS, UNREADABLE), CLIP_VIDEO, progress=False)


def _evaluate_as_rank(rank: int, world_size: int, folder: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world_size)
    try:
        result = evaluate_clips(ClipTable(TABLE), NumberedClips(LABELS, UNREADABLE), CLIP_VIDEO, batch_size=2, progress=False)
        Path(folder, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def test_evaluation_counts_every_clip_once_across_processes(tmp_path):
    # 7 clips on 2 processes: a DistributedSampler would pad the second with a copy of clip 0 (7 clips scored)
    torch.multiprocessing.spawn(_evaluate_as_rank, args=(2, str(tmp_path)), nprocs=2)
    for rank in range(2):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == EXPECTED


# --------------------------------------------------------------------------------------------
# The evaluation command
# --------------------------------------------------------------------------------------------

SMALL = Preset("a0", True, fps=2.5, frames=5, resize=36, crop=32, T=5, note="the a0s protocol shrunk for 3-s 32² stand-in videos")
MODEL = KineticsModel(embed_dim=16, head_heads=2)


@pytest.fixture(scope="module")
def trained(standin, tmp_path_factory) -> Path:
    """The checkpoint.pt of an A0-stream GRW model trained for one epoch on the stand-in, with EMA weights."""
    out = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(epochs=1, batch_size=3, ema_decay=0.5, out_dir=str(out), progress=False, log_epochs=False)
    recipe.run(KineticsData(data_root=str(standin), frames=5, fps=2.5, crop=32), MODEL, Smoothing(), cfg)
    return out / "checkpoint.pt"


def _scores(model: nn.Module, data: kinetics.KineticsAllClips) -> dict:
    """The protocol's accuracies computed clip by clip (each video gives one clip here)."""
    with torch.no_grad():
        logits = torch.cat([model.eval()(data[i][0][None]).logits for i in range(len(data))])
    labels = torch.tensor([data[i][1] for i in range(len(data))])
    top1 = (logits.argmax(dim=1) == labels).double().mean().item()
    top5 = (logits.topk(min(5, logits.shape[1])).indices == labels[:, None]).any(dim=1).double().mean().item()
    return {"top1": top1, "top5": top5, "video_top1": top1}


def _evaluate(checkpoint: Path, root: Path, split: str, out: Path, *flags: str) -> dict:
    main(["kinetics", "evaluate", "--checkpoint", str(checkpoint), "--root", str(root), "--split", split, "--preset", "a0s",
          "--workers", "0", "--batch-size", "2", "--json", str(out), *flags])
    return json.loads(out.read_text())


def test_command_evaluates_an_engine_checkpoint(trained, standin, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(recipe.PRESETS, "a0s", SMALL)
    data = kinetics_all_clips(standin, "val", frames=5, fps=2.5, crop=32, resize=36, progress=False)
    assert len(data) == 3  # 30 frames at 10 fps: every 4th, ceil(30 / 4) = 8 frames at 2.5 fps, one clip of 5 each
    state = load_checkpoint(trained)
    for flags, weights in (((), state["model"]), (("--ema",), state["ema"])):
        net = build_model(MODEL, 3)
        net.load_state_dict({key.removeprefix("module."): value for key, value in weights.items() if key != "n_averaged"})
        result = _evaluate(trained, standin, "val", tmp_path / "eval.json", *flags)
        assert result == {"preset": "a0s", "split": "val", "weights": "ema" if flags else "raw", "videos": 3, "clips": 3,
                          "dropped_short": 0, "missing": 0, "unreadable": 0, **_scores(net, data)}
    printed = capsys.readouterr().out
    assert f"a0s on {standin} (val, raw weights; classes named by the class folders of {standin / 'train'})" in printed

    no_ema = tmp_path / "no_ema.pt"
    save_atomic(state | {"ema": None}, no_ema)
    with pytest.raises(SystemExit, match="holds no EMA weights .*: evaluate its raw weights, without --ema"):
        _evaluate(no_ema, standin, "val", tmp_path / "x.json", "--ema")
    unrecorded = tmp_path / "unrecorded.pt"
    save_atomic(state | {"settings": {"config": state["settings"]["config"]}}, unrecorded)
    with pytest.raises(SystemExit, match="does not record the model it trained"):
        _evaluate(unrecorded, standin, "val", tmp_path / "x.json")
    with pytest.raises(SystemExit, match="holds MoViNet-a0 stream, but the preset is for MoViNet-a3 base"):
        main(["kinetics", "evaluate", "--checkpoint", str(trained), "--root", str(standin), "--preset", "a3b", "--split", "val"])
    with pytest.raises(SystemExit, match="error: no checkpoint file at"):
        _evaluate(tmp_path / "nowhere.pt", standin, "val", tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


def test_command_counts_missing_short_and_unreadable_videos(trained, release, tmp_path, monkeypatch):
    monkeypatch.setitem(recipe.PRESETS, "a0s", SMALL)
    root = tmp_path / "root"
    shutil.copytree(release, root)
    listed = kinetics_videos(root, "test").paths  # 6 videos, 2 per class
    listed[0].unlink()
    kinetics._write_mp4(listed[1], reference("test", 0, 1)[:10].numpy(), fps=10)  # 1 s: 3 frames at 2.5 fps, under 5
    listed[2].write_bytes(b"not a video")
    result = _evaluate(trained, root, "test", tmp_path / "eval.json")
    net = build_model(MODEL, 3)
    net.load_state_dict(load_checkpoint(trained)["model"])
    data = kinetics_all_clips(root, "test", frames=5, fps=2.5, crop=32, resize=36, progress=False)
    assert data.paths == listed[1:] and data.dropped_short == [listed[1]] and data.unreadable == [listed[2]]
    assert result == {"preset": "a0s", "split": "test", "weights": "raw", "videos": 3, "clips": 3, "dropped_short": 1,
                      "missing": 1, "unreadable": 1, **_scores(net, data)}


@pytest.mark.skipif(not SNAPSHOT.is_file(), reason=f"the A0S snapshot written by the authors' code is not at {SNAPSHOT}")
def test_command_evaluates_a_released_snapshot_on_the_sorted_600_classes(release, tmp_path, monkeypatch):
    from grw.models import load_grw_snapshot

    monkeypatch.setitem(recipe.PRESETS, "a0s", SMALL)
    root = tmp_path / "k600"
    (root / "annotations").mkdir(parents=True)
    (root / "val").mkdir()
    names = [f"class {k:03d}" for k in range(600)]
    shuffled = [names[(7 * k) % 600] for k in range(600)]  # the train CSV's order is not the classes' order
    with open(root / "annotations" / "train.csv", "w", newline="") as file:
        csv.writer(file).writerows([kinetics.ANNOTATION_COLUMNS, *([name, f"t{k:010d}", 0, 10, "train"]
                                                                    for k, name in enumerate(shuffled))])
    for k in range(2):
        kinetics._write_mp4(root / "val" / f"v{k:010d}_000000_000003.mp4", reference("val", k).numpy(), fps=10)

    def write_val(labels: list[str]) -> None:
        with open(root / "annotations" / "val.csv", "w", newline="") as file:
            csv.writer(file).writerows([kinetics.ANNOTATION_COLUMNS, *([label, f"v{k:010d}", 0, 3, "val"]
                                                                        for k, label in enumerate(labels))])

    write_val(names[:2])
    model = load_grw_snapshot(SNAPSHOT, ema=True)
    data = kinetics_all_clips(root, "val", frames=5, fps=2.5, crop=32, resize=36, progress=False)
    with torch.no_grad():
        ranked = [model(data[i][0][None]).logits[0].argsort(descending=True) for i in range(2)]
    write_val([names[ranked[0][0]], names[ranked[1][2]]])  # video 0 is its top class, video 1 its third
    result = _evaluate(SNAPSHOT, root, "val", tmp_path / "eval.json", "--ema")
    assert result == {"preset": "a0s", "split": "val", "weights": "ema", "videos": 2, "clips": 2, "dropped_short": 0,
                      "missing": 0, "unreadable": 0, "top1": 0.5, "top5": 1.0, "video_top1": 0.5}
    with pytest.raises(SystemExit, match="is a released a0s model, not a1s: evaluate it with --preset a0s"):
        main(["kinetics", "evaluate", "--checkpoint", str(SNAPSHOT), "--root", str(root), "--split", "val", "--preset", "a1s"])
    with pytest.raises(SystemExit, match="classifies 600 classes but the data has 3"):
        main(["kinetics", "evaluate", "--checkpoint", str(SNAPSHOT), "--root", str(release), "--split", "val", "--preset", "a0s"])


def test_command_line_synth_writes_the_release_layout(tmp_path, capsys):
    out = tmp_path / "release"
    main(["kinetics", "synth", str(out), "--classes", "2", "--train-per-class", "1", "--val-per-class", "1",
          "--test-per-class", "1", "--layout", "release"])
    assert sorted(p.relative_to(out).as_posix() for p in out.glob("annotations/*")) == [
        "annotations/test.csv", "annotations/train.csv", "annotations/val.csv"]
    assert len(list(out.glob("*/*.mp4"))) == 6
    main(["kinetics", "check", str(out)])
    checked = capsys.readouterr().out
    assert "release layout" in checked and "2 classes" in checked and "10.0 / 10.0 / 10.0" in checked
    with pytest.raises(SystemExit, match="other parameters"):
        main(["kinetics", "synth", str(out), "--classes", "2", "--train-per-class", "1", "--val-per-class", "1"])


def test_frames_larger_than_the_decoding_limit_are_shrunk_while_decoded(tmp_path):
    """A 2560 × 1440 source (an 8K one the same way) costs at most MAX_DECODED_PIXELS per decoded frame."""
    from grw.data.kinetics import MAX_DECODED_PIXELS, _write_mp4, read_clip

    video = np.zeros((3, 1440, 2560, 3), dtype=np.uint8)
    video[:, :, :1280] = 255  # left half white: the shrunk frame keeps it
    _write_mp4(tmp_path / "big.mp4", video, fps=10)
    clip = read_clip(tmp_path / "big.mp4", frames=2, fps=10)
    T, H, W, _ = clip.shape
    assert T == 2 and H * W <= MAX_DECODED_PIXELS and abs(W / H - 16 / 9) < 0.01
    assert clip[0, :, : W // 2 - 4].float().mean() > 240 and clip[0, :, W // 2 + 4 :].float().mean() < 15
