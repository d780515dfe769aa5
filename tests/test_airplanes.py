"""The Airplanes renderer and dataset: determinism, geometry, balance, the atomic cache, bad input; the causal encoder."""

import hashlib
import json

import numpy as np
import pytest
import torch

import grw.data.airplanes as airplanes
from grw.data.airplanes import (
    CLASSES,
    AirplanesConfig,
    SingleFrame,
    axis_angle,
    load_airplanes,
    pose_angles,
    render_airplanes,
    rotation_sequences,
    sample_clips,
)
from grw.models.encoders import CausalVideoEncoder

SMALL = AirplanesConfig(n_train=12, n_test=6, frames=6, size=24, seed=3)


def digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()


def test_rendering_is_deterministic_and_seeded():
    a, b = render_airplanes(SMALL, "train", progress=False), render_airplanes(SMALL, "train", progress=False)
    assert digest(a["videos"]) == digest(b["videos"])
    assert torch.equal(a["labels"], b["labels"])
    # chunking does not change a byte: each video has its own generator
    c = render_airplanes(SMALL, "train", chunk=5, progress=False)
    assert digest(c["videos"]) == digest(a["videos"])
    other = render_airplanes(AirplanesConfig(**{**SMALL.__dict__, "seed": 4}), "train", progress=False)
    assert digest(other["videos"]) != digest(a["videos"])


def test_shapes_dtypes_and_pictures():
    r = render_airplanes(SMALL, "test", progress=False)
    v = r["videos"]
    assert v.dtype == torch.uint8 and v.shape == (6, 6, 24, 24, 3)
    background = torch.tensor([round(255 * c) for c in airplanes.BACKGROUND], dtype=torch.uint8)
    is_background = (v == background).all(dim=-1)
    coverage = 1 - is_background.float().mean(dim=(2, 3))  # [n, N] fraction of airplane pixels
    assert (coverage > 0.03).all() and (coverage < 0.6).all()  # an airplane in every frame, never the whole frame
    assert (v[:, 1:] != v[:, :-1]).any(dim=(2, 3, 4)).all()  # it moves between every pair of frames


