"""Airplanes: procedural videos of a biplane rotating about its own yaw, pitch or roll axis.

The warm-up task of the paper: every clip starts from a random orientation (uniform over 3-D
rotations) and turns at a constant angular speed about one of the airplane's own axes. A single
frame shows an airplane in some pose and says nothing about the class; only the change between
frames does.

Rendering is a small vectorized rasterizer in torch: boxes → triangles, orthographic camera, a
z-buffer over (frames × triangles × pixels) built from two batched matrix products, Lambert shading
on a light background. Nothing needs a display or a download.

Body frame: x points forward (roll axis), y along the left wing (pitch axis), z up (yaw axis).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from grw.io import atomic_path

__all__ = [
    "CLASSES",
    "AirplanesConfig",
    "AirplanesDataset",
    "SingleFrame",
    "axis_angle",
    "biplane_meshes",
    "load_airplanes",
    "pose_angles",
    "render_airplanes",
    "rotation_sequences",
    "sample_clips",
]

CLASSES = ("yaw", "pitch", "roll")
BODY_AXES = torch.eye(3)[[2, 1, 0]]  # yaw: z, pitch: y, roll: x
BACKGROUND = (0.94, 0.94, 0.92)
LIGHT = torch.tensor([0.4, 0.3, 0.87]) / torch.tensor([0.4, 0.3, 0.87]).norm()

# a unit box [-1/2, 1/2]^3 as 8 corners and 12 outward-wound triangles
_BOX_CORNERS = torch.tensor([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
_BOX_FACES = torch.tensor(
    [[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
     [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]]
)  # fmt: skip
PARTS = ("fuselage", "upper wing", "lower wing", "tailplane", "fin", "nose")


@dataclass(frozen=True)
class AirplanesConfig:
    """Everything that defines an Airplanes dataset; its hash names the cache folder."""

    n_train: int = 1000
    n_test: int = 100
    frames: int = 12
    size: int = 32
    min_speed_deg: float = 8.0  # angular speed per frame, drawn uniformly in [min, max], random sign
    max_speed_deg: float = 20.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_train < 3 or self.n_test < 3:
            raise ValueError(f"need at least one video per class in each split, got n_train={self.n_train}, n_test={self.n_test}")
        if self.frames < 3:
            raise ValueError(f"frames must be >= 3 (an acceleration needs three frames), got {self.frames}")
        if not 16 <= self.size <= 256:
            raise ValueError(f"size must be between 16 and 256 pixels, got {self.size}")
        if not 0 < self.min_speed_deg <= self.max_speed_deg < 90:
            raise ValueError(f"expected 0 < min_speed_deg <= max_speed_deg < 90, got {self.min_speed_deg}, {self.max_speed_deg}")

    @property
    def key(self) -> str:
        """Short hash of the parameters (the cache folder's name)."""
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:12]


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, {"train": 0, "test": 1}[split], index])


def biplane_meshes(rngs: list[np.random.Generator]) -> tuple[Tensor, Tensor, Tensor]:
    """One biplane per generator: vertices ``[n, V, 3]`` (body frame), faces ``[F, 3]``, face colours ``[n, F, 3]``.

    Proportions (fuselage length, wing span and gap, tail size) and colours vary per airplane.
    """
    boxes, colours = [], []
    for rng in rngs:
        length, span, gap, tail = rng.uniform([1.4, 1.5, 0.35, 0.8], [1.9, 2.1, 0.55, 1.2])
        body_rgb = rng.uniform(0.15, 0.75, size=3)
        wing_rgb = np.clip(body_rgb + rng.uniform(-0.25, 0.25, size=3), 0.05, 0.9)
        # (centre xyz, size xyz) per part, in PARTS order
        parts = [
            ((0.0, 0.0, 0.0), (length, 0.2, 0.2)),
            ((0.12 * length, 0.0, gap / 2 + 0.05), (0.34, span, 0.04)),
            ((0.12 * length, 0.0, -gap / 2 + 0.05), (0.3, 0.85 * span, 0.04)),
            ((-0.45 * length, 0.0, 0.04), (0.22 * tail, 0.65 * tail, 0.03)),
            ((-0.46 * length, 0.0, 0.2 * tail), (0.22 * tail, 0.03, 0.34 * tail)),
            ((0.5 * length + 0.04, 0.0, 0.0), (0.08, 0.16, 0.16)),
        ]
        boxes.append(torch.tensor([[*c, *s] for c, s in parts], dtype=torch.float64))
        part_rgb = [body_rgb, wing_rgb, wing_rgb, wing_rgb, body_rgb, (0.9, 0.8, 0.2)]
        colours.append(torch.tensor(np.repeat(np.asarray(part_rgb, dtype=np.float64), 12, axis=0)))
    boxes_t = torch.stack(boxes)  # [n, parts, 6]
    vertices = boxes_t[:, :, None, :3] + _BOX_CORNERS.double() * boxes_t[:, :, None, 3:]  # [n, parts, 8, 3]
    faces = (_BOX_FACES[None] + 8 * torch.arange(len(PARTS))[:, None, None]).reshape(-1, 3)
    return vertices.reshape(len(rngs), -1, 3), faces, torch.stack(colours)


