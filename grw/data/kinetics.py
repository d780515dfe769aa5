"""Kinetics-600 in its standard folder layout (or a manifest), the paper's clip protocol, a layout checker
and a synthetic stand-in written as real H.264 files.

Layout: ``ROOT/{train,val,test}/<class name>/<video>.{mp4,avi,mkv,webm}``; the class index is the
position of the class folder's name in the sorted names of ``ROOT/train`` (the official 600 names
for the real set), so every split shares one labelling. A manifest of ``path label`` lines works too.

Which pieces of ``pytorchvideo.data`` (0.1.5) this uses, and why not the others:

* ``LabeledVideoPaths`` holds the ``(path, label)`` list and parses manifests.
* ``LabeledVideoDataset`` / ``Kinetics`` are *iterable* datasets with their own video sampler, so they
  cannot take a ``DistributedSampler`` with ``set_epoch`` nor resume mid-run at an exact sample.
  :class:`KineticsClips` is map-style: one clip per video, its randomness a function of
  ``(seed, epoch, index)`` only.
* ``EncodedVideo(...).get_clip`` converts *every* native frame of the window to float32 before
  one in five or six is kept (a 10-s clip at 25 fps and 256² is 0.2 GB, several GB at 720p) and
  is several times slower; :func:`read_clip` streams the same PyAV decoding and converts only the
  frames it keeps.
* ``RandomClipSampler`` draws from the global ``random`` module and cannot be seeded per sample;
  the window position is one uniform draw, taken from a per-sample seed here. The evaluation
  window is the first one (``UniformClipSampler``'s first clip): for 10-s Kinetics videos at the
  paper's 50 frames @ 5 fps or 120 @ 12 fps, that is the one non-overlapping clip.
* ``pytorchvideo.transforms`` does not import on torchvision >= 0.17; augmentation is
  ``torchvision.transforms.v2`` on ``tv_tensors.Video`` (one crop and flip for all frames).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter
import torch
from pytorchvideo.data.labeled_video_paths import LabeledVideoPaths
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.datasets.folder import make_dataset
from torchvision.transforms import v2
from tqdm.auto import tqdm

from grw.io import atomic_path, text_table

__all__ = [
    "KineticsClips",
    "LayoutError",
    "LayoutReport",
    "SPLITS",
    "UnreadableVideo",
    "VIDEO_EXTENSIONS",
    "check_layout",
    "clip_transform",
    "eval_resize",
    "kinetics_dataset",
    "read_clip",
    "synthetic_video",
    "write_synthetic",
]

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm")
TRUNCATION_TOLERANCE_S = 0.5  # decoded frames may stop this much before the header's duration
SYNTHETIC_MARKER = "synthetic.json"
SYNTHETIC_VERSION = 1


class UnreadableVideo(RuntimeError):
    """A video file that cannot be decoded, has no video stream, or is truncated."""


class LayoutError(ValueError):
    """A folder that is not in the Kinetics layout; the message says what was expected."""


# --------------------------------------------------------------------------------------------
# Decoding and transforms
# --------------------------------------------------------------------------------------------


def _header_duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float | None:
    """Seconds of video the header announces (stream, else container), or ``None``."""
    if stream.duration is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def read_clip(path: str | Path, frames: int, fps: float, *, position: float = 0.0) -> Tensor:
    """``frames`` frames at ``fps`` from a video file as uint8 ``[frames, H, W, 3]``.

    Frame ``k`` is the one on screen at ``start + k / fps`` (torchvision ``VideoClips`` resampling);
    ``position`` in [0, 1] places the window from the video's start (0) to its end (1). A video
    shorter than the window is padded with its last frame. Raises :class:`UnreadableVideo` or a
    PyAV error for a file that cannot be decoded, or whose frames stop (truncated) inside the window
    more than ``TRUNCATION_TOLERANCE_S`` before its announced duration.
    """
    rate = Fraction(fps).limit_denominator(1_000_000)
    span = frames / rate
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise UnreadableVideo(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1  # DataLoader workers are the parallelism; decoder threads only add overhead
        duration = _header_duration(container, stream)
        origin = stream.start_time or 0
        start = Fraction(position) * max(Fraction(duration) - span, 0) if duration else Fraction(0)
        if start > 0:
            container.seek(origin + int(start / stream.time_base), stream=stream)
        times = [start + k / rate for k in range(frames)]

        to_rgb = VideoReformatter()  # one colour converter for the clip (a frame's own to_ndarray builds a new one)
        picked: list[np.ndarray] = []
        shown = rgb_of = rgb = None
        shown_at = Fraction(0)
        for n, frame in enumerate(container.decode(stream)):
            if frame.pts is not None:
                at = Fraction(frame.pts - origin) * stream.time_base
            else:  # no timestamp: assume a constant frame rate
                at = start + n / Fraction(stream.average_rate)
            if shown is None:
                shown = frame  # the window may start before the first frame (seek overshoot, start offsets)
            while len(picked) < frames and at > times[len(picked)]:
                if rgb_of is not shown:
                    rgb, rgb_of = to_rgb.reformat(shown, format="rgb24").to_ndarray(), shown
                picked.append(rgb)
            if len(picked) == frames:
                break
            shown, shown_at = frame, at
        if shown is None:
            raise UnreadableVideo(f"{path}: no decodable video frames")
        if len(picked) < frames:
            decoded_until = float(shown_at) + (1 / float(stream.average_rate) if stream.average_rate else 0.0)
            if duration is not None and decoded_until < duration - TRUNCATION_TOLERANCE_S:
                raise UnreadableVideo(f"{path}: frames stop at {decoded_until:.2f} s of the announced {duration:.2f} s")
            if rgb_of is not shown:
                rgb = to_rgb.reformat(shown, format="rgb24").to_ndarray()
            picked += [rgb] * (frames - len(picked))  # short video: hold the last frame
    return torch.from_numpy(np.stack(picked))


def eval_resize(crop: int) -> int:
    """Side of the square evaluation resize for a centre ``crop``: the paper's 172→200, 224→256, 256→300, else crop·8/7."""
    return {172: 200, 224: 256, 256: 300}.get(crop, round(crop * 8 / 7))


