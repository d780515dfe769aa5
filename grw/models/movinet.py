"""MoViNet A0–A5 (Kondratyuk et al., 2021), base and stream, as in the official TensorFlow model.

* **Base**: non-causal 3-D depthwise convolutions, Swish, squeeze-excite over the whole clip;
  ``model(video)`` classifies a clip ``[B, 3, T, H, W]`` in [0, 1].
* **Stream**: causal (2+1)-D depthwise convolutions, Hardswish, and a squeeze-excite that sees only
  the frames so far (per-frame mean ‖ causal cumulative mean, plus a position code in A3–A5).
  ``logits, state = model.step(chunk, state)`` feeds a clip in chunks of any length, from
  ``state=None``; whole clip, chunks and single frames give the same logits.

The stream state is explicit: a ``dict[str, Tensor]`` that ``step`` takes and returns (the last
``kt - 1`` frames before every temporal convolution, the running sums of the causal means and the
frame count). The modules hold none of it, so a stream model works under DDP, ``torch.compile`` and
``torch.export``.

Module names follow the public MoViNet-pytorch layout (``conv1``, ``blocks.b{i}_l{j}``, ``conv7``,
``classifier``), so :func:`load_movinet_pytorch_state_dict` is a renaming.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import StochasticDepth

from grw.models.positions import sinusoidal_positions

__all__ = [
    "CONFIGS",
    "MoViNet",
    "MoViNetConfig",
    "causal_cumulative_mean",
    "create_movinet",
    "load_movinet_pytorch_state_dict",
    "make_divisible",
]

MIN_SIZE = 32
"""Smallest frame height and width: the network downsamples by 32."""

STAGE_STRIDES = (2, 2, 2, 1, 2)
"""Spatial stride of the first layer of each stage (the stem adds another 2)."""

CLASSIFIER_HIDDEN = 2048


# --------------------------------------------------------------------------------------------
# Configurations (official BLOCK_SPECS)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MoViNetConfig:
    """One variant: stem width, per-stage ``(out channels, expand widths, kernels (kt, k))``, head width."""

    name: str
    stem: int
    stages: tuple[tuple[int, tuple[int, ...], tuple[tuple[int, int], ...]], ...]
    head: int


def _config(name: str, stem: int, head: int, *stages: tuple[int, str, str]) -> MoViNetConfig:
    """Stages written ``(out, "e e …", "kt,k kt,k …")``; ``"3,3x4"`` repeats a kernel four times."""

    def kernels(spec: str) -> tuple[tuple[int, int], ...]:
        out: list[tuple[int, int]] = []
        for token in spec.split():
            kernel, _, times = token.partition("x")
            kt, k = map(int, kernel.split(","))
            out += [(kt, k)] * int(times or 1)
        return tuple(out)

    parsed = tuple((out, tuple(map(int, e.split())), kernels(k)) for out, e, k in stages)
    for out, expands, ks in parsed:
        assert len(expands) == len(ks), f"{name}: stage {out} has {len(expands)} widths, {len(ks)} kernels"
    return MoViNetConfig(name, stem, parsed, head)


CONFIGS: dict[str, MoViNetConfig] = {
    c.name: c
    for c in (
        _config(
            "a0", 8, 480,
            (8, "24", "1,5"),
            (32, "80 80 80", "3,3x3"),
            (56, "184 112 184", "5,3 3,3x2"),
            (56, "184 184 184 184", "5,3 3,3x3"),
            (104, "384 280 280 344", "5,3 1,5x3"),
        ),
        _config(
            "a1", 16, 600,
            (16, "40 40", "1,5 3,3"),
            (40, "96 120 96 96", "3,3x4"),
            (64, "216 128 216 168 216", "5,3 3,3x4"),
            (64, "216 216 216 128 128 216", "5,3 3,3x3 1,5 3,3"),
            (136, "456 360 360 360 456 456 544", "5,3 1,5x4 3,3 1,3"),
        ),
        _config(
            "a2", 16, 640,
            (16, "40 40 64", "1,5 3,3x2"),
            (40, "96 120 96 96 120", "3,3x5"),
            (72, "240 160 240 192 240", "5,3 3,3x4"),
            (72, "240 240 240 240 144 240", "5,3 3,3x3 1,5 3,3"),
            (144, "480 384 384 480 480 480 576", "5,3 1,5x4 3,3 1,3"),
        ),
        _config(
            "a3", 16, 744,
            (16, "40 40 64 40", "1,5 3,3x3"),
            (48, "112 144 112 112 144 144", "3,3x3 1,5 3,3x2"),
            (80, "240 152 240 192 240", "5,3 3,3x4"),
            (88, "264 264 264 264 160 264 264 264", "5,3 3,3x3 1,5 3,3x3"),
            (168, "560 448 448 560 560 560 448 448 560 672", "5,3 1,5x4 3,3 1,5x2 3,3 1,3"),
        ),
        _config(
            "a4", 24, 856,
            (24, "64 64 96 64 96 64", "1,5 3,3x5"),
            (56, "168 168 136 136 168 168 168 136 136", "3,3x7 1,5 3,3"),
            (96, "320 160 320 192 320 160 320 256 320", "5,3 3,3x8"),
            (96, "320 320 320 320 192 320 320 192 320 320", "5,3 3,3x3 1,5 3,3x5"),
            (192, "640 512 512 640 640 640 512 512 640 768 640 640 768", "5,3 1,5x4 3,3 1,5x5 3,3x2"),
        ),
        _config(
            "a5", 24, 992,
            (24, "64 64 96 64 96 64", "1,5x2 3,3x4"),
            (64, "192 152 152 152 192 192 192 152 152 192 192", "5,3 3,3x10"),
            (112, "376 224 376 376 296 376 224 376 376 296 376 376 376", "5,3 3,3x12"),
            (120, "376 376 376 376 224 376 376 224 376 376 376", "5,3 3,3x3 1,5 3,3x6"),
            (
                224,
                "744 744 600 600 744 744 744 896 600 600 896 744 744 896 600 600 744 744",
                "5,3 3,3 1,5x4 3,3 1,5x5 3,3 1,5x4 3,3",
            ),
        ),
    )
}


def make_divisible(value: float, divisor: int = 8) -> int:
    """Nearest multiple of ``divisor`` (at least ``divisor``), one step up if rounding lost more than 10 %."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "same" padding ``(before, after)`` of one axis: output ``ceil(size / stride)``, any extra pixel after."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class KerasHardSigmoid(nn.Module):
    """``clamp(0.2 x + 0.5, 0, 1)``: the stream gate of the public PyTorch port and its checkpoints."""

    def forward(self, x: Tensor) -> Tensor:
        return (0.2 * x + 0.5).clamp(0.0, 1.0)