def _random_rotation(rng: np.random.Generator) -> Tensor:
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)  # a uniform unit quaternion is a uniform rotation
    return torch.tensor(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ],
        dtype=torch.float64,
    )


def sample_clips(config: AirplanesConfig, split: str) -> dict[str, Tensor]:
    """Per-clip labels ``[n]`` (balanced), initial poses ``[n, 3, 3]`` and signed angular speeds ``[n]`` (radians/frame)."""
    n = config.n_train if split == "train" else config.n_test
    order = np.random.default_rng([config.seed, {"train": 0, "test": 1}[split]]).permutation(n)
    labels = torch.as_tensor(order % 3)
    poses, speeds = [], []
    for i in range(n):
        rng = _rng(config.seed, split, i)
        poses.append(_random_rotation(rng))
        speed = math.radians(rng.uniform(config.min_speed_deg, config.max_speed_deg))
        speeds.append(speed if rng.random() < 0.5 else -speed)
    return {"labels": labels, "poses": torch.stack(poses), "speeds": torch.tensor(speeds, dtype=torch.float64)}


def rotation_sequences(poses: Tensor, labels: Tensor, speeds: Tensor, frames: int) -> Tensor:
    """Orientations ``[n, N, 3, 3]``: ``R_t = R_0 · exp(t · ω · [axis]×)``, a turn about the airplane's own class axis."""
    axes = BODY_AXES.double()[labels]  # [n, 3]
    skew = torch.zeros(len(labels), 3, 3, dtype=torch.float64)
    skew[:, 0, 1], skew[:, 0, 2], skew[:, 1, 2] = -axes[:, 2], axes[:, 1], -axes[:, 0]
    skew = skew - skew.transpose(1, 2)
    angles = speeds[:, None] * torch.arange(frames, dtype=torch.float64)  # [n, N]
    turns = torch.linalg.matrix_exp(angles[:, :, None, None] * skew[:, None])  # [n, N, 3, 3]
    return poses[:, None] @ turns


def pose_angles(speeds: Tensor, frames: int) -> Tensor:
    """Angles ``[n, N, N]`` (radians, in [0, π]) between the poses of every two frames of clips turning at ``speeds``.

    A clip turns about one fixed axis, so frames ``s`` and ``t`` differ by a turn of ``|ω| · |t - s|``, folded into
    [0, π]; ``speeds [n]`` in radians per frame.
    """
    steps = torch.arange(frames, dtype=torch.float64)
    turn = (speeds.double().abs()[:, None, None] * (steps[None, :, None] - steps[None, None, :]).abs()) % (2 * math.pi)
    return torch.minimum(turn, 2 * math.pi - turn)


def axis_angle(R: Tensor) -> tuple[Tensor, Tensor]:
    """Unit rotation axes ``[..., 3]`` and angles ``[...]`` of rotation matrices ``[..., 3, 3]`` (angles in (0, π))."""
    angle = torch.arccos(((R.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1))
    axis = torch.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], dim=-1)
    return axis / axis.norm(dim=-1, keepdim=True), angle


# --------------------------------------------------------------------------------------------
# Rasterizer
# --------------------------------------------------------------------------------------------