def clip_transform(crop: int, *, training: bool, resize: int | None = None) -> v2.Transform:
    """uint8 ``Video [T, 3, H, W]`` → float ``[T, 3, crop, crop]`` in [0, 1], no mean/std.

    Training: ``RandomResizedCrop`` + horizontal flip, one draw for all frames. Evaluation: resize
    to a ``resize × resize`` square (aspect ratio not kept), then centre crop, as in the paper.
    """
    if training:
        geometry = [v2.RandomResizedCrop(crop, antialias=True), v2.RandomHorizontalFlip()]
    else:
        resize = eval_resize(crop) if resize is None else resize
        if resize < crop:
            raise ValueError(f"resize must be >= crop, got resize={resize}, crop={crop}")
        geometry = [v2.Resize((resize, resize), antialias=True), v2.CenterCrop(crop)]
    return v2.Compose([*geometry, v2.ToDtype(torch.float32, scale=True)])


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------


class KineticsClips(Dataset):
    """One clip per video: ``(video float32 [3, frames, crop, crop] in [0, 1], label)``, or ``None`` if unreadable.

    Map-style, so a ``DistributedSampler`` shards it and a resumed run sees the same samples: the
    training window and augmentation depend only on ``(seed, epoch, index)`` and leave the global
    RNG untouched. Batch with :func:`grw.train.collate_clips`, which drops unreadable videos and counts them.
    """

    def __init__(
        self,
        videos: LabeledVideoPaths,
        classes: Sequence[str],
        *,
        frames: int,
        fps: float,
        crop: int,
        resize: int | None = None,
        training: bool,
        seed: int = 0,
    ) -> None:
        if frames < 1 or fps <= 0 or crop < 1:
            raise ValueError(f"expected frames >= 1, fps > 0 and crop >= 1, got frames={frames}, fps={fps}, crop={crop}")
        self.videos = videos
        self.classes = list(classes)
        self.frames, self.fps, self.crop, self.training, self.seed = frames, fps, crop, training, seed
        self.transform = clip_transform(crop, training=training, resize=resize)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose training windows and augmentations ``__getitem__`` draws."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> tuple[Tensor, int] | None:
        path, info = self.videos[index]
        label = info["label"]
        with torch.random.fork_rng(devices=[]):
            if self.training:
                torch.manual_seed(int(np.random.SeedSequence((self.seed, self.epoch, index)).generate_state(1)[0]))
            try:
                clip = read_clip(path, self.frames, self.fps, position=torch.rand(()).item() if self.training else 0.0)
            except (av.error.FFmpegError, OSError, UnreadableVideo) as error:
                logger.info("skipping unreadable video %s: %s", path, error)  # dropped and counted by grw.train.collate_clips
                return None
            video = self.transform(tv_tensors.Video(clip.permute(0, 3, 1, 2)))
        return video.as_subclass(Tensor).transpose(0, 1).contiguous(), label