class ConvBNAct(nn.Module):
    """Conv3d → BatchNorm (optional) → activation (optional), ``[B, C, T, H, W]`` → ``[B, C', T, H', W']``.

    Spatial padding is TensorFlow "same" (asymmetric for stride 2) or, with ``tf_padding=False``,
    symmetric ``k // 2``; temporal padding is symmetric, or none for ``causal`` (the caller prepends
    the ``kt - 1`` frames before).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int, int] = (1, 1, 1),
        stride: int = 1,
        *,
        groups: int = 1,
        bias: bool = False,
        norm: bool = True,
        act: nn.Module | None = None,
        tf_padding: bool = True,
        causal: bool = False,
    ) -> None:
        super().__init__()
        kt, kh, kw = kernel
        self.tf_same = tf_padding and stride > 1  # with stride 1, "same" is symmetric for odd kernels
        spatial = (0, 0) if self.tf_same else (kh // 2, kw // 2)
        self.conv = nn.Conv3d(
            in_channels, out_channels, kernel, (1, stride, stride), (0 if causal else kt // 2, *spatial),
            groups=groups, bias=bias,
        )
        self.norm = nn.BatchNorm3d(out_channels, eps=1e-3, momentum=0.01) if norm else nn.Identity()
        self.act = act or nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        if self.tf_same:
            _, kh, kw = self.conv.kernel_size
            s = self.conv.stride[1]
            x = F.pad(x, (*same_padding(x.shape[-1], kw, s), *same_padding(x.shape[-2], kh, s)))
        return self.act(self.norm(self._conv(x)))

    def _conv(self, x: Tensor) -> Tensor:
        """The convolution; a depthwise one as the same 2-D convolution over a view of ``x``.

        On CPU, PyTorch's 3-D depthwise convolutions are several times slower than the 2-D ones.
        """
        conv, (kt, kh, kw) = self.conv, self.conv.kernel_size
        depthwise = conv.groups == conv.in_channels == conv.out_channels and conv.bias is None
        if depthwise and kh == kw == 1 and conv.stride[1] == 1:  # (kt, 1, 1): (kt, 1) over [B, C, T, H·W]
            y = F.conv2d(x.flatten(3), conv.weight.squeeze(4), None, 1, (conv.padding[0], 0), groups=conv.groups)
            return y.unflatten(3, x.shape[3:])
        if depthwise and kt == 1 and x.is_contiguous():  # (1, k, k): over [B, C·T, H, W], a group per channel·frame
            T = x.shape[2]
            weight = conv.weight.squeeze(2).repeat_interleave(T, 0)
            y = F.conv2d(x.flatten(1, 2), weight, None, conv.stride[1:], conv.padding[1:], groups=conv.groups * T)
            return y.unflatten(1, (-1, T))
        return conv(x)


class SkipPool(nn.Module):
    """AvgPool 1×3×3 with stride (1, 2, 2) over the real pixels only (padding excluded), "same" or symmetric."""

    def __init__(self, tf_padding: bool = True) -> None:
        super().__init__()
        self.tf_padding = tf_padding

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        pad = (*same_padding(w, 3, 2), *same_padding(h, 3, 2)) if self.tf_padding else (1, 1, 1, 1)
        ones = x.new_ones(1, 1, 1, h, w)
        sums, counts = (F.avg_pool3d(F.pad(t, pad), (1, 3, 3), (1, 2, 2), divisor_override=1) for t in (x, ones))
        return sums / counts


def causal_cumulative_mean(x: Tensor, carried: Tensor | None, frames: Tensor) -> tuple[Tensor, Tensor]:
    """Mean over frames ``<= t`` of ``x [B, C, T, 1, 1]``, counting ``frames`` earlier ones summing to ``carried``.

    Returns the means ``[B, C, T, 1, 1]`` and the new running sum ``[B, C, 1, 1, 1]``.
    """
    sums = x.cumsum(2)
    if carried is not None:
        sums = sums + carried
    counts = frames + torch.arange(1, x.shape[2] + 1, device=x.device)
    # A compact copy: the same strides whatever the chunk length, so compiled code is not re-specialised.
    return sums / counts.to(x.dtype).view(1, 1, -1, 1, 1), sums[:, :, -1:].contiguous()


class StreamState:
    """One ``step`` call's view of the stream state: reads the carried tensors and collects the new ones."""

    def __init__(self, carried: Mapping[str, Tensor] | None, reference: Tensor) -> None:
        self.carried = dict(carried or {})
        self.frames = self.carried.get("frames", torch.zeros((), dtype=torch.long, device=reference.device))
        self.new: dict[str, Tensor] = {}

    def _take(self, key: str, shape: tuple[int, ...]) -> Tensor | None:
        value = self.carried.get(key)
        if value is not None and tuple(value.shape) != shape:
            raise ValueError(
                f"stream state {key!r} has shape {tuple(value.shape)}, expected {shape} for this chunk "
                "(a state from another model, batch size or frame size?)"
            )
        return value

    def prepend(self, key: str, x: Tensor, frames: int) -> Tensor:
        """``[B, C, T, H, W]`` → ``[B, C, frames + T, H, W]`` with the carried last frames (zeros at the start)."""
        shape = (*x.shape[:2], frames, *x.shape[3:])
        before = self._take(key, shape)
        x = torch.cat([x.new_zeros(shape) if before is None else before, x], dim=2)
        self.new[key] = x[:, :, -frames:].contiguous()
        return x

    def cumulative_mean(self, key: str, x: Tensor) -> Tensor:
        """Causal cumulative mean ``[B, C, T, 1, 1]`` of ``x [B, C, T, 1, 1]`` over this clip so far."""
        means, self.new[key] = causal_cumulative_mean(x, self._take(key, (*x.shape[:2], 1, 1, 1)), self.frames)
        return means

    def finish(self, frames: int) -> dict[str, Tensor]:
        """The state after this call's ``frames`` frames."""
        return {**self.new, "frames": self.frames + frames}