def rasterize(triangles: Tensor, face_rgb: Tensor, size: int, extent: float = 1.25) -> Tensor:
    """Orthographic z-buffer render of ``triangles [M, F, 3, 3]`` (camera on +z) with colours ``[M, F, 3]``: ``[M, size, size, 3]``.

    Each pixel takes the nearest triangle that covers its centre; barycentric coordinates and depths
    of all (triangle, pixel) pairs come from two batched matrix products.
    """
    M = triangles.shape[0]
    coords = (torch.arange(size, dtype=triangles.dtype) + 0.5) / size * 2 * extent - extent
    py, px = torch.meshgrid(-coords, coords, indexing="ij")  # image rows go down
    pixels = torch.stack([px.flatten(), py.flatten(), torch.ones(size * size, dtype=triangles.dtype)])  # [3, P]

    x, y, z = triangles.unbind(-1)  # each [M, F, 3 vertices]
    # Edge function of the edge opposite vertex i, as a plane a·px + b·py + c, divided by the signed area.
    j, k = [1, 2, 0], [2, 0, 1]
    a = y[..., j] - y[..., k]
    b = x[..., k] - x[..., j]
    c = x[..., j] * y[..., k] - x[..., k] * y[..., j]
    area = c.sum(-1, keepdim=True)  # twice the signed area
    valid = area.abs() > 1e-9
    edges = torch.stack([a, b, c], dim=-1) / torch.where(valid, area, torch.ones_like(area))[..., None]  # [M, F, 3, 3]
    bary = edges @ pixels  # [M, F, 3, P]
    inside = (bary >= 0).all(dim=2) & valid  # [M, F, P]
    depth = (z[..., None, :] @ bary).squeeze(2)  # [M, F, P]
    depth = torch.where(inside, depth, torch.tensor(-torch.inf, dtype=depth.dtype))
    nearest, index = depth.max(dim=1)  # [M, P]
    rgb = face_rgb.gather(1, index[..., None].expand(-1, -1, 3))  # [M, P, 3]
    rgb = torch.where(torch.isfinite(nearest)[..., None], rgb, torch.tensor(BACKGROUND, dtype=rgb.dtype))
    return rgb.reshape(M, size, size, 3)


def _render_chunk(config: AirplanesConfig, split: str, first: int, clips: dict[str, Tensor]) -> Tensor:
    n = len(clips["labels"])
    vertices, faces, colours = biplane_meshes([_rng(config.seed, split, first + i) for i in range(n)])
    rotations = rotation_sequences(clips["poses"], clips["labels"], clips["speeds"], config.frames)  # [n, N, 3, 3]
    world = (rotations[:, :, None] @ vertices[:, None, :, :, None]).squeeze(-1)  # [n, N, V, 3]
    triangles = world[:, :, faces].flatten(0, 1)  # [n·N, F, 3, 3]
    normals = torch.linalg.cross(triangles[:, :, 1] - triangles[:, :, 0], triangles[:, :, 2] - triangles[:, :, 0])
    lambert = (normals / normals.norm(dim=-1, keepdim=True) @ LIGHT.double()).abs()  # two-sided
    face_rgb = colours.repeat_interleave(config.frames, dim=0) * (0.35 + 0.65 * lambert)[..., None]
    frames = rasterize(triangles.float(), face_rgb.float(), config.size)  # float32 keeps it fast
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8).reshape(n, config.frames, config.size, config.size, 3)


