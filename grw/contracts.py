"""What data, models and the training engine promise each other, written once and checked at start.

* A **video** is ``[B, C, T, H, W]`` (torchvision, pytorchvideo and MoViNet's layout); one item of a
  dataset is ``[C, T, H, W]``.
* A **clip dataset** is map-style, names its ``classes`` and gives ``(video [C, T, H, W], label)``
  items, or ``None`` for a sample it cannot read (the engine drops and counts those). If it has
  ``set_epoch(epoch)``, the engine calls it before every epoch (per-epoch augmentation).
* A **video classifier** maps ``video [B, C, T, H, W]`` to :class:`ClassifierOutput`
  ``(logits [B, num_classes], Z [B, N, K])``, says how many classes it has, and which of its
  parameters are backbone and which head (they get their own learning rates).
* A **regularizer** is a callable on ``Z [B, N, K]`` giving a scalar (a :class:`grw.GRWLoss`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol, runtime_checkable

from torch import Tensor, nn

__all__ = [
    "ClassifierOutput",
    "ClipDataset",
    "EpochAware",
    "Item",
    "Regularizer",
    "VideoClassifier",
    "check_dataset",
    "check_model",
    "check_output",
]

Item = tuple[Tensor, int]
"""One sample: ``(video [C, T, H, W] float, label)``."""

Regularizer = Callable[[Tensor], Tensor]
"""A loss on the per-frame embeddings ``Z [B, N, K]`` → scalar."""


class ClassifierOutput(NamedTuple):
    """What a video classifier returns: ``logits [B, classes]`` and the embeddings ``Z [B, N, K]`` to smooth."""

    logits: Tensor
    embeddings: Tensor


@runtime_checkable
class ClipDataset(Protocol):
    """A map-style dataset of ``(video [C, T, H, W], label)`` items (``None`` for an unreadable sample)."""

    classes: Sequence[str]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Item | None: ...


@runtime_checkable
class EpochAware(Protocol):
    """A dataset whose samples depend on the epoch (random windows, augmentation)."""

    def set_epoch(self, epoch: int) -> None: ...


@runtime_checkable
class VideoClassifier(Protocol):
    """``video [B, C, T, H, W]`` → :class:`ClassifierOutput`; ``parameter_groups()`` → ``{"backbone": [...], "head": [...]}``."""

    num_classes: int

    def __call__(self, video: Tensor) -> ClassifierOutput: ...

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]: ...


def check_dataset(data: object, role: str) -> Item | None:
    """``data[0]`` (``None`` if unreadable) once ``data`` is a :class:`ClipDataset` whose first item fits, else an error saying what is expected."""
    if not isinstance(data, ClipDataset):
        missing = [name for name in ("classes", "__len__", "__getitem__") if not hasattr(data, name)]
        raise TypeError(f"the {role} data must be a map-style dataset with `classes`, `__len__` and `__getitem__` "
                        f"giving (video [C, T, H, W], label); {type(data).__name__} lacks {', '.join(missing)}")
    if len(data) == 0:
        raise ValueError(f"the {role} data is empty")
    item = data[0]
    if item is None:
        return None  # unreadable: the engine counts it; the next readable one is checked by the model's first step
    if not (isinstance(item, tuple) and len(item) == 2):
        raise TypeError(f"a {role} item must be (video [C, T, H, W], label), got {type(item).__name__} of length "
                        f"{len(item) if isinstance(item, Sequence) else '?'}")
    video, label = item
    if not isinstance(video, Tensor) or video.ndim != 4 or not video.is_floating_point():
        shape = f"{video.dtype} {tuple(video.shape)}" if isinstance(video, Tensor) else type(video).__name__
        raise ValueError(f"a {role} video must be a float tensor [C, T, H, W] (channels first, then time), got {shape}")
    if not 0 <= int(label) < len(data.classes):
        raise ValueError(f"a {role} label must index the {len(data.classes)} classes, got {label}")
    return video, int(label)


def check_model(model: object, classes: Sequence[str]) -> None:
    """Raise an error saying what is expected unless ``model`` is a :class:`VideoClassifier` for ``classes``."""
    if not isinstance(model, nn.Module) or not isinstance(model, VideoClassifier):
        raise TypeError(f"the model must be an nn.Module with `num_classes` and `parameter_groups()` (backbone and head) "
                        f"returning ClassifierOutput(logits, Z) (see grw.contracts.VideoClassifier); got {type(model).__name__}")
    groups = model.parameter_groups()
    if set(groups) != {"backbone", "head"}:
        raise ValueError(f"parameter_groups() must name 'backbone' and 'head', got {sorted(groups)}")
    grouped = [id(p) for ps in groups.values() for p in ps]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    if len(grouped) != len(set(grouped)) or set(grouped) != trainable:
        raise ValueError("parameter_groups() must list every trainable parameter exactly once, in backbone or head")
    if model.num_classes != len(classes):
        raise ValueError(f"the model classifies {model.num_classes} classes but the data has {len(classes)}: "
                         "build the model (or pick the checkpoint) for this dataset's classes")


def check_output(output: object, batch: int, num_classes: int) -> ClassifierOutput:
    """``output`` itself if it is ``ClassifierOutput(logits [batch, classes], Z [batch, N, K])``, else a clear error."""
    if not isinstance(output, tuple) or len(output) != 2:
        raise TypeError(f"the model must return ClassifierOutput(logits, Z), got {type(output).__name__}")
    logits, Z = output
    if logits.shape != (batch, num_classes) or Z.ndim != 3 or Z.shape[0] != batch:
        raise ValueError(f"expected logits [{batch}, {num_classes}] and Z [{batch}, N, K], "
                         f"got {tuple(logits.shape)} and {tuple(Z.shape)}")
    return ClassifierOutput(logits, Z)