class CausalFactorisedConv(nn.Module):
    """Depthwise (kt, k, k) as (1, k, k) → BN → act, then causal (kt, 1, 1) → BN → act (kt > 1 only)."""

    def __init__(self, channels: int, kernel: tuple[int, int], stride: int, act: type[nn.Module], tf_padding: bool, key: str) -> None:
        super().__init__()
        kt, k = kernel
        self.spatial = ConvBNAct(channels, channels, (1, k, k), stride, groups=channels, act=act(), tf_padding=tf_padding)
        self.temporal = (
            ConvBNAct(channels, channels, (kt, 1, 1), groups=channels, act=act(), causal=True) if kt > 1 else None
        )
        self.state_key = key if kt > 1 else None

    def forward(self, x: Tensor, stream: StreamState) -> Tensor:
        x = self.spatial(x)
        if self.temporal is None:
            return x
        kt = self.temporal.conv.kernel_size[0]
        return self.temporal(stream.prepend(self.state_key, x, kt - 1))


class SqueezeExcite(nn.Module):
    """Channel gate from a pooled summary: whole clip (base) or per frame ‖ causal cumulative mean (stream)."""

    def __init__(self, channels: int, *, stream: bool, positional_encoding: bool, key: str) -> None:
        super().__init__()
        act, gate = (nn.Hardswish, KerasHardSigmoid) if stream else (nn.SiLU, nn.Sigmoid)
        width = 2 * channels if stream else channels
        hidden = make_divisible(0.25 * width)
        self.fc1 = ConvBNAct(width, hidden, bias=True, norm=False, act=act())
        self.fc2 = ConvBNAct(hidden, channels, bias=True, norm=False, act=gate())
        self.pos_alpha = nn.Parameter(torch.zeros(())) if positional_encoding else None
        self.state_key = key if stream else None

    def forward(self, x: Tensor, stream: StreamState | None = None) -> Tensor:
        if stream is None:
            summary = x.mean(dim=(2, 3, 4), keepdim=True)  # [B, C, 1, 1, 1]
        else:
            space = x.mean(dim=(3, 4), keepdim=True)  # [B, C, T, 1, 1]
            summary = torch.cat([stream.cumulative_mean(self.state_key, space), space], dim=1)
            if self.pos_alpha is not None:
                positions = stream.frames + torch.arange(x.shape[2], device=x.device)
                code = sinusoidal_positions(positions, summary.shape[1]).to(x.dtype)
                summary = summary + self.pos_alpha * code.T[None, :, :, None, None]
        return x * self.fc2(self.fc1(summary))