def render_airplanes(config: AirplanesConfig, split: str, chunk: int = 24, progress: bool = True) -> dict[str, Tensor]:
    """Render one split: ``videos`` uint8 ``[n, N, H, W, 3]``, ``labels [n]``, ``poses [n, 3, 3]``, ``speeds [n]``."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    clips = sample_clips(config, split)
    n = len(clips["labels"])
    videos = []
    with tqdm(total=n, desc=f"rendering {split}", unit="video", disable=not progress, leave=False) as bar:
        for first in range(0, n, chunk):
            part = {k: v[first : first + chunk] for k, v in clips.items()}
            videos.append(_render_chunk(config, split, first, part))
            bar.update(len(part["labels"]))
    return {"videos": torch.cat(videos), **clips}


# --------------------------------------------------------------------------------------------
# Cache and dataset
# --------------------------------------------------------------------------------------------


class AirplanesDataset(Dataset):
    """Items ``(video [3, N, H, W] float in [0, 1], label)``; ``classes`` = ``("yaw", "pitch", "roll")``."""

    classes = CLASSES

    def __init__(self, videos: Tensor, labels: Tensor) -> None:
        if videos.dtype != torch.uint8 or videos.ndim != 5 or videos.shape[-1] != 3:
            raise ValueError(f"expected uint8 videos [n, N, H, W, 3], got {videos.dtype} {tuple(videos.shape)}")
        self.videos, self.labels = videos, labels.long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.videos[index].permute(3, 0, 1, 2).float() / 255, int(self.labels[index])

    def split(self, fraction: float, seed: int = 0) -> tuple[AirplanesDataset, AirplanesDataset]:
        """A random ``(1 - fraction, fraction)`` partition, e.g. a validation set carved from the training set."""
        if not 0 < fraction < 1:
            raise ValueError(f"fraction must be in (0, 1), got {fraction}")
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        held_out = round(fraction * len(self))
        keep, out = order[held_out:], order[:held_out]
        return AirplanesDataset(self.videos[keep], self.labels[keep]), AirplanesDataset(self.videos[out], self.labels[out])

    def subset(self, n: int, seed: int = 0) -> AirplanesDataset:
        """``n`` clips drawn at random (from ``seed``) with the classes as balanced as ``n`` allows (the first classes get the rest)."""
        counts = torch.bincount(self.labels, minlength=len(CLASSES))
        wanted = [n // len(CLASSES) + (c < n % len(CLASSES)) for c in range(len(CLASSES))]
        if n < 1 or any(w > int(have) for w, have in zip(wanted, counts)):
            raise ValueError(f"cannot draw {n} class-balanced clips ({wanted} per class) from {counts.tolist()} per class")
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        chosen = torch.cat([order[self.labels[order] == c][:w] for c, w in enumerate(wanted)]).sort().values
        return AirplanesDataset(self.videos[chosen], self.labels[chosen])


class SingleFrame(Dataset):
    """The control that shows the task is temporal: each clip replaced by one of its frames, repeated ``[3, N, H, W]``.

    The frame is drawn once per clip from ``seed``, so the control sees the same frames every epoch.
    """

    def __init__(self, dataset: Dataset, seed: int = 0) -> None:
        self.dataset = dataset
        self.classes = getattr(dataset, "classes", None)
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        video, label = self.dataset[index]
        t = int(np.random.default_rng([self.seed, index]).integers(video.shape[1]))
        return video[:, t : t + 1].expand_as(video).clone(), label


def load_airplanes(
    config: AirplanesConfig = AirplanesConfig(), root: str | Path = "data/airplanes", progress: bool = True
) -> tuple[AirplanesDataset, AirplanesDataset]:
    """The train and test sets of ``config``, rendered once into ``root/<config.key>/`` and reused afterwards.

    The folder is written under a temporary name and renamed into place, so an interrupted write
    never leaves a folder that looks complete.
    """
    folder = Path(root) / config.key
    if not (folder / "params.json").is_file():
        try:
            with atomic_path(folder) as tmp:
                tmp.mkdir()
                meta = {"params": dataclasses.asdict(config), "classes": CLASSES}
                for split in ("train", "test"):
                    rendered = render_airplanes(config, split, progress=progress)
                    np.savez_compressed(tmp / f"{split}.npz", videos=rendered["videos"].numpy(), labels=rendered["labels"].numpy())
                    meta[f"{split}_labels"] = rendered["labels"].tolist()
                (tmp / "params.json").write_text(json.dumps(meta, indent=1) + "\n")
        except OSError:  # written meanwhile by another process: keep theirs
            if not (folder / "params.json").is_file():
                raise
    sets = []
    for split in ("train", "test"):
        with np.load(folder / f"{split}.npz") as arrays:
            sets.append(AirplanesDataset(torch.from_numpy(arrays["videos"]), torch.from_numpy(arrays["labels"])))
    return sets[0], sets[1]
