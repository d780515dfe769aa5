"""Kinetics-600 on disk, the paper's clip protocols, a layout checker and a synthetic stand-in written as real
H.264 files.

Three layouts of ``ROOT`` are read:

* **class folders**: ``ROOT/{train,val,test}/<class name>/<video>.{mp4,avi,mkv,webm}``;
* **the release**, as the common download scripts leave it: ``ROOT/annotations/{train,val,test}.csv``
  (columns ``label, youtube_id, time_start, time_end, split``) and flat folders
  ``ROOT/<split>/<youtube_id>_<time_start:06d>_<time_end:06d>.mp4``; videos listed but not on disk
  are counted and reported (:class:`VideoList`), not fatal;
* a **manifest** of ``path label`` lines.

The class index is the position of the class name among the sorted names, as torchvision's
``Kinetics`` builds it, so every split shares one labelling and a released model's 600 logits line
up: the names are the class folders of ``ROOT/train``, or the labels of ``annotations/train.csv``
(of the split's own CSV when there is no train CSV). A symlinked folder is followed unless it leads
back to a folder it is in or to a class folder already read, and every video counts once, by its
resolved path; what is left out is reported, never raised.

Two clip protocols: :class:`KineticsClips` gives one clip per video (a random window for training, the
first for validation); :class:`KineticsAllClips` gives every non-overlapping clip of every video, as
torchvision's ``VideoClips`` cuts them, the paper's evaluation.

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
  the window position is one uniform draw, taken from a per-sample seed here. The validation
  window is the first one (``UniformClipSampler``'s first clip).
* ``pytorchvideo.transforms`` does not import on torchvision >= 0.17; augmentation is
  ``torchvision.transforms.v2`` on ``tv_tensors.Video`` (one crop and flip for all frames).
"""

from __future__ import annotations

import csv
import errno
import json
import logging
import math
import os
import shutil
import statistics
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import av
import numpy as np
from av.video.reformatter import VideoReformatter
import torch
from pytorchvideo.data.labeled_video_paths import LabeledVideoPaths
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.datasets.video_utils import VideoClips
from torchvision.transforms import v2
from tqdm.auto import tqdm

from grw.io import atomic_path, text_table

__all__ = [
    "ANNOTATION_COLUMNS",
    "KineticsAllClips",
    "KineticsClips",
    "LayoutError",
    "LayoutReport",
    "SPLITS",
    "UnreadableVideo",
    "VIDEO_EXTENSIONS",
    "VideoList",
    "VideoTimestamps",
    "check_layout",
    "clip_transform",
    "eval_resize",
    "kinetics_all_clips",
    "kinetics_dataset",
    "kinetics_videos",
    "probe_timestamps",
    "read_clip",
    "read_frames",
    "synthetic_video",
    "video_timestamps",
    "write_synthetic",
]

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm")
ANNOTATIONS = "annotations"  # the release layout's folder of {split}.csv files
ANNOTATION_COLUMNS = ("label", "youtube_id", "time_start", "time_end", "split")
LAYOUTS = ("folders", "release")  # the layouts write_synthetic writes
TRUNCATION_TOLERANCE_S = 0.5  # decoded frames may stop this much before the header's duration
MAX_DECODED_PIXELS = 1920 * 1080  # larger source frames are shrunk while decoding: an 8K clip would cost gigabytes
SYNTHETIC_MARKER = "synthetic.json"
SYNTHETIC_VERSION = 2  # 2: the class is the drift speed (1: the heading)


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