def _class_folders(folder: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())


def _from_manifest(manifest: Path) -> tuple[LabeledVideoPaths, list[str]]:
    """``path label`` lines (paths relative to the manifest's folder); names from a sibling ``classes.txt``."""
    try:
        videos = LabeledVideoPaths.from_csv(str(manifest))
    except (AssertionError, ValueError) as error:
        raise ValueError(f"{manifest}: expected lines of '<video path> <integer label>' ({error})") from error
    videos.path_prefix = str(manifest.parent)
    labels = [videos[i][1]["label"] for i in range(len(videos))]
    if min(labels) < 0:
        raise ValueError(f"{manifest}: a line without a label (or a negative one); expected '<video path> <integer label>'")
    if not os.path.exists(videos[0][0]):
        raise FileNotFoundError(
            f"{manifest}: no video at {videos[0][0]}; expected paths absolute or relative to {manifest.parent}"
        )
    names_file = manifest.parent / "classes.txt"
    if names_file.is_file():
        classes = [line.strip() for line in names_file.read_text().splitlines() if line.strip()]
    else:
        classes = [str(i) for i in range(max(labels) + 1)]
    if max(labels) >= len(classes):
        raise ValueError(f"{manifest}: label {max(labels)} but only {len(classes)} classes in {names_file}")
    return videos, classes


def kinetics_dataset(
    root: str | Path,
    split: str,
    *,
    frames: int,
    fps: float,
    crop: int,
    resize: int | None = None,
    training: bool,
    seed: int = 0,
) -> KineticsClips:
    """The ``split`` of a Kinetics-layout folder (or manifest) as clips ``[3, frames, crop, crop]``.

    ``root`` is ``ROOT`` with ``ROOT/<split>/<class>/<video>``, or with a manifest ``ROOT/<split>.csv``
    (or ``.txt``) of ``path label`` lines, or a manifest file itself (``{split}`` in its name is
    replaced by ``split``). Paper inputs: A0–A2 ``frames=50, fps=5``, A3 ``frames=120, fps=12``.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = Path(str(root).replace("{split}", split)).expanduser()
    folder = root / split
    if root.is_file():
        videos, classes = _from_manifest(root)
    elif folder.is_dir():
        classes = _class_folders(root / "train") if (root / "train").is_dir() else _class_folders(folder)
        unknown = sorted(set(_class_folders(folder)) - set(classes))
        if unknown:
            raise LayoutError(f"{folder} has class folders that are not in {root / 'train'}: {', '.join(unknown[:5])}")
        samples = make_dataset(str(folder), {c: i for i, c in enumerate(classes)}, VIDEO_EXTENSIONS, allow_empty=True)
        if not samples:
            raise LayoutError(f"no videos in {folder}: expected {folder}/<class>/<video> with {'/'.join(VIDEO_EXTENSIONS)}")
        videos = LabeledVideoPaths(samples)
    else:
        manifests = (root / f"{split}.csv", root / f"{split}.txt")
        manifest = next((m for m in manifests if m.is_file()), None)
        if manifest is None:
            raise FileNotFoundError(
                f"no {split} split at {root}: expected a folder {folder}/<class>/<video>.mp4 "
                f"or a manifest {manifests[0]} of '<path> <label>' lines"
            )
        videos, classes = _from_manifest(manifest)
    return KineticsClips(
        videos, classes, frames=frames, fps=fps, crop=crop, resize=resize, training=training, seed=seed
    )


# --------------------------------------------------------------------------------------------
# Layout checker
# --------------------------------------------------------------------------------------------


@dataclass
class LayoutReport:
    """What :func:`check_layout` found; ``str()`` is a readable report."""

    root: Path
    classes: list[str]
    videos: dict[str, dict[str, int]]  # split → class → number of videos
    probed: dict[str, int] = field(default_factory=dict)  # split → number of videos opened
    durations: dict[str, list[float]] = field(default_factory=dict)  # split → seconds of each readable probed video
    unreadable: list[Path] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)  # files that are not videos

    def __str__(self) -> str:
        def spread(values: Sequence[float], spec: str) -> str:
            return " / ".join(format(v, spec) for v in (min(values), statistics.median(values), max(values))) if values else "-"

        head = ("split", "classes", "videos", "per class min/med/max", "probed", "unreadable", "seconds min/med/max")
        rows = []
        for split, per_class in self.videos.items():
            bad = sum(1 for p in self.unreadable if p.relative_to(self.root).parts[0] == split)
            rows.append((
                split, len(per_class), sum(per_class.values()), spread(list(per_class.values()), "g"),
                self.probed.get(split, 0), bad, spread(self.durations.get(split, []), ".1f"),
            ))
        lines = [f"Kinetics layout at {self.root}: {len(self.classes)} classes"]
        lines += ["  " + line for line in text_table(head, rows).splitlines()]
        for title, paths in (("unreadable videos", self.unreadable), ("ignored files (not videos)", self.ignored)):
            if paths:
                lines.append(f"{title}: {len(paths)}")
                lines += [f"  {p}" for p in paths[:10]] + (["  …"] if len(paths) > 10 else [])
        return "\n".join(lines)


def _probe(path: Path) -> float:
    """Seconds of a video (header), after decoding its first frame and its last half second; raises if it cannot be read."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise UnreadableVideo(f"{path}: no video stream")
        duration = _header_duration(container, container.streams.video[0])
    for position in (0.0, 1.0):  # a truncated file decodes from its start but stops before the end
        read_clip(path, 1, 1 / TRUNCATION_TOLERANCE_S, position=position)
    return float("nan") if duration is None else duration


