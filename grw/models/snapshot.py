"""The GRW authors' released models: their snapshot files read into a :class:`GRWVideoClassifier`.

A snapshot (``ActionRecognitionModel.save`` of their ``grw_smoothing_models`` package, version 10) is a
``torch.save`` dict: ``model_state``, ``ema_weights`` (an ``AveragedModel`` state dict: ``module.*`` keys
and ``n_averaged``), ``num_samples``, ``transformer_params`` (a pickled ``TransformerParams``),
``backbone`` (a pickled reference to a ``MovinetBackbone`` class whose module path names ``a0s``,
``a1s``, ``a2s`` or ``a3b``), ``T`` and ``version``.

It is read by torch's weights-only unpickler, which builds tensors and containers only; the two
class names, matched by name, are let in as inert stand-ins. A file that names anything else is
refused before any of it is unpickled, so neither their package nor trust in the file is needed.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.serialization import get_unsafe_globals_in_checkpoint, safe_globals

from grw.models.heads import GRWVideoClassifier, TemporalTransformerHead
from grw.models.movinet import CONFIGS, create_movinet, load_movinet_pytorch_state_dict

__all__ = ["GRWSnapshot", "HeadParams", "load_grw_snapshot", "read_grw_snapshot"]

VERSION = 10
VARIANTS = ("a0s", "a1s", "a2s", "a3b")
"""MoViNet ``a0`` … ``a3``, then ``s`` (stream, causal) or ``b`` (base)."""

_HEAD_PARAMS = re.compile(r"(?:\w+\.)*attention\.TransformerParams")
_BACKBONE = re.compile(  # e.g. grw_smoothing_models.backbones.movinets.a0s.a0s_backbone.MovinetBackbone
    r"(?:\w+\.)*backbones\.movinets\.(?P<variant>" + "|".join(VARIANTS) + r")(?:_\w+)?\.(?:\w+\.)*MovinetBackbone"
)
_TRUNK = "video_backbone._encoder."  # the MoViNet-pytorch layout; its `classifier` is the per-frame linear giving Z
_AUTHORS_NAMES = (  # this package's names → theirs, outside the MoViNet trunk
    (r"embed\.", _TRUNK + "classifier."),
    (r"norm\.", "ln."),
    (r"head\.blocks\.(\d+)\.attn_norm\.", r"attention.transformer.layers.\1.0."),
    (r"head\.blocks\.(\d+)\.attn\.", r"attention.transformer.layers.\1.1."),
    (r"head\.blocks\.(\d+)\.mlp\.", r"attention.transformer.layers.\1.2.net."),
    (r"head\.norm\.", "attention.transformer.norm."),
    (r"head\.classifier\.", "attention.linear_head."),
)


class _TransformerParamsStandIn:
    """Stands in for their ``TransformerParams`` while unpickling: keeps the pickled state, runs nothing."""

    state: object = None

    def __setstate__(self, state: object) -> None:
        self.state = state


class _BackboneStandIn:
    """Stands in for their ``MovinetBackbone`` class; ``variant`` is read off its module path."""

    variant: str


def _stand_in(name: str, source: str) -> tuple[type, str]:
    if _HEAD_PARAMS.fullmatch(name):
        return _TransformerParamsStandIn, name
    if match := _BACKBONE.fullmatch(name):
        return type("MovinetBackbone", (_BackboneStandIn,), {"variant": match["variant"]}), name
    raise ValueError(
        f"refusing {source}: it refers to {name!r}, which a GRW snapshot does not contain (only tensors, containers, "
        "'…attention.TransformerParams' and '…backbones.movinets.<a0s|a1s|a2s|a3b>…MovinetBackbone'); nothing in it was run"
    )


@dataclass(frozen=True)
class HeadParams:
    """Their ``TransformerParams``: the width ``K`` of Z and the temporal head's shape."""

    embed_dim: int
    depth: int
    num_heads: int
    mlp_dim: int
    num_classes: int