def _rgb(to_rgb: VideoReformatter, frame: av.VideoFrame) -> np.ndarray:
    """``frame`` as uint8 RGB ``[H, W, 3]``, shrunk (aspect kept, area averaging) to at most ``MAX_DECODED_PIXELS`` pixels."""
    pixels = frame.width * frame.height
    if pixels <= MAX_DECODED_PIXELS:
        return to_rgb.reformat(frame, format="rgb24").to_ndarray()
    scale = (MAX_DECODED_PIXELS / pixels) ** 0.5
    width, height = max(2, int(frame.width * scale) // 2 * 2), max(2, int(frame.height * scale) // 2 * 2)
    return to_rgb.reformat(frame, format="rgb24", width=width, height=height, interpolation="AREA").to_ndarray()


def read_clip(path: str | Path, frames: int, fps: float, *, position: float = 0.0) -> Tensor:
    """``frames`` frames at ``fps`` from a video file as uint8 ``[frames, H, W, 3]``.

    Frame ``k`` is the one on screen at ``start + k / fps`` (torchvision ``VideoClips`` resampling);
    ``position`` in [0, 1] places the window from the video's start (0) to its end (1). A video
    shorter than the window is padded with its last frame; a frame over ``MAX_DECODED_PIXELS`` is shrunk while
    decoded. Raises :class:`UnreadableVideo` or a
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
                    rgb, rgb_of = _rgb(to_rgb, shown), shown
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
                rgb = _rgb(to_rgb, shown)
            picked += [rgb] * (frames - len(picked))  # short video: hold the last frame
    return torch.from_numpy(np.stack(picked))


def read_frames(path: str | Path, pts: Sequence[int]) -> Tensor:
    """uint8 ``[len(pts), H, W, 3]``: the frames of a video at the timestamps ``pts`` (its time base, ascending, repeats allowed).

    Seeks to the key frame before the first and decodes up to the last; raises :class:`UnreadableVideo`
    (or a PyAV error) when a frame cannot be decoded.
    """
    wanted, last = set(pts), max(pts)
    found: dict[int, np.ndarray] = {}
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise UnreadableVideo(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1  # DataLoader workers are the parallelism
        container.seek(min(pts), stream=stream)  # backward: the key frame at or before the first wanted frame
        to_rgb = VideoReformatter()
        for frame in container.decode(stream):
            if frame.pts in wanted:
                found[frame.pts] = _rgb(to_rgb, frame)
            if frame.pts is not None and frame.pts >= last:
                break
    absent = sorted(wanted - found.keys())
    if absent:
        raise UnreadableVideo(f"{path}: {len(absent)} frame(s) of the clip could not be decoded (the first at pts {absent[0]})")
    return torch.from_numpy(np.stack([found[p] for p in pts]))


class VideoTimestamps(NamedTuple):
    """A video stream's frame timestamps ``pts`` (ascending, in its time base) and its average frame rate ``fps``."""

    pts: list[int]
    fps: float


def video_timestamps(path: str | Path) -> VideoTimestamps:
    """The timestamps of every frame of a video in presentation order, read from its packets (no decoding).

    Raises :class:`UnreadableVideo` (or a PyAV error) for a file without a video stream, frames or frame rate.
    """
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise UnreadableVideo(f"{path}: no video stream")
        stream = container.streams.video[0]
        pts = sorted(packet.pts for packet in container.demux(stream) if packet.pts is not None)
        if not pts or not stream.average_rate:
            raise UnreadableVideo(f"{path}: no video frames or no frame rate")
        return VideoTimestamps(pts, float(stream.average_rate))


class _Timestamps(Dataset):
    """:func:`video_timestamps` of each path, ``None`` for a video that cannot be read (for a DataLoader's workers)."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> VideoTimestamps | None:
        try:
            return video_timestamps(self.paths[index])
        except (av.error.FFmpegError, OSError, UnreadableVideo) as error:
            logger.info("unreadable video %s: %s", self.paths[index], error)
            return None


def _as_is(item: object) -> object:
    return item


def probe_timestamps(paths: Sequence[Path], *, workers: int = 0, progress: bool = True) -> list[VideoTimestamps | None]:
    """:func:`video_timestamps` of every video in order (``None`` where unreadable), read by ``workers`` processes."""
    loader = DataLoader(_Timestamps(paths), batch_size=None, num_workers=workers, collate_fn=_as_is)
    return list(tqdm(loader, desc="reading timestamps", total=len(paths), leave=False, disable=not progress))


def _read_item(read: Callable[[], Tensor], path: Path, transform: v2.Transform, label: int) -> tuple[Tensor, int] | None:
    """``(video [3, T, crop, crop], label)`` from the uint8 frames ``[T, H, W, 3]`` that ``read()`` returns, transformed;
    ``None`` (logged) where ``path`` cannot be read: dropped and counted by :func:`grw.train.collate_clips`."""
    try:
        clip = read()
    except (av.error.FFmpegError, OSError, UnreadableVideo) as error:
        logger.info("skipping unreadable video %s: %s", path, error)
        return None
    video = transform(tv_tensors.Video(clip.permute(0, 3, 1, 2)))
    return video.as_subclass(Tensor).transpose(0, 1).contiguous(), label


def eval_resize(crop: int) -> int:
    """Side of the square evaluation resize for a centre ``crop``: the paper's 172→200, 224→256, 256→300, else crop·8/7."""
    return {172: 200, 224: 256, 256: 300}.get(crop, round(crop * 8 / 7))


def clip_transform(crop: int, *, training: bool, resize: int | None = None, min_area: float = 0.08) -> v2.Transform:
    """uint8 ``Video [T, 3, H, W]`` → float ``[T, 3, crop, crop]`` in [0, 1], no mean/std.

    Training: ``RandomResizedCrop`` of ``min_area`` … 1 of the frame (torchvision's default 0.08) + horizontal
    flip, one draw for all frames, on the uint8 frames (only the kept pixels are converted). Evaluation, as in the paper: the pixels become
    ``uint8 / 255`` floats, which are resized to a ``resize × resize`` square (aspect ratio not kept)
    and centre-cropped.
    """
    to_float = v2.ToDtype(torch.float32, scale=True)
    if training:
        if not 0 < min_area <= 1:
            raise ValueError(f"min_area must be in (0, 1], got {min_area}")
        crops = v2.RandomResizedCrop(crop, scale=(min_area, 1.0), antialias=True)
        return v2.Compose([crops, v2.RandomHorizontalFlip(), to_float])
    resize = eval_resize(crop) if resize is None else resize
    if resize < crop:
        raise ValueError(f"resize must be >= crop, got resize={resize}, crop={crop}")
    return v2.Compose([to_float, v2.Resize((resize, resize), antialias=True), v2.CenterCrop(crop)])


# --------------------------------------------------------------------------------------------
# Layouts: the labelled videos of a split
# --------------------------------------------------------------------------------------------


@dataclass
class VideoList:
    """The labelled videos of one split, where the class names came from, and what the layout left out."""

    paths: list[Path]
    labels: list[int]
    classes: list[str]
    classes_from: str  # e.g. "the class folders of ROOT/train" or "ROOT/annotations/train.csv"
    missing: list[Path] = field(default_factory=list)  # listed in the annotations, not on disk
    unlisted: list[Path] = field(default_factory=list)  # videos on disk that the annotations do not list
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # links not followed and duplicates, with why

    def log_omissions(self) -> None:
        """One warning per kind of entry left out (missing, unlisted, skipped), with the first few."""
        for title, items in (("video(s) listed in the annotations but missing", self.missing),
                             ("video(s) not in the annotations (not used)", self.unlisted),
                             ("link(s) not followed or duplicate video(s) (not used)",
                              [f"{p} ({why})" for p, why in self.skipped])):
            if items:
                logger.warning("%d %s: %s%s", len(items), title, ", ".join(map(str, items[:3])), ", …" if len(items) > 3 else "")


def _entries(folder: Path) -> list[os.DirEntry]:
    with os.scandir(folder) as entries:
        return sorted(entries, key=lambda entry: entry.name)


def _is_video(name: str) -> bool:
    return name.lower().endswith(VIDEO_EXTENSIONS)


def _follow(entry: os.DirEntry, folder: Path) -> tuple[Path | None, str]:
    """Where ``entry`` of the (resolved) ``folder`` leads, or ``None`` and why a link is not followed.

    Not followed: a dangling link, a link loop, a link back to ``folder`` or one of the folders it is in.
    """
    if not entry.is_symlink():
        return folder / entry.name, ""
    try:
        target = Path(entry.path).resolve(strict=True)
    except RuntimeError:  # Python < 3.13 reports a loop this way
        return None, "a link loop"
    except OSError as error:
        return None, "a link loop" if error.errno == errno.ELOOP else "a dangling link"
    if target == folder or target in folder.parents:
        return None, f"a link back to {target}, a folder it is in"
    return target, ""


@dataclass
class _Found:
    """What a scan found besides videos: non-video files, and entries left out with the reason."""

    ignored: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def _class_folders(split_dir: Path, visited: dict[Path, Path], found: _Found) -> dict[str, tuple[Path, Path]]:
    """``{class name: (folder, resolved folder)}`` of a split; ``visited`` maps the resolved folders already read to their path."""
    resolved_split = split_dir.resolve()
    folders = {}
    for entry in _entries(split_dir):
        path = Path(entry.path)
        target, why = _follow(entry, resolved_split)
        if target is None:
            found.skipped.append((path, why))
        elif not (target.is_dir() if entry.is_symlink() else entry.is_dir()):
            if _is_video(entry.name):
                raise LayoutError(f"{path} is a video directly in the {split_dir.name} folder; expected "
                                  f"{split_dir}/<class>/<video> (or ROOT/{ANNOTATIONS}/{split_dir.name}.csv for the release layout)")
            found.ignored.append(path)
        elif target in visited:
            found.skipped.append((path, f"the same folder as {visited[target]}"))
        else:
            visited[target] = path
            folders[entry.name] = (path, target)
    return folders


def _class_videos(folder: Path, resolved: Path, found: _Found) -> list[tuple[Path, Path, bool]]:
    """The videos in a class folder as ``(path, resolved path, whether the entry is a link)``."""
    videos = []
    for entry in _entries(folder):
        path = Path(entry.path)
        target, why = _follow(entry, resolved)
        if target is None:
            found.skipped.append((path, why))
        elif target.is_dir() if entry.is_symlink() else entry.is_dir():
            raise LayoutError(f"{path} is a folder inside the class folder {folder.name}; expected the videos directly in "
                              f"{folder.parent}/<class>/ (no nested folders)")
        elif _is_video(entry.name):
            videos.append((path, target, entry.is_symlink()))
        else:
            found.ignored.append(path)
    return videos


def _count_once(videos: dict[str, list[tuple[Path, Path, bool]]], seen: dict[Path, Path], found: _Found) -> dict[str, list[Path]]:
    """The videos of each class, each counted once by its resolved path (``seen``: those counted → their path).

    Files come before links to them, so a link never takes a video into its own class.
    """
    kept: dict[str, list[Path]] = {name: [] for name in videos}
    for links in (False, True):
        for name, entries in videos.items():
            for path, target, link in entries:
                if link != links:
                    continue
                if target in seen:
                    found.skipped.append((path, f"the same video as {seen[target]}"))
                else:
                    seen[target] = path
                    kept[name].append(path)
    return {name: sorted(paths) for name, paths in kept.items()}


def _from_class_folders(root: Path, split: str) -> VideoList:
    source = root / "train" if (root / "train").is_dir() else root / split
    classes = sorted(_class_folders(source, {}, _Found()))
    found = _Found()
    folders = _class_folders(root / split, {}, found)
    unknown = sorted(set(folders) - set(classes))
    if unknown:
        raise LayoutError(f"{root / split} has class folders that are not in {source}: {', '.join(unknown[:5])}")
    index = {name: i for i, name in enumerate(classes)}
    videos = _count_once({name: _class_videos(*folder, found) for name, folder in folders.items()}, {}, found)
    paths = [path for in_class in videos.values() for path in in_class]
    labels = [index[name] for name, in_class in videos.items() for _ in in_class]
    if not paths:
        raise LayoutError(f"no videos in {root / split}: expected {root / split}/<class>/<video> with {'/'.join(VIDEO_EXTENSIONS)}")
    return VideoList(paths, labels, classes, f"the class folders of {source}", skipped=found.skipped)


def _seconds(value: str | None, where: str) -> int:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = math.nan
    if not number.is_integer():
        raise LayoutError(f"{where}: time_start and time_end must be whole seconds, got {value!r}")
    return int(number)


def _release_stem(youtube_id: str, time_start: int, time_end: int) -> str:
    """The name (without extension) of a video of the release layout."""
    return f"{youtube_id}_{time_start:06d}_{time_end:06d}"


def _read_annotations(path: Path) -> dict[str, str]:
    """``{file stem: label}`` of a release CSV, the stem being ``<youtube_id>_<time_start:06d>_<time_end:06d>``.

    A UTF-8 byte-order mark is skipped; bytes that are not UTF-8, a malformed line and one video listed with two labels
    are refused with the file and line.
    """
    seen: dict[str, tuple[str, int]] = {}  # file stem → (label, line)
    with open(path, newline="", encoding="utf-8-sig") as file:
        reader = csv.DictReader(file)
        try:
            absent = [column for column in ANNOTATION_COLUMNS[:4] if column not in (reader.fieldnames or [])]
            if absent:
                raise LayoutError(f"{path} has no column {', '.join(absent)}; expected a header line "
                                  f"{','.join(ANNOTATION_COLUMNS)} (found {reader.fieldnames})")
            for row in reader:
                where = f"{path}, line {reader.line_num}"
                label = (row["label"] or "").strip()
                if not label:
                    raise LayoutError(f"{where}: no label; expected the labelled annotations (a class name in the "
                                      "label column)")
                stem = _release_stem(row["youtube_id"], _seconds(row["time_start"], where),
                                     _seconds(row["time_end"], where))
                first, line = seen.setdefault(stem, (label, reader.line_num))
                if first != label:
                    raise LayoutError(f"{where}: video {stem} is listed with the label {label!r}, and on line {line} "
                                      f"with {first!r}; expected one label per video")
        except UnicodeDecodeError as error:
            raise LayoutError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start}); expected the release "
                              "annotations as a UTF-8 CSV file") from None
        except csv.Error as error:
            raise LayoutError(f"{path}, line {reader.line_num}: not a readable CSV line ({error})") from None
    return {stem: label for stem, (label, _) in seen.items()}