def test_classes_are_balanced_in_both_splits():
    cfg = AirplanesConfig(n_train=30, n_test=9)
    for split, n in (("train", 30), ("test", 9)):
        labels = sample_clips(cfg, split)["labels"]
        assert torch.bincount(labels, minlength=3).tolist() == [n // 3] * 3
    assert CLASSES == ("yaw", "pitch", "roll")


def test_rotations_are_orthonormal_and_turn_about_the_class_axis():
    clips = sample_clips(AirplanesConfig(n_train=30, n_test=3), "train")
    R = rotation_sequences(clips["poses"], clips["labels"], clips["speeds"], 12)  # [n, N, 3, 3]
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(R @ R.transpose(-1, -2), eye.expand_as(R), atol=1e-10)
    assert torch.allclose(torch.linalg.det(R), torch.ones(R.shape[:2], dtype=torch.float64))
    # relative rotation between consecutive frames, expressed in the airplane's own frame
    step = R[:, :-1].transpose(-1, -2) @ R[:, 1:]
    axis, angle = axis_angle(step)
    class_axes = torch.eye(3, dtype=torch.float64)[[2, 1, 0]][clips["labels"]]  # yaw z, pitch y, roll x
    signs = clips["speeds"].sign()
    assert torch.allclose(axis, (signs[:, None] * class_axes)[:, None].expand_as(axis), atol=1e-9)
    assert torch.allclose(angle, clips["speeds"].abs()[:, None].expand_as(angle), atol=1e-9)
    degrees = clips["speeds"].abs().rad2deg()
    assert (degrees >= 8).all() and (degrees <= 20).all() and (clips["speeds"] > 0).any() and (clips["speeds"] < 0).any()
    # initial poses spread over all orientations: the mean rotation matrix of uniform rotations is 0
    assert clips["poses"].mean(0).abs().max() < 0.35


def test_pose_angles_are_the_angles_between_the_rendered_poses():
    clips = sample_clips(AirplanesConfig(n_train=12, n_test=3, max_speed_deg=40), "train")  # turns past 180° fold back
    R = rotation_sequences(clips["poses"], clips["labels"], clips["speeds"], 12)
    _, between = axis_angle(R[:, :, None].transpose(-1, -2) @ R[:, None])  # [n, N, N]
    angles = pose_angles(clips["speeds"], 12)
    off_diagonal = ~torch.eye(12, dtype=torch.bool)  # axis_angle is undefined for no turn at all
    assert torch.allclose(angles[:, off_diagonal], between[:, off_diagonal], atol=1e-6)
    assert (angles.diagonal(dim1=1, dim2=2) == 0).all() and angles.max() <= torch.pi and torch.equal(angles, angles.mT)


def test_cache_is_written_once_and_reused(tmp_path, monkeypatch):
    train, test = load_airplanes(SMALL, root=tmp_path, progress=False)
    folder = tmp_path / SMALL.key
    meta = json.loads((folder / "params.json").read_text())
    assert meta["params"]["seed"] == 3 and meta["train_labels"] == train.labels.tolist()
    assert len(train) == 12 and len(test) == 6
    video, label = train[0]
    assert video.shape == (3, 6, 24, 24) and video.dtype == torch.float32 and 0 <= video.min() and video.max() <= 1
    assert label in (0, 1, 2)

    monkeypatch.setattr(airplanes, "render_airplanes", lambda *a, **k: pytest.fail("rendered again"))
    again, _ = load_airplanes(SMALL, root=tmp_path, progress=False)
    assert torch.equal(again.videos, train.videos)


def test_an_interrupted_write_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    calls = []

    def failing_save(path, **arrays):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed while writing the test split")
        return real_save(path, **arrays)

    real_save = np.savez_compressed
    monkeypatch.setattr(np, "savez_compressed", failing_save)
    with pytest.raises(KeyboardInterrupt):
        load_airplanes(SMALL, root=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []  # no dataset folder, no temporary left behind
    monkeypatch.undo()
    train, _ = load_airplanes(SMALL, root=tmp_path, progress=False)
    assert len(train) == 12


@pytest.mark.parametrize(
    "params,message",
    [
        ({"n_train": 0}, "at least one video per class"),
        ({"n_test": 2}, "at least one video per class"),
        ({"size": 8}, "size must be between 16 and 256"),
        ({"frames": 2}, "frames must be >= 3"),
        ({"min_speed_deg": 30, "max_speed_deg": 10}, "min_speed_deg <= max_speed_deg"),
    ],
)
def test_bad_parameters_are_rejected(params, message):
    with pytest.raises(ValueError, match=message):
        AirplanesConfig(**params)


def test_single_frame_control_repeats_one_frame():
    rendered = render_airplanes(SMALL, "train", progress=False)
    train = airplanes.AirplanesDataset(rendered["videos"], rendered["labels"])
    control = SingleFrame(train, seed=0)
    video, label = control[1]
    assert label == train[1][1] and video.shape == train[1][0].shape
    assert video.shape[0] == 3 and (video == video[:, :1]).all()
    assert any(torch.equal(video[:, 0], train[1][0][:, t]) for t in range(video.shape[1]))
    assert torch.equal(SingleFrame(train, seed=0)[1][0], video)


def test_validation_split_partitions_the_training_set():
    rendered = render_airplanes(SMALL, "train", progress=False)
    train = airplanes.AirplanesDataset(rendered["videos"], rendered["labels"])
    kept, held_out = train.split(0.25, seed=1)
    assert (len(kept), len(held_out)) == (9, 3)
    videos = {digest(v) for v in kept.videos} | {digest(v) for v in held_out.videos}
    assert videos == {digest(v) for v in train.videos}  # disjoint and complete
    for part in (kept, held_out):  # each video keeps its label
        for video, label in zip(part.videos, part.labels):
            assert label == train.labels[next(i for i, v in enumerate(train.videos) if torch.equal(v, video))]
    assert torch.equal(train.split(0.25, seed=1)[1].videos, held_out.videos)
    assert not torch.equal(train.split(0.25, seed=2)[1].videos, held_out.videos)
    with pytest.raises(ValueError, match="fraction must be in"):
        train.split(1.0)


def test_causal_encoder_only_looks_back():
    torch.manual_seed(0)
    encoder = CausalVideoEncoder(widths=(8, 16)).eval()
    clip = torch.rand(2, 3, 7, 32, 32)  # [B, C, T, H, W]
    features = encoder(clip)
    assert features.shape == (2, 7, 16) and encoder.num_features == 16
    changed = clip.clone()
    changed[:, :, 4] = torch.rand(2, 3, 32, 32)
    after = encoder(changed)
    assert torch.allclose(after[:, :4], features[:, :4])  # frames before 4 unaffected
    assert not torch.allclose(after[:, 4], features[:, 4])
    per_frame = CausalVideoEncoder(widths=(8, 16), temporal_kernel=1).eval()
    assert torch.allclose(per_frame(changed)[:, 5], per_frame(clip)[:, 5])  # no temporal context at all
    with pytest.raises(ValueError, match="expected a clip"):
        encoder(torch.rand(2, 7, 3, 32, 32))


def test_subset_is_class_balanced_seeded_and_refuses_what_it_cannot_draw():
    rendered = render_airplanes(AirplanesConfig(n_train=30, n_test=3, frames=4, size=16), "train", progress=False)
    train = airplanes.AirplanesDataset(rendered["videos"], rendered["labels"])
    part = train.subset(8, seed=1)
    assert torch.bincount(part.labels, minlength=3).tolist() == [3, 3, 2]  # the first classes take the remainder
    originals = {digest(v): int(label) for v, label in zip(train.videos, train.labels)}
    assert all(originals[digest(v)] == int(label) for v, label in zip(part.videos, part.labels))  # clips keep their labels
    assert len({digest(v) for v in part.videos}) == 8  # no clip twice
    assert torch.equal(train.subset(8, seed=1).videos, part.videos)
    assert not torch.equal(train.subset(8, seed=2).videos, part.videos)
    with pytest.raises(ValueError, match=r"cannot draw 31 class-balanced clips \(\[11, 10, 10\] per class\)"):
        train.subset(31)