HEAD_LIMITS = {"embed_dim": 8192, "depth": 24, "num_heads": 64, "mlp_dim": 65_536, "num_classes": 100_000}
"""The largest head a snapshot may ask for: a crafted file cannot size an allocation (the released heads: K = 256, one
block, 4 heads, MLP 512, 600 classes)."""


@dataclass(frozen=True)
class GRWSnapshot:
    """A snapshot's contents: the ``variant`` (``"a0s"`` …), ``head``, GRW window ``T``, ``num_samples`` trained
    on, and the state dicts in their layout (``ema_state`` without the ``module.`` prefix, None if absent)."""

    source: str
    variant: str
    head: HeadParams
    T: int
    num_samples: int
    model_state: Mapping[str, Tensor]
    ema_state: Mapping[str, Tensor] | None

    def to_classifier(self, *, ema: bool = False) -> GRWVideoClassifier:
        """The model with the raw (or EMA) weights, in eval mode, on the device the tensors were loaded to.

        ``model(video [B, 3, N, H, W])`` gives their logits ``[B, classes]`` and Z ``[B, N, K]`` (before the LayerNorm).
        """
        if ema and self.ema_state is None:
            raise ValueError(f"{self.source} holds no EMA weights (its ema_weights is None): load the raw ones")
        state = self.ema_state if ema else self.model_state
        movinet = create_movinet(self.variant[:2], stream=self.variant.endswith("s"), stochastic_depth=0.0)
        movinet.classifier = nn.Identity()  # Z comes from the per-frame linear
        p = self.head
        head = TemporalTransformerHead(p.embed_dim, p.num_classes, depth=p.depth, num_heads=p.num_heads, mlp_dim=p.mlp_dim)
        model = GRWVideoClassifier(movinet, p.embed_dim, head)

        ours = {key: value for key, value in model.state_dict().items() if not key.startswith("backbone.")}
        theirs = {_authors_name(key): key for key in ours}
        missing = [key for key in theirs if key not in state]
        unexpected = [key for key in state if key not in theirs and not key.startswith(_TRUNK)]
        mismatched = [
            f"{key} {tuple(state[key].shape)} (expected {tuple(ours[new].shape)})"
            for key, new in theirs.items()
            if key in state and state[key].shape != ours[new].shape
        ]
        if missing or unexpected or mismatched:
            raise ValueError(
                f"the {'EMA' if ema else 'raw'} weights of {self.source} do not fit the {self.variant} GRW model with {p}:\n"
                f"  missing: {missing[:8]}\n  unexpected: {unexpected[:8]}\n  mismatched: {mismatched[:8]}"
            )
        trunk = {k.removeprefix(_TRUNK): v for k, v in state.items() if k.startswith(_TRUNK) and k not in theirs}
        try:
            load_movinet_pytorch_state_dict(movinet, trunk)
        except ValueError as error:
            raise ValueError(f"the MoViNet weights ({_TRUNK}*) of {self.source}: {error}") from None
        model.load_state_dict({new: state[key] for key, new in theirs.items()}, strict=False)
        return model.to(state[_TRUNK + "classifier.weight"].device).eval()


def _authors_name(key: str) -> str:
    for pattern, replacement in _AUTHORS_NAMES:
        renamed, found = re.subn(f"^{pattern}", replacement, key)
        if found:
            return renamed
    raise AssertionError(f"no name in the authors' layout for {key}")


def _weights_variant(state: Mapping[str, Tensor]) -> str | None:
    """The variant the shapes of a state dict in their layout belong to (None without the per-frame linear)."""
    linear = state.get(_TRUNK + "classifier.weight")
    if not isinstance(linear, Tensor) or linear.ndim != 2:
        return None
    width = linear.shape[1]
    names = [name for name, config in CONFIGS.items() if config.head == width]
    stream = any(key.startswith(_TRUNK) and ".conv2d." in key for key in state)  # the port's stream convs are 2-D
    return f"{names[0]}{'s' if stream else 'b'}" if names else f"a MoViNet with {width} features per frame"


def _state_dict(value: object, what: str, source: str) -> dict[str, Tensor]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in value.items()):
        raise ValueError(f"{source}: {what} is not a state dict (names → tensors) but {type(value).__name__}")
    return dict(value)