def _release_classes(root: Path, split: str) -> tuple[list[str], Path]:
    """The sorted labels of ``annotations/train.csv`` (else of the split's own CSV) and that CSV."""
    source = root / ANNOTATIONS / "train.csv"
    if not source.is_file():
        source = root / ANNOTATIONS / f"{split}.csv"
    return sorted(set(_read_annotations(source).values())), source


def _release_files(split_dir: Path, seen: dict[Path, Path], found: _Found) -> dict[str, Path]:
    """``{file stem: path}`` of the videos in a flat release folder (none if it does not exist), each counted once."""
    if not split_dir.is_dir():
        return {}
    resolved_split = split_dir.resolve()
    files: dict[str, Path] = {}
    for entry in _entries(split_dir):
        path = Path(entry.path)
        target, why = _follow(entry, resolved_split)
        stem = entry.name.rpartition(".")[0]
        if target is None:
            found.skipped.append((path, why))
        elif not _is_video(entry.name) or (target.is_dir() if entry.is_symlink() else entry.is_dir()):
            found.ignored.append(path)
        elif target in seen or stem in files:
            found.skipped.append((path, f"the same video as {seen.get(target) or files[stem]}"))
        else:
            seen[target] = files[stem] = path
    return files


def _from_release(root: Path, split: str) -> VideoList:
    annotations = root / ANNOTATIONS / f"{split}.csv"
    listed = _read_annotations(annotations)
    classes, source = _release_classes(root, split)
    unknown = sorted(set(listed.values()) - set(classes))
    if unknown:
        raise LayoutError(f"{annotations} has labels that are not in {source}: {', '.join(map(repr, unknown[:5]))}")
    found = _Found()
    files = _release_files(root / split, {}, found)
    present = [stem for stem in listed if stem in files]
    if not present:
        raise LayoutError(f"none of the {len(listed)} videos listed in {annotations} is in {root / split}; expected files "
                          f"{root / split}/<youtube_id>_<time_start:06d>_<time_end:06d>.mp4")
    index = {name: i for i, name in enumerate(classes)}
    return VideoList(
        [files[stem] for stem in present], [index[listed[stem]] for stem in present], classes, str(source),
        missing=[root / split / f"{stem}.mp4" for stem in listed if stem not in files],
        unlisted=[path for stem, path in files.items() if stem not in listed], skipped=found.skipped,
    )