def check_layout(root: str | Path, *, probe: int | None = 200) -> LayoutReport:
    """Validate ``ROOT/{train,val[,test]}/<class>/<video>`` and report on it; raises :class:`LayoutError` (a ValueError).

    ``probe`` videos per split (evenly spread; ``None``: all) are opened with PyAV to find
    unreadable files and durations.
    """
    root = Path(root).expanduser()
    expected = (f"expected ROOT/train and ROOT/val (optionally ROOT/test), each with one folder per class holding "
                f"{'/'.join(VIDEO_EXTENSIONS)} videos")
    if not root.exists():
        raise LayoutError(f"{root} does not exist; {expected}")
    if not root.is_dir():
        raise LayoutError(f"{root} is not a folder; {expected}")
    splits = [s for s in SPLITS if (root / s).is_dir()]
    if not splits:
        found = sorted(p.name for p in root.iterdir())[:10]
        raise LayoutError(f"{root} has no split folders (found: {', '.join(found) or 'nothing'}); {expected}")
    missing = [s for s in ("train", "val") if s not in splits]
    if missing:
        raise LayoutError(f"{root} has no {' or '.join(missing)} folder; {expected}")

    files: dict[str, list[Path]] = {}
    videos: dict[str, dict[str, int]] = {}
    ignored: list[Path] = []
    for split in splits:
        videos[split], files[split] = {}, []
        for entry in sorted(os.scandir(root / split), key=lambda e: e.name):
            if entry.is_file() and entry.name.lower().endswith(VIDEO_EXTENSIONS):
                raise LayoutError(
                    f"{entry.path} is a video directly in the {split} folder; expected {root / split}/<class>/<video>"
                )
            if not entry.is_dir():
                ignored.append(Path(entry.path))
                continue
            found = []
            for item in sorted(os.scandir(entry.path), key=lambda e: e.name):
                if item.is_dir():
                    raise LayoutError(
                        f"{item.path} is a folder inside the class folder {entry.name}; expected the videos directly in "
                        f"{root / split}/<class>/ (no nested folders)"
                    )
                (found if item.name.lower().endswith(VIDEO_EXTENSIONS) else ignored).append(Path(item.path))
            if not found:
                raise LayoutError(f"class folder {entry.path} has no videos; expected {'/'.join(VIDEO_EXTENSIONS)} files in it")
            videos[split][entry.name] = len(found)
            files[split] += found
        if not files[split]:
            raise LayoutError(f"the {split} split at {root / split} is empty; expected one folder per class holding videos")

    classes = sorted(videos["train"])
    for split in splits[1:]:
        absent, extra = sorted(set(classes) - set(videos[split])), sorted(set(videos[split]) - set(classes))
        if extra:
            raise LayoutError(f"{len(extra)} class(es) in {split} have no folder in train: {', '.join(extra[:5])}; "
                              f"labels are indices into the sorted train classes, so every {split} class must be in train")
        if absent and split == "val":
            raise LayoutError(f"{len(absent)} class(es) in train have no folder in val: {', '.join(absent[:5])}; "
                              "expected the same class folders in train and val")

    report = LayoutReport(root, classes, videos, ignored=ignored)
    for split in splits:
        paths = files[split]
        chosen = paths if probe is None or len(paths) <= probe else [paths[i * len(paths) // probe] for i in range(probe)]
        report.probed[split], report.durations[split] = len(chosen), []
        for path in tqdm(chosen, desc=f"probing {split}", leave=False, disable=len(chosen) < 100):
            try:
                report.durations[split].append(_probe(path))
            except (av.error.FFmpegError, OSError, UnreadableVideo):
                report.unreadable.append(path)
    return report


# --------------------------------------------------------------------------------------------
# Synthetic stand-in
# --------------------------------------------------------------------------------------------


def _synthetic_classes(classes: int) -> list[str]:
    """Names in index order: the heading's vertical direction and angle, e.g. ``00_up_68deg``."""
    width = max(2, len(str(classes - 1)))  # zero-padded so that sorted names keep index order
    names = []
    for k in range(classes):
        deg = round(-90 + 180 * (k + 0.5) / classes)
        names.append(f"{k:0{width}d}_{'up' if deg < 0 else 'down' if deg > 0 else 'level'}_{abs(deg):02d}deg")
    return names


def synthetic_video(
    seed: int, split: str, label: int, index: int, *, classes: int, frames: int, size: int, fps: int
) -> np.ndarray:
    """One stand-in video, uint8 ``[frames, size, size, 3]``: a random smooth periodic texture drifting at a class heading.

    Class ``k`` heads at ``-90° + 180°(k + ½)/classes`` from the horizontal (negative: up), left or
    right at random, from a random offset at 15–25 % of the frame per second. Any single frame is a
    shifted random texture, so only the motion carries the class; the random left/right makes a
    horizontal flip keep the class, and reversing time maps class ``k`` to ``classes - 1 - k``.
    """
    rng = np.random.default_rng((seed, SPLITS.index(split), label, index))
    heading = math.radians(-90 + 180 * (label + 0.5) / classes)
    speed = rng.uniform(0.15, 0.25) * size / fps  # pixels per frame
    vx, vy = speed * math.cos(heading) * rng.choice((-1.0, 1.0)), speed * math.sin(heading)
    x0, y0 = rng.uniform(0, size, 2)
    f = np.fft.fftfreq(size)  # cycles per pixel
    fy, fx = f[:, None], f[None, :]
    sigma = size / 16  # texture grain (Gaussian low-pass, pixels)
    spectrum = np.fft.fft2(rng.standard_normal((3, size, size))) * np.exp(-2 * (np.pi * sigma) ** 2 * (fx**2 + fy**2))
    texture = np.fft.ifft2(spectrum).real
    mean, std = texture.mean(axis=(1, 2), keepdims=True), texture.std(axis=(1, 2), keepdims=True)
    video = np.empty((frames, size, size, 3), dtype=np.uint8)
    for t in range(frames):
        # Fourier shift theorem: an exact sub-pixel translation of the periodic texture
        shifted = np.fft.ifft2(spectrum * np.exp(-2j * np.pi * (fx * (x0 + vx * t) + fy * (y0 + vy * t)))).real
        video[t] = np.clip(128 + 48 * (shifted - mean) / std, 0, 255).round().astype(np.uint8).transpose(1, 2, 0)
    return video


def _write_mp4(path: Path, video: np.ndarray, fps: int) -> None:
    """H.264 ``.mp4`` (yuv420p, index at the front like web downloads); identical bytes for identical frames."""
    # bitexact: no wall-clock creation time in the header, so the bytes do not depend on when they were written
    with av.open(str(path), "w", format="mp4", options={"movflags": "faststart", "fflags": "+bitexact"}) as container:
        # cpu-independent: x264's AVX-512 mbtree code reads stale heap memory past short macroblock rows, so bytes varied
        stream = container.add_stream("libx264", rate=fps, options={"crf": "18", "x264-params": "cpu-independent=1"})
        stream.width, stream.height, stream.pix_fmt = video.shape[2], video.shape[1], "yuv420p"
        stream.codec_context.thread_count = 1  # x264's output depends on its thread count
        for frame in video:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def _complete_params(folder: Path) -> dict | None:
    marker = folder / SYNTHETIC_MARKER
    return json.loads(marker.read_text())["params"] if marker.is_file() else None


def write_synthetic(
    out: str | Path,
    *,
    classes: int = 4,
    train_per_class: int = 16,
    val_per_class: int = 4,
    seed: int = 0,
    frames: int = 100,
    size: int = 64,
    fps: int = 10,
    progress: bool = True,
) -> Path:
    """Write (or reuse) a synthetic stand-in ``OUT/{train,val}/<class>/<video>.mp4`` (see :func:`synthetic_video`).

    Written into a temporary sibling folder, marked complete with ``synthetic.json`` and renamed
    into place, so an interrupted write never looks whole. The same seed gives the same bytes. The
    default 10 s at 10 fps covers the paper's A0–A2 clip (50 frames at 5 fps) like a Kinetics video.
    """
    if classes < 2 or train_per_class < 1 or val_per_class < 1:
        raise ValueError(f"expected classes >= 2 and at least one video per class and split, got {classes=}, "
                         f"{train_per_class=}, {val_per_class=}")
    if frames < 2 or size < 16 or size % 2 or fps < 1:
        raise ValueError(f"expected frames >= 2, an even size >= 16 and fps >= 1, got {frames=}, {size=}, {fps=}")
    out = Path(out).expanduser().absolute()
    params = dict(version=SYNTHETIC_VERSION, classes=classes, train_per_class=train_per_class,
                  val_per_class=val_per_class, seed=seed, frames=frames, size=size, fps=fps)
    names = _synthetic_classes(classes)
    files = {(split, k, i): Path(split, names[k], f"{names[k]}_{i:04d}.mp4")
             for split, n in (("train", train_per_class), ("val", val_per_class)) for k in range(classes) for i in range(n)}

    def reusable() -> bool:
        found = _complete_params(out)
        if found is None:
            # Without its marker a folder is rebuilt, but only if it holds nothing this call would not write.
            ours = set(files.values())
            if out.exists() and not (out.is_dir() and all(p.is_dir() or p.relative_to(out) in ours for p in out.rglob("*"))):
                raise ValueError(f"{out} exists and is not a complete synthetic stand-in (no {SYNTHETIC_MARKER}); "
                                 "remove it or choose another folder")
            return False
        if found != params:
            raise ValueError(f"{out} holds a synthetic stand-in with other parameters ({found}); "
                             f"remove it or choose another folder for {params}")
        return True

    if reusable():
        return out
    try:
        with atomic_path(out) as partial:
            for (split, k, i), path in tqdm(files.items(), desc=f"writing {out.name}", leave=False, disable=not progress):
                (partial / path).parent.mkdir(parents=True, exist_ok=True)
                video = synthetic_video(seed, split, k, i, classes=classes, frames=frames, size=size, fps=fps)
                _write_mp4(partial / path, video, fps)
            marker = {"about": "synthetic stand-in for Kinetics written by grw.data.kinetics.write_synthetic",
                      "params": params, "classes": names}
            (partial / SYNTHETIC_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
            if out.exists() and _complete_params(out) is None:
                shutil.rmtree(out)  # an unmarked leftover (checked above); a rename cannot replace a folder with entries
    except OSError:
        if not reusable():  # another process may have finished the same stand-in first
            raise
    return out