class MoViNetBlock(nn.Module):
    """Inverted bottleneck: expand → depthwise → squeeze-excite → project, × ReZero, + skip."""

    def __init__(
        self,
        in_channels: int,
        expand: int,
        out_channels: int,
        kernel: tuple[int, int],
        stride: int,
        *,
        stream: bool,
        tf_padding: bool,
        positional_encoding: bool,
        drop_path: float,
        key: str,
    ) -> None:
        super().__init__()
        act = nn.Hardswish if stream else nn.SiLU
        kt, k = kernel
        self.expand = ConvBNAct(in_channels, expand, act=act())
        self.deep: nn.Module = (
            CausalFactorisedConv(expand, kernel, stride, act, tf_padding, f"{key}.deep")
            if stream
            else ConvBNAct(expand, expand, (kt, k, k), stride, groups=expand, act=act(), tf_padding=tf_padding)
        )
        self.se = SqueezeExcite(expand, stream=stream, positional_encoding=positional_encoding, key=f"{key}.se")
        self.project = ConvBNAct(expand, out_channels)
        self.alpha = nn.Parameter(torch.zeros(()))  # ReZero
        self.drop_path = StochasticDepth(drop_path, mode="row")
        if stride == 1 and in_channels == out_channels:
            self.res: nn.Module = nn.Identity()
        else:
            pool = [SkipPool(tf_padding)] if stride > 1 else []
            self.res = nn.Sequential(*pool, ConvBNAct(in_channels, out_channels))

    def forward(self, x: Tensor, stream: StreamState | None = None) -> Tensor:
        """``[B, C, T, H, W]`` → ``[B, C', T, H / stride, W / stride]``; ``stream`` for a stream model."""
        branch = self.expand(x)
        branch = self.deep(branch) if stream is None else self.deep(branch, stream)
        branch = self.project(self.se(branch, stream))
        return self.res(x) + self.drop_path(self.alpha * branch)


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