def _from_manifest(manifest: Path) -> VideoList:
    """``path label`` lines (paths relative to the manifest's folder); names from a sibling ``classes.txt``."""
    try:
        videos = LabeledVideoPaths.from_csv(str(manifest))
    except (AssertionError, ValueError) as error:
        raise ValueError(f"{manifest}: expected lines of '<video path> <integer label>' ({error})") from error
    videos.path_prefix = str(manifest.parent)
    paths, labels = zip(*((Path(path), info["label"]) for path, info in (videos[i] for i in range(len(videos)))))
    if min(labels) < 0:
        raise ValueError(f"{manifest}: a line without a label (or a negative one); expected '<video path> <integer label>'")
    if not paths[0].exists():
        raise FileNotFoundError(f"{manifest}: no video at {paths[0]}; expected paths absolute or relative to {manifest.parent}")
    names_file = manifest.parent / "classes.txt"
    if names_file.is_file():
        classes = [line.strip() for line in names_file.read_text().splitlines() if line.strip()]
        classes_from = str(names_file)
    else:
        classes, classes_from = [str(i) for i in range(max(labels) + 1)], f"the labels of {manifest}"
    if max(labels) >= len(classes):
        raise ValueError(f"{manifest}: label {max(labels)} but only {len(classes)} classes in {names_file}")
    return VideoList(list(paths), list(labels), classes, classes_from)