def read_grw_snapshot(path: str | Path, *, map_location: str | torch.device = "cpu") -> GRWSnapshot:
    """Read and check a snapshot of the authors' format, without their package and without running any of it."""
    source = str(path)
    try:
        classes = get_unsafe_globals_in_checkpoint(path)  # reads the pickle's opcodes, runs none
    except ValueError as error:
        raise ValueError(f"{source} is not a GRW snapshot: {error}") from None
    stand_ins = [_stand_in(name, source) for name in sorted(classes)]
    try:
        with safe_globals(stand_ins):
            raw = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(f"refusing {source}: {str(error).rpartition('WeightsUnpickler error: ')[2]}") from None

    required = ("model_state", "ema_weights", "num_samples", "transformer_params", "backbone", "T", "version")
    if not isinstance(raw, dict) or any(key not in raw for key in required):
        found = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise ValueError(f"{source} is not a GRW snapshot: expected a dict with {', '.join(required)}, got {found}")
    if raw["version"] != VERSION:
        raise ValueError(f"{source} is a version {raw['version']!r} snapshot; only version {VERSION} is read")
    backbone = raw["backbone"]
    if not (isinstance(backbone, type) and issubclass(backbone, _BackboneStandIn)):
        raise ValueError(f"{source}: 'backbone' should name their MovinetBackbone of {', '.join(VARIANTS)}, got {backbone!r}")
    params = raw["transformer_params"].state if isinstance(raw["transformer_params"], _TransformerParamsStandIn) else None
    head_fields = {field.name for field in fields(HeadParams)}
    if not (isinstance(params, dict) and params.keys() == head_fields and all(type(v) is int and v > 0 for v in params.values())):
        expected = ", ".join(sorted(head_fields))
        raise ValueError(f"{source}: 'transformer_params' should hold the positive integers {expected}, got {params!r}")
    too_large = {name: value for name, value in params.items() if value > HEAD_LIMITS[name]}
    if too_large or params["embed_dim"] % params["num_heads"]:
        raise ValueError(f"{source}: 'transformer_params' {params!r} is not a head this reader builds: each at most "
                         f"{HEAD_LIMITS} and num_heads dividing embed_dim (refused before any allocation)")
    if type(raw["T"]) is not int or type(raw["num_samples"]) is not int:
        raise ValueError(f"{source}: 'T' and 'num_samples' should be integers, got {raw['T']!r} and {raw['num_samples']!r}")

    model_state = _state_dict(raw["model_state"], "model_state", source)
    ema_state = None
    if raw["ema_weights"] is not None:
        averaged = _state_dict(raw["ema_weights"], "ema_weights", source)
        averaged.pop("n_averaged", None)
        outside = [key for key in averaged if not key.startswith("module.")]
        if outside:
            raise ValueError(f"{source}: ema_weights should be an AveragedModel state dict (module.* keys), got {outside[:4]}")
        ema_state = {key.removeprefix("module."): value for key, value in averaged.items()}

    for what, state in (("model_state", model_state), ("ema_weights", ema_state or {})):
        found = _weights_variant(state)
        if found is not None and found != backbone.variant:
            raise ValueError(f"{source} names MoViNet {backbone.variant}, but the weights in its {what} are those of {found}")
    return GRWSnapshot(source, backbone.variant, HeadParams(**params), raw["T"], raw["num_samples"], model_state, ema_state)


def load_grw_snapshot(path: str | Path, *, ema: bool = False, map_location: str | torch.device = "cpu") -> GRWVideoClassifier:
    """A released GRW model from the authors' snapshot file, with its raw (or ``ema``) weights, in eval mode.

    ``model(video [B, 3, N, H, W])`` → ``(logits [B, classes], Z [B, N, K])``, Z before the LayerNorm: what
    their code computes from ``[B, N, 3, H, W]``. :func:`read_grw_snapshot` also gives ``T`` and ``num_samples``.
    """
    return read_grw_snapshot(path, map_location=map_location).to_classifier(ema=ema)
