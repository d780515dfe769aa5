"""Plug-and-play intermediate-layer smoothing: tap any named layers of any model with forward hooks.

Each tapped output is pooled over space, normalised per channel with batch statistics
(BatchNorm without affine parameters) and collected as per-frame embeddings ``Z [B, N, C]``::

    taps = GRWTaps(model, {"layer2": 1.0, "layer3": 0.5}, T=4)
    logits = model(video)
    loss = F.cross_entropy(logits, labels) + lam * taps.loss()

The hooks keep the autograd graph (nothing is detached), hold no parameters or buffers (so wrapping the
model in DDP afterwards needs nothing more), and are removed with :meth:`GRWTaps.remove` or ``with``.

:class:`TappedClassifier` puts such a model, its code unchanged, through the engine (:func:`grw.train.fit`):
it returns ``ClassifierOutput(logits, Z)`` with ``Z`` one tapped layer's per-frame embeddings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from grw.contracts import ClassifierOutput
from grw.loss import GRWLoss

__all__ = ["GRWTaps", "TappedClassifier", "frame_embeddings"]


def frame_embeddings(features: Tensor, frames: int | None = None) -> Tensor:
    """Per-frame embeddings ``[B, N, C]`` from a feature map ``[B, C, N, H, W]`` or ``[B·N, C, H, W]`` (give ``frames=N``).

    Global average pool over space, then per-channel normalisation with the statistics of the batch
    (``BatchNorm1d(C, affine=False)`` in training mode), so the loss sees no learnable scale.
    """
    if features.ndim == 5:
        pooled = features.mean(dim=(3, 4))  # [B, C, N]
    elif features.ndim == 4:
        if frames is None or features.shape[0] % frames:
            raise ValueError(
                f"a per-frame feature map [B·N, C, H, W] of shape {tuple(features.shape)} needs frames=N dividing {features.shape[0]}"
            )
        pooled = features.mean(dim=(2, 3)).unflatten(0, (-1, frames)).transpose(1, 2)  # [B, C, N]
    else:
        raise ValueError(f"expected a video feature map [B, C, N, H, W] or [B·N, C, H, W], got {tuple(features.shape)}")
    # Batch statistics always: no running buffers to keep in sync across processes.
    normalised = F.batch_norm(pooled.float(), None, None, training=True, eps=1e-5)
    return normalised.transpose(1, 2)  # [B, N, C]


def _named_layers(model: nn.Module, names: Sequence[str] | Mapping[str, float]) -> dict[str, nn.Module]:
    """``model.named_modules()`` as a dict, once every name in ``names`` is one of them (else a clear error)."""
    modules = dict(model.named_modules())
    missing = [name for name in names if name not in modules]
    if missing:
        known = ", ".join(name for name in modules if name)[:400]
        raise ValueError(f"no layer named {missing} in the model; its layers are: {known} …")
    return modules


class GRWTaps:
    """Forward hooks on named layers that collect ``Z`` and give the weighted sum of their GRW losses.

    ``layers`` names submodules (as in ``model.named_modules()``), either as a list (weight 1 each) or a
    mapping name → weight. ``frames`` is needed for layers whose output is per-frame ``[B·N, C, H, W]``.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str] | Mapping[str, float],
        *,
        T: int,
        alpha: float = 0.5,
        max_perms: int = 1000,
        frames: int | None = None,
    ) -> None:
        weights = dict(layers) if isinstance(layers, Mapping) else {name: 1.0 for name in layers}
        if not weights:
            raise ValueError("give at least one layer name to tap")
        modules = _named_layers(model, weights)
        self.weights = weights
        self.frames = frames
        self.loss_fn = GRWLoss(T, alpha, max_perms)
        self.embeddings: dict[str, Tensor] = {}
        self._handles: list[RemovableHandle] = [
            modules[name].register_forward_hook(self._hook(name)) for name in weights
        ]

    def _hook(self, name: str):  # noqa: ANN202 - a hook closure
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            self.embeddings[name] = frame_embeddings(output, self.frames)

        return hook

    def loss(self) -> Tensor:
        """Weighted sum over the tapped layers of the GRW loss of the last forward; clears what it used."""
        if not self.embeddings:
            raise RuntimeError("no embeddings collected: run a forward pass of the model first")
        Z = next(iter(self.embeddings.values()))
        self.loss_fn.to(Z.device)
        total = sum(self.weights[name] * self.loss_fn(Z) for name, Z in self.embeddings.items())
        self.embeddings.clear()
        return total  # type: ignore[return-value]

    def remove(self) -> None:
        """Remove the hooks; the model is as it was before."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.embeddings.clear()

    def __enter__(self) -> GRWTaps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


class TappedClassifier(nn.Module):
    """A model ``video [B, C, N, H, W] → logits`` as the engine's :class:`~grw.contracts.VideoClassifier`, its code unchanged.

    ``forward`` returns ``ClassifierOutput(logits [B, classes], Z [B, N', C'])`` with ``Z`` the per-frame embeddings of
    the named ``layer`` (:func:`frame_embeddings` of its output on the layer's last call; a per-frame output
    ``[B·N, C', H, W]`` takes N from the video). The model may return the logits or a tuple whose first item is the
    logits. ``parameter_groups()`` puts the parameters of the submodule named ``backbone`` in ``"backbone"`` (their own
    learning rate in :class:`grw.train.TrainConfig`) and every other parameter in ``"head"``.
    """

    def __init__(self, model: nn.Module, layer: str, *, num_classes: int, backbone: str) -> None:
        super().__init__()
        modules = _named_layers(model, [layer, backbone])
        self.model, self.layer, self.backbone, self.num_classes = model, layer, backbone, num_classes
        self._frames: int | None = None
        self._embeddings: Tensor | None = None
        # a bound method: a deep copy of this wrapper (an EMA of the weights) hooks its own copy of the layer
        modules[layer].register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, inputs: Any, output: Any) -> None:
        self._embeddings = frame_embeddings(output, self._frames)

    def forward(self, video: Tensor) -> ClassifierOutput:
        if video.ndim != 5:
            raise ValueError(f"expected a video batch [B, C, N, H, W], got {tuple(video.shape)}")
        self._frames, self._embeddings = video.shape[2], None
        output = self.model(video)
        Z, self._embeddings = self._embeddings, None
        if Z is None:
            raise RuntimeError(f"the layer {self.layer!r} did not run in the model's forward pass")
        return ClassifierOutput(output[0] if isinstance(output, tuple) else output, Z)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        backbone = [p for p in self.model.get_submodule(self.backbone).parameters() if p.requires_grad]
        inside = {id(p) for p in backbone}
        return {"backbone": backbone,
                "head": [p for p in self.model.parameters() if p.requires_grad and id(p) not in inside]}