def kinetics_videos(root: str | Path, split: str) -> VideoList:
    """The labelled videos of ``split`` in any of the three layouts (see the module's docstring).

    ``root`` is ``ROOT`` of the class-folder or release layout, or holds a manifest ``ROOT/<split>.csv``
    (or ``.txt``) of ``path label`` lines, or is a manifest file itself (``{split}`` in its name is
    replaced by ``split``). The release layout is chosen when ``ROOT/annotations/<split>.csv`` exists.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = Path(str(root).replace("{split}", split)).expanduser()
    if root.is_file():
        return _from_manifest(root)
    if (root / ANNOTATIONS / f"{split}.csv").is_file():
        return _from_release(root, split)
    if (root / split).is_dir():
        return _from_class_folders(root, split)
    manifests = (root / f"{split}.csv", root / f"{split}.txt")
    manifest = next((m for m in manifests if m.is_file()), None)
    if manifest is None:
        raise FileNotFoundError(
            f"no {split} split at {root}: expected a folder {root / split}/<class>/<video>.mp4, the release layout "
            f"{root / ANNOTATIONS / split}.csv with {root / split}/<youtube_id>_<start>_<end>.mp4, "
            f"or a manifest {manifests[0]} of '<path> <label>' lines"
        )
    return _from_manifest(manifest)


# --------------------------------------------------------------------------------------------
# Datasets
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
        min_area: float = 0.08,
        training: bool,
        seed: int = 0,
    ) -> None:
        if frames < 1 or fps <= 0 or crop < 1:
            raise ValueError(f"expected frames >= 1, fps > 0 and crop >= 1, got frames={frames}, fps={fps}, crop={crop}")
        self.videos = videos
        self.classes = list(classes)
        self.frames, self.fps, self.crop, self.training, self.seed = frames, fps, crop, training, seed
        self.transform = clip_transform(crop, training=training, resize=resize, min_area=min_area)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose training windows and augmentations ``__getitem__`` draws."""
        self.epoch = epoch

    def path(self, index: int) -> Path:
        """The video file of sample ``index``."""
        return Path(self.videos[index][0])

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> tuple[Tensor, int] | None:
        path, info = self.videos[index]
        with torch.random.fork_rng(devices=[]):
            if self.training:
                torch.manual_seed(int(np.random.SeedSequence((self.seed, self.epoch, index)).generate_state(1)[0]))
            position = torch.rand(()).item() if self.training else 0.0
            return _read_item(lambda: read_clip(path, self.frames, self.fps, position=position), Path(path),
                              self.transform, info["label"])


def kinetics_dataset(
    root: str | Path,
    split: str,
    *,
    frames: int,
    fps: float,
    crop: int,
    resize: int | None = None,
    min_area: float = 0.08,
    training: bool,
    seed: int = 0,
) -> KineticsClips:
    """The ``split`` of a Kinetics folder (a layout of :func:`kinetics_videos`), one clip ``[3, frames, crop, crop]`` per video.

    Videos left out (missing, unlisted, links not followed) are logged as warnings. Paper inputs:
    A0–A2 ``frames=50, fps=5``, A3 ``frames=120, fps=12``.
    """
    listing = kinetics_videos(root, split)
    listing.log_omissions()
    videos = LabeledVideoPaths([(str(path), label) for path, label in zip(listing.paths, listing.labels)])
    return KineticsClips(
        videos, listing.classes, frames=frames, fps=fps, crop=crop, resize=resize, min_area=min_area, training=training,
        seed=seed,
    )


