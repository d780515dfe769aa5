"""Plug-and-play intermediate-layer smoothing: tap any named layers of any model with forward hooks.

Each tapped output is pooled over space, normalised per channel with batch statistics
(BatchNorm without affine parameters) and collected as per-frame embeddings ``Z [B, N, C]``::

    taps = GRWTaps(model, {"layer2": 1.0, "layer3": 0.5}, T=4)
    logits = model(video)
    loss = F.cross_entropy(logits, labels) + lam * taps.loss()

The hooks keep the autograd graph (nothing is detached), hold no parameters or buffers (so wrapping the
model in DDP afterwards needs nothing more), and are removed with :meth:`GRWTaps.remove` or ``with``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from grw.loss import GRWLoss

__all__ = ["GRWTaps", "frame_embeddings"]


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
        modules = dict(model.named_modules())
        missing = [name for name in weights if name not in modules]
        if missing:
            known = ", ".join(name for name in modules if name)[:400]
            raise ValueError(f"no layer named {missing} in the model; its layers are: {known} …")
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