class MoViNet(nn.Module):
    """MoViNet backbone and classifier: ``video [B, 3, T, H, W]`` in [0, 1] → logits ``[B, classes]``.

    ``features(video)`` gives per-frame embeddings ``[B, T, num_features]`` (head conv, pooled over
    space); a stream model also has ``step(chunk, state) -> (logits, state)``.
    """

    def __init__(
        self,
        config: MoViNetConfig,
        *,
        stream: bool = False,
        num_classes: int = 600,
        tf_padding: bool = True,
        dropout: float = 0.2,
        stochastic_depth: float = 0.2,
        positional_encoding: bool = False,
    ) -> None:
        super().__init__()
        if positional_encoding and not stream:
            raise ValueError("positional encoding belongs to the stream squeeze-excite: use it with stream=True")
        self.config = config
        self.stream = stream
        self.num_features = config.head
        act = nn.Hardswish if stream else nn.SiLU
        self.conv1 = ConvBNAct(3, config.stem, (1, 3, 3), 2, act=act(), tf_padding=tf_padding)
        layers = sum(len(expands) for _, expands, _ in config.stages)
        blocks: dict[str, MoViNetBlock] = {}
        in_channels = config.stem
        for i, (out_channels, expands, kernels) in enumerate(config.stages):
            for j, (expand, kernel) in enumerate(zip(expands, kernels)):
                key = f"b{i}_l{j}"
                blocks[key] = MoViNetBlock(
                    in_channels, expand, out_channels, kernel, STAGE_STRIDES[i] if j == 0 else 1,
                    stream=stream, tf_padding=tf_padding, positional_encoding=positional_encoding,
                    drop_path=stochastic_depth * (len(blocks) + 1) / layers,  # linear in depth, as the official model
                    key=f"blocks.{key}",
                )
                in_channels = out_channels
        self.blocks = nn.ModuleDict(blocks)
        self.conv7 = ConvBNAct(in_channels, config.head, act=act())
        self.classifier = nn.Sequential(
            ConvBNAct(config.head, CLASSIFIER_HIDDEN, bias=True, norm=False),
            nn.SiLU(),  # Swish in stream models too, as the official model
            nn.Dropout(dropout),
            ConvBNAct(CLASSIFIER_HIDDEN, num_classes, bias=True, norm=False),
        )
        self.state_keys = frozenset(
            [m.state_key for m in self.modules() if getattr(m, "state_key", None)] + ["head", "frames"]
        ) if stream else frozenset()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official initialisation: truncated He-normal (fan-in) convs, N(0, 0.01) last layer, zero ReZero."""
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                fan_in = module.weight[0].numel()
                std = math.sqrt(2.0 / fan_in) / 0.87962566103423978  # Keras' correction for the ±2σ truncation
                nn.init.trunc_normal_(module.weight, 0.0, std, -2 * std, 2 * std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm3d):
                module.reset_parameters()
        last = self.classifier[-1].conv
        nn.init.normal_(last.weight, 0.0, 0.01)
        for name, param in self.named_parameters():
            if name.endswith("alpha"):
                nn.init.zeros_(param)

    # ---------------------------------------------------------------- checks

    @staticmethod
    def _check_video(video: Tensor) -> None:
        if not isinstance(video, Tensor) or video.ndim != 5 or video.shape[1] != 3:
            shape = tuple(video.shape) if isinstance(video, Tensor) else type(video).__name__
            raise ValueError(f"expected a video [B, 3, T, H, W] (RGB in [0, 1]), got {shape}")
        if not video.is_floating_point():
            raise ValueError(f"expected a floating-point video in [0, 1], got dtype {video.dtype}")
        if video.shape[2] < 1 or min(video.shape[-2:]) < MIN_SIZE:
            raise ValueError(
                f"expected at least 1 frame of at least {MIN_SIZE}×{MIN_SIZE} pixels, got {tuple(video.shape)}"
            )

    def _check_state(self, state: Mapping[str, Tensor], batch: int) -> None:
        if not isinstance(state, Mapping):
            raise ValueError(f"expected the state dict returned by a previous step(), got {type(state).__name__}")
        missing, unexpected = sorted(self.state_keys - state.keys()), sorted(state.keys() - self.state_keys)
        if missing or unexpected:
            raise ValueError(
                f"the state is not one of this {self.config.name} stream model (missing {missing[:4]}, "
                f"unexpected {unexpected[:4]}): pass the state returned by this model's step(), or None"
            )
        batches = {v.shape[0] for k, v in state.items() if k != "frames"}
        if batches != {batch}:
            raise ValueError(f"the state is for batch size {sorted(batches)}, the chunk has batch size {batch}")

    # ---------------------------------------------------------------- forward

    def _backbone(self, video: Tensor, stream: StreamState | None) -> Tensor:
        """``[B, 3, T, H, W]`` → head feature map ``[B, num_features, T, H / 32, W / 32]``."""
        x = self.conv1(video)
        for block in self.blocks.values():
            x = block(x, stream)
        return self.conv7(x)

    def features(self, video: Tensor) -> Tensor:
        """Per-frame embeddings ``[B, T, num_features]``: the head conv pooled over space (causal for stream)."""
        self._check_video(video)
        x = self._backbone(video, StreamState(None, video) if self.stream else None)
        return x.mean(dim=(3, 4)).transpose(1, 2)

    def forward(self, video: Tensor) -> Tensor:
        """Logits ``[B, classes]`` of a clip ``[B, 3, T, H, W]`` (stream: the causal prediction at its last frame)."""
        if self.stream:
            return self.step(video, None)[0]
        self._check_video(video)
        x = self._backbone(video, None).mean(dim=(2, 3, 4), keepdim=True)
        return self.classifier(x).flatten(1)

    def step(self, chunk: Tensor, state: Mapping[str, Tensor] | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Stream a chunk ``[B, 3, T, H, W]`` → (logits ``[B, classes]`` after its last frame, new state).

        Start a clip with ``state=None``; pass back the returned state for the next chunk.
        """
        if not self.stream:
            raise ValueError(
                f"step() streams a stream model, but this {self.config.name} model is a base (non-causal) one: "
                f"create it with create_movinet({self.config.name!r}, stream=True)"
            )
        self._check_video(chunk)
        if state is not None:
            self._check_state(state, chunk.shape[0])
        stream = StreamState(state, chunk)
        x = self._backbone(chunk, stream).mean(dim=(3, 4), keepdim=True)  # [B, C, T, 1, 1]
        pooled = stream.cumulative_mean("head", x)[:, :, -1:]
        return self.classifier(pooled).flatten(1), stream.finish(chunk.shape[2])