def _clip_timestamps(stamps: VideoTimestamps, frames: int, fps: float) -> Tensor:
    """``[clips, frames]`` timestamps of a video's non-overlapping clips at ``fps``, as torchvision's ``VideoClips`` cuts them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "not enough frames": the caller counts such videos
        clips, _ = VideoClips.compute_clips_for_video(torch.tensor(stamps.pts), frames, frames, stamps.fps, fps)
    return clips


class KineticsAllClips(Dataset):
    """Every non-overlapping clip of every video, the paper's evaluation: ``(video [3, frames, crop, crop], label)`` or ``None``.

    Each video is resampled to ``fps`` and cut into runs of ``frames`` frames exactly as torchvision's
    ``VideoClips(frames_per_clip=frames, step_between_clips=frames, frame_rate=fps)`` does:
    ``floor(n · fps / source_fps)`` frames of the ``n`` the video has (``ceil(n / step)`` when
    ``step = source_fps / fps`` is a whole number), frame ``j`` being the source frame ``floor(j · step)``;
    a rest shorter than ``frames`` is left out, and a video with no clip is counted in ``dropped_short``.
    Pixels are ``uint8 / 255`` floats resized to ``resize``² and centre-cropped (:func:`clip_transform`).

    ``clip_video[i]`` is the index in ``paths`` (and ``labels``) of clip ``i``'s video. Each item decodes
    its own clip: a Kinetics video is about 10 s, one clip at the paper's settings, so decoding a whole
    video once for all its clips would save nothing while one item per clip keeps the dataset map-style.
    """

    def __init__(
        self,
        videos: VideoList,
        timestamps: Sequence[VideoTimestamps | None],
        *,
        frames: int,
        fps: float,
        crop: int,
        resize: int | None = None,
    ) -> None:
        if frames < 1 or fps <= 0 or crop < 1:
            raise ValueError(f"expected frames >= 1, fps > 0 and crop >= 1, got frames={frames}, fps={fps}, crop={crop}")
        if len(timestamps) != len(videos.paths):
            raise ValueError(f"expected the timestamps of each of the {len(videos.paths)} videos, got {len(timestamps)}")
        self.classes, self.paths, self.labels = videos.classes, videos.paths, videos.labels
        self.classes_from, self.missing = videos.classes_from, videos.missing
        self.frames, self.fps = frames, fps
        self.transform = clip_transform(crop, training=False, resize=resize)
        self.dropped_short: list[Path] = []  # videos shorter than one clip
        self.unreadable: list[Path] = []  # videos whose timestamps could not be read
        clips, owners = [torch.empty(0, frames, dtype=torch.long)], []
        for index, (path, stamps) in enumerate(zip(self.paths, timestamps)):
            if stamps is None:
                self.unreadable.append(path)
                continue
            cut = _clip_timestamps(stamps, frames, fps)
            if len(cut) == 0:
                self.dropped_short.append(path)
            clips.append(cut)
            owners += [index] * len(cut)
        self.clip_pts = torch.cat(clips)  # [clips, frames] timestamps of each clip's frames
        self.clip_video = torch.tensor(owners, dtype=torch.long)  # [clips]

    def path(self, index: int) -> Path:
        """The video file of clip ``index``."""
        return self.paths[int(self.clip_video[index])]

    def __len__(self) -> int:
        return len(self.clip_video)

    def __getitem__(self, index: int) -> tuple[Tensor, int] | None:
        video = int(self.clip_video[index])
        path = self.paths[video]
        return _read_item(lambda: read_frames(path, self.clip_pts[index].tolist()), path, self.transform, self.labels[video])


def kinetics_all_clips(
    root: str | Path,
    split: str,
    *,
    frames: int,
    fps: float,
    crop: int,
    resize: int | None = None,
    workers: int = 0,
    progress: bool = True,
) -> KineticsAllClips:
    """Every non-overlapping clip of a ``split`` (:class:`KineticsAllClips`); ``workers`` processes read the timestamps."""
    listing = kinetics_videos(root, split)
    listing.log_omissions()
    timestamps = probe_timestamps(listing.paths, workers=workers, progress=progress)
    return KineticsAllClips(listing, timestamps, frames=frames, fps=fps, crop=crop, resize=resize)


# --------------------------------------------------------------------------------------------
# Layout checker
# --------------------------------------------------------------------------------------------


@dataclass
class LayoutReport:
    """What :func:`check_layout` found; ``str()`` is a readable report."""

    root: Path
    classes: list[str]
    videos: dict[str, dict[str, int]]  # split → class → number of videos on disk
    layout: str = "class folders"  # or "release"
    classes_from: str = ""  # where the class names (and so the label indices) come from
    probed: dict[str, int] = field(default_factory=dict)  # split → number of videos opened
    durations: dict[str, list[float]] = field(default_factory=dict)  # split → seconds of each readable probed video
    unreadable: list[Path] = field(default_factory=list)
    missing: list[Path] = field(default_factory=list)  # listed in the annotations, not on disk (release layout)
    unlisted: list[Path] = field(default_factory=list)  # videos on disk that the annotations do not list (release layout)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # links not followed and duplicates, with why
    ignored: list[Path] = field(default_factory=list)  # files that are not videos

    def __str__(self) -> str:
        def spread(values: Sequence[float], spec: str) -> str:
            return " / ".join(format(v, spec) for v in (min(values), statistics.median(values), max(values))) if values else "-"

        def in_split(paths: list[Path], split: str) -> int:
            return sum(1 for p in paths if p.relative_to(self.root).parts[0] == split)

        release = self.layout == "release"
        head = ("split", "classes", "videos", *(("missing",) if release else ()), "per class min/med/max", "probed",
                "unreadable", "seconds min/med/max")
        rows = []
        for split, per_class in self.videos.items():
            rows.append((
                split, len(per_class), sum(per_class.values()), *((in_split(self.missing, split),) if release else ()),
                spread(list(per_class.values()), "g"), self.probed.get(split, 0), in_split(self.unreadable, split),
                spread(self.durations.get(split, []), ".1f"),
            ))
        lines = [f"Kinetics {self.layout} layout at {self.root}: {len(self.classes)} classes, named by {self.classes_from}"]
        lines += ["  " + line for line in text_table(head, rows).splitlines()]
        lines.append(f"  frames larger than {MAX_DECODED_PIXELS:,} pixels (1920 × 1080) are shrunk while decoding")
        for title, items in (
            ("unreadable videos", self.unreadable),
            ("videos listed in the annotations but missing", self.missing),
            ("videos not in the annotations (not used)", self.unlisted),
            ("links not followed and duplicates (not used)", [f"{p}: {why}" for p, why in self.skipped]),
            ("ignored files (not videos)", self.ignored),
        ):
            if items:
                lines.append(f"{title}: {len(items)}")
                lines += [f"  {p}" for p in items[:10]] + (["  …"] if len(items) > 10 else [])
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


def _check_classes(names: dict[str, set[str]], what: str) -> None:
    """Every split's classes must be train's, and val must have them all: labels index the sorted train classes."""
    train = names.get("train")
    for split, found in names.items() if train is not None else ():
        extra, absent = sorted(found - train), sorted(train - found)
        if extra:
            raise LayoutError(f"{len(extra)} class(es) in {split} have no {what} in train: {', '.join(extra[:5])}; "
                              f"labels are indices into the sorted train classes, so every {split} class must be in train")
        if absent and split == "val":
            raise LayoutError(f"{len(absent)} class(es) in train have no {what} in val: {', '.join(absent[:5])}; "
                              "expected the same classes in train and val")


def _check_class_folders(root: Path, expected: str) -> tuple[LayoutReport, dict[str, list[Path]]]:
    splits = [s for s in SPLITS if (root / s).is_dir()]
    if not splits:
        found = sorted(p.name for p in root.iterdir())[:10]
        raise LayoutError(f"{root} has no split folders (found: {', '.join(found) or 'nothing'}); {expected}")
    missing = [s for s in ("train", "val") if s not in splits]
    if missing:
        raise LayoutError(f"{root} has no {' or '.join(missing)} folder; {expected}")
    found, seen, visited = _Found(), {}, {}  # shared by the splits: a video or folder counts once in the whole tree
    files: dict[str, list[Path]] = {}
    videos: dict[str, dict[str, int]] = {}
    for split in splits:
        folders = _class_folders(root / split, visited, found)
        counted = _count_once({name: _class_videos(*folder, found) for name, folder in folders.items()}, seen, found)
        empty = next((name for name, in_class in counted.items() if not in_class), None)
        if empty is not None:
            raise LayoutError(f"class folder {folders[empty][0]} has no videos; expected {'/'.join(VIDEO_EXTENSIONS)} files in it")
        videos[split] = {name: len(in_class) for name, in_class in counted.items()}
        files[split] = [path for in_class in counted.values() for path in in_class]
        if not files[split]:
            raise LayoutError(f"the {split} split at {root / split} is empty; expected one folder per class holding videos")
    _check_classes({split: set(per_class) for split, per_class in videos.items()}, "folder")
    report = LayoutReport(root, sorted(videos["train"]), videos, classes_from=f"the class folders of {root / 'train'}",
                          skipped=found.skipped, ignored=found.ignored)
    return report, files


def _check_release(root: Path) -> tuple[LayoutReport, dict[str, list[Path]]]:
    csvs = {split: root / ANNOTATIONS / f"{split}.csv" for split in SPLITS if (root / ANNOTATIONS / f"{split}.csv").is_file()}
    listed = {split: _read_annotations(path) for split, path in csvs.items()}
    _check_classes({split: set(rows.values()) for split, rows in listed.items()}, "videos listed")
    source = "train" if "train" in listed else next(iter(listed))
    report = LayoutReport(root, sorted(set(listed[source].values())), {}, layout="release", classes_from=str(csvs[source]))
    found, seen = _Found(), {}
    files: dict[str, list[Path]] = {}
    for split in SPLITS:
        on_disk = _release_files(root / split, seen, found)
        rows = listed.get(split, {})
        report.unlisted += [path for stem, path in on_disk.items() if stem not in rows]
        if split not in listed:
            continue
        files[split] = [on_disk[stem] for stem in rows if stem in on_disk]
        report.missing += [root / split / f"{stem}.mp4" for stem in rows if stem not in on_disk]
        report.videos[split] = dict.fromkeys(sorted(set(rows.values())), 0)
        for stem, label in rows.items():
            report.videos[split][label] += stem in on_disk
    report.skipped, report.ignored = found.skipped, found.ignored
    return report, files


def check_layout(root: str | Path, *, probe: int | None = 200) -> LayoutReport:
    """Validate a Kinetics folder and report on it; raises :class:`LayoutError` (a ValueError) for one it cannot read.

    Either layout of :func:`kinetics_videos`: class folders ``ROOT/{train,val[,test]}/<class>/<video>``, or
    the release ``ROOT/annotations/<split>.csv`` with flat ``ROOT/<split>/`` folders (chosen when one
    of those CSVs exists). Broken links, link loops, links back into a folder they are in, the
    same video reached twice, listed videos that are missing and videos the annotations do not list
    are reported, not raised. ``probe`` videos per split (evenly spread; ``None``: all) are opened with
    PyAV to find unreadable files and durations.
    """
    root = Path(root).expanduser()
    expected = (f"expected ROOT/train and ROOT/val (optionally ROOT/test), each with one folder per class holding "
                f"{'/'.join(VIDEO_EXTENSIONS)} videos, or the release layout ROOT/{ANNOTATIONS}/<split>.csv "
                f"with the videos in ROOT/<split>/")
    if not root.exists():
        raise LayoutError(f"{root} does not exist; {expected}")
    if not root.is_dir():
        raise LayoutError(f"{root} is not a folder; {expected}")
    release = any((root / ANNOTATIONS / f"{split}.csv").is_file() for split in SPLITS)
    report, files = _check_release(root) if release else _check_class_folders(root, expected)
    for split, paths in files.items():
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


def _speed_band(label: int, classes: int) -> tuple[float, float]:
    """Drift speed band of class ``label`` in frame widths per second: 4–5 % for class 0 up to 32–40 % for the last, geometric."""
    factor = 8 ** (label / max(classes - 1, 1))
    return 0.04 * factor, 0.05 * factor


def _synthetic_classes(classes: int) -> list[str]:
    """Names in index order: the speed band in % of the frame width per second, e.g. ``01_drift_8-10pct``."""
    width = max(2, len(str(classes - 1)))  # zero-padded so that sorted names keep index order
    bands = (_speed_band(k, classes) for k in range(classes))
    return [f"{k:0{width}d}_drift_{round(100 * lo)}-{round(100 * hi)}pct" for k, (lo, hi) in enumerate(bands)]


def synthetic_video(
    seed: int, split: str, label: int, index: int, *, classes: int, frames: int, size: int, fps: int
) -> np.ndarray:
    """One stand-in video, uint8 ``[frames, size, size, 3]``: a random smooth periodic texture drifting at a class speed.

    Class ``k`` drifts at a speed drawn from its band (:func:`_speed_band`: 4–5 % of the frame width per
    second for class 0, doubling per class for four classes, up to 32–40 %), in a uniformly random direction,
    from a random offset. Any single frame is a shifted random texture, so only the motion carries the
    class, and a flip or reversing time keeps it. Speed rather than heading: the 2+1-D filters of a MoViNet
    stream model are separable in space and time, so they see a temporal frequency, hence a speed, directly,
    and a direction only through combinations, which a short from-scratch run does not reach.
    """
    rng = np.random.default_rng((seed, SPLITS.index(split), label, index))
    heading = rng.uniform(0, 2 * math.pi)
    speed = rng.uniform(*_speed_band(label, classes)) * size / fps  # pixels per frame
    vx, vy = speed * math.cos(heading), speed * math.sin(heading)
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


# Parameters added after the first stand-ins were written, with the value those had.
_LATER_PARAMS = {"test_per_class": 0, "layout": "folders"}


def _complete_params(folder: Path) -> dict | None:
    marker = folder / SYNTHETIC_MARKER
    return _LATER_PARAMS | json.loads(marker.read_text())["params"] if marker.is_file() else None


def _release_row(split: str, k: int, index: int, label: str, seconds: int) -> tuple[str, str, int, int, str]:
    """The release-CSV row of the stand-in's video ``index`` of class ``k``, its id YouTube-like: 11 characters, one ``_``."""
    start = 10 * index
    return label, f"yt{SPLITS.index(split)}{k:03d}_{index:04d}", start, start + seconds, split