def create_movinet(
    name: str,
    *,
    stream: bool = False,
    num_classes: int = 600,
    tf_padding: bool = True,
    dropout: float | None = None,
    stochastic_depth: float = 0.2,
    positional_encoding: bool | None = None,
) -> MoViNet:
    """MoViNet ``a0`` … ``a5``, base or stream; ``dropout`` defaults to 0.2 (A0) or 0.5, positional encoding to stream A3–A5."""
    config = CONFIGS.get(name.lower()) if isinstance(name, str) else None
    if config is None:
        raise ValueError(f"unknown MoViNet {name!r}: expected one of {', '.join(CONFIGS)}")
    if dropout is None:
        dropout = 0.2 if config.name == "a0" else 0.5
    if positional_encoding is None:
        positional_encoding = stream and config.name in ("a3", "a4", "a5")
    return MoViNet(
        config, stream=stream, num_classes=num_classes, tf_padding=tf_padding, dropout=dropout,
        stochastic_depth=stochastic_depth, positional_encoding=positional_encoding,
    )


# --------------------------------------------------------------------------------------------
# Public PyTorch checkpoints
# --------------------------------------------------------------------------------------------


def _public_to_ours(key: str, stream: bool) -> str:
    if stream:  # the (2+1)-D halves of the depthwise conv
        key = re.sub(r"\.deep\.conv_1\.", ".deep.spatial.", key)
        key = re.sub(r"\.deep\.conv_2\.", ".deep.temporal.", key)
    key = key.replace(".conv_1.", ".")  # the wrapper around every conv unit
    return re.sub(r"\.conv[23]d\.", ".conv.", key)


def _fits(source: torch.Size, target: torch.Size) -> bool:
    """Same shape, or a 2-D conv kernel that is the 3-D one with a unit axis dropped."""
    if source == target:
        return True
    return len(source) + 1 == len(target) and any(
        target[i] == 1 and target[:i] + target[i + 1 :] == source for i in range(len(target))
    )


def load_movinet_pytorch_state_dict(model: MoViNet, state_dict: Mapping[str, Tensor]) -> None:
    """Load weights in the public MoViNet-pytorch key layout into ``model`` (strict: errors name every mismatch).

    The layout has no positional encoding; for a stream A3–A5 model its scalars are set to zero,
    which computes exactly the checkpoint's function.
    """
    ours = model.state_dict()
    renamed = {_public_to_ours(key, model.stream): (key, value) for key, value in state_dict.items()}
    unexpected = [key for new, (key, _) in renamed.items() if new not in ours]
    missing = [key for key in ours if key not in renamed and not key.endswith("pos_alpha")]
    mismatched = [
        f"{key} {tuple(value.shape)} (expected {tuple(ours[new].shape)})"
        for new, (key, value) in renamed.items()
        if new in ours and not _fits(value.shape, ours[new].shape)
    ]
    if missing or unexpected or mismatched:
        kind = "stream" if model.stream else "base"
        saved = "stream" if any(".conv2d." in key for key in state_dict) else "base"  # the port's stream convs are 2-D
        hint = "a checkpoint of another variant?" if saved == kind else f"it is a {saved} checkpoint"
        raise ValueError(
            f"the state dict does not fit MoViNet-{model.config.name.upper()} {kind} "
            f"({len(missing)} missing, {len(unexpected)} unexpected, {len(mismatched)} mismatched keys; {hint})\n"
            f"  missing (this model's names): {missing[:8]}\n  unexpected: {unexpected[:8]}\n  mismatched: {mismatched[:8]}"
        )
    converted = {new: value.reshape(ours[new].shape) for new, (_, value) in renamed.items()}
    converted |= {key: torch.zeros_like(ours[key]) for key in ours if key.endswith("pos_alpha")}
    model.load_state_dict(converted)