def write_synthetic(
    out: str | Path,
    *,
    classes: int = 4,
    train_per_class: int = 16,
    val_per_class: int = 4,
    test_per_class: int = 0,
    seed: int = 0,
    frames: int = 100,
    size: int = 64,
    fps: int = 10,
    layout: str = "folders",
    progress: bool = True,
) -> Path:
    """Write (or reuse) a synthetic stand-in (see :func:`synthetic_video`) in a Kinetics layout.

    ``layout="folders"``: ``OUT/{train,val[,test]}/<class>/<video>.mp4``; ``"release"``: the official
    release's ``OUT/annotations/<split>.csv`` (class names with spaces, e.g. ``"00 drift 4-5pct"``) and
    ``OUT/<split>/<youtube_id>_<time_start:06d>_<time_end:06d>.mp4``. Written into a temporary sibling
    folder, marked complete with ``synthetic.json`` and renamed into place, so an interrupted write
    never looks whole. The same seed gives the same bytes. The default 10 s at 10 fps covers the
    paper's A0–A2 clip (50 frames at 5 fps) like a Kinetics video.
    """
    if not (2 <= classes <= 1000 and 1 <= train_per_class <= 10_000 and 1 <= val_per_class <= 10_000
            and 0 <= test_per_class <= 10_000):
        raise ValueError(f"expected 2 to 1,000 classes, 1 to 10,000 train and val videos per class and 0 to 10,000 test "
                         f"videos per class, got {classes=}, {train_per_class=}, {val_per_class=}, {test_per_class=}")
    if not (2 <= frames <= 10_000 and 16 <= size <= 1024 and size % 2 == 0 and 1 <= fps <= 240):
        raise ValueError(f"expected 2 to 10,000 frames, an even size from 16 to 1024 and fps from 1 to 240, got {frames=}, "
                         f"{size=}, {fps=}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    out = Path(out).expanduser().absolute()
    params = dict(version=SYNTHETIC_VERSION, classes=classes, train_per_class=train_per_class, val_per_class=val_per_class,
                  test_per_class=test_per_class, seed=seed, frames=frames, size=size, fps=fps, layout=layout)
    names = _synthetic_classes(classes)
    per_class = {"train": train_per_class, "val": val_per_class, "test": test_per_class}
    videos = [(split, k, i) for split, n in per_class.items() for k in range(classes) for i in range(n)]
    if layout == "release":
        names = [name.replace("_", " ") for name in names]  # Kinetics class names have spaces
        rows = {(split, k, i): _release_row(split, k, i, names[k], math.ceil(frames / fps)) for split, k, i in videos}
        files = {video: Path(video[0], _release_stem(*row[1:4]) + ".mp4") for video, row in rows.items()}
        tables = {Path(ANNOTATIONS, f"{split}.csv"): [row for video, row in rows.items() if video[0] == split]
                  for split, n in per_class.items() if n}
    else:
        files = {(split, k, i): Path(split, names[k], f"{names[k]}_{i:04d}.mp4") for split, k, i in videos}
        tables = {}

    def reusable() -> bool:
        found = _complete_params(out)
        if found is None:
            # Without its marker a folder is rebuilt, but only if it holds nothing this call would not write.
            ours = {*files.values(), *tables}
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
            for path, table in tables.items():
                (partial / path).parent.mkdir(exist_ok=True)
                with open(partial / path, "w", newline="", encoding="utf-8") as file:
                    csv.writer(file).writerows([ANNOTATION_COLUMNS, *table])
            marker = {"about": "synthetic stand-in for Kinetics written by grw.data.kinetics.write_synthetic",
                      "params": params, "classes": names}
            (partial / SYNTHETIC_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
            if out.exists() and _complete_params(out) is None:
                shutil.rmtree(out)  # an unmarked leftover (checked above); a rename cannot replace a folder with entries
    except OSError:
        if not reusable():  # another process may have finished the same stand-in first
            raise
    return out
