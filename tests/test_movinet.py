"""MoViNet A0–A5: architecture counts, cross-implementation fixtures, streaming equivalence, checks, export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from grw.metrics import gmacs
from grw.models import GRWVideoClassifier
from grw.models.movinet import (
    CONFIGS,
    ConvBNAct,
    MoViNet,
    SkipPool,
    create_movinet,
    load_movinet_pytorch_state_dict,
    make_divisible,
    same_padding,
)
from grw.taps import GRWTaps

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "movinet"
needs_fixtures = pytest.mark.skipif(
    not FIXTURES.is_dir(), reason=f"MoViNet cross-implementation fixtures not found at {FIXTURES}"
)

BASE_PARAMS = {"a0": 3_111_799, "a1": 4_690_296, "a2": 5_249_562, "a3": 7_397_545, "a4": 11_349_463, "a5": 18_650_523}
STREAM_PARAMS = {"a0": 3_748_031, "a1": 6_447_352, "a2": 7_326_962, "a3": 10_986_585, "a4": 18_136_135, "a5": 31_495_875}
# Published multiply-accumulates (G) of the base models at their evaluation input (frames, size).
PUBLISHED_GMACS = {"a0": (2.65, 50, 172), "a1": (5.90, 50, 172), "a2": (11.6, 50, 224), "a3": (55.9, 120, 256)}


def _meta_model(name: str, **kwargs: object) -> MoViNet:
    with torch.device("meta"):
        return create_movinet(name, **kwargs)


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _randomise(model: MoViNet, seed: int = 0) -> MoViNet:
    """Random BN statistics and affines, ReZero and position scalars, so that every branch matters; eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm3d):
                n = module.num_features
                module.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                module.running_var.copy_(0.5 + torch.rand(n, generator=g))
                module.weight.copy_(0.7 + 0.6 * torch.rand(n, generator=g))
                module.bias.copy_(0.1 * torch.randn(n, generator=g))
        for name, param in model.named_parameters():
            if name.endswith("alpha"):
                param.copy_(0.2 + 0.3 * torch.rand((), generator=g))  # keeps the untrained net's scale O(1)
    return model.eval()


def _video(B: int = 2, T: int = 8, size: int = 64, seed: int = 0) -> Tensor:
    return torch.rand(B, 3, T, size, size, generator=torch.Generator().manual_seed(seed))


def _stream_in_chunks(model: MoViNet, video: Tensor, lengths: list[int]) -> Tensor:
    """Logits ``[len(lengths), B, classes]`` after each chunk, the state carried between calls."""
    state, logits, start = None, [], 0
    for n in lengths:
        out, state = model.step(video[:, :, start : start + n], state)
        logits.append(out)
        start += n
    return torch.stack(logits)


# --------------------------------------------------------------------------------------------
# Architecture: parameters and multiply-accumulates
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CONFIGS))
def test_parameter_counts_match_the_official_models(name: str) -> None:
    assert _count(_meta_model(name)) == BASE_PARAMS[name]
    assert _count(_meta_model(name, stream=True, positional_encoding=False)) == STREAM_PARAMS[name]
    # Default stream A3–A5 add one position scalar per block.
    stream = _meta_model(name, stream=True)
    extra = len(stream.blocks) if name in ("a3", "a4", "a5") else 0
    assert _count(stream) == STREAM_PARAMS[name] + extra


def test_a0_layout_and_widths() -> None:
    model = _meta_model("a0")
    assert len(model.blocks) == 15 and model.num_features == 480
    assert model.blocks.b2_l1.se.fc1.conv.out_channels == 32  # make_divisible(0.25 · 112)
    assert _meta_model("a0", stream=True).blocks.b4_l3.se.fc1.conv.out_channels == 176  # 0.25 · 2 · 344
    assert [make_divisible(v) for v in (6, 12, 28, 86, 172, 3)] == [8, 16, 32, 88, 176, 8]


@pytest.mark.parametrize("name", list(PUBLISHED_GMACS))
def test_multiply_accumulates_match_the_published_ones(name: str) -> None:
    # gmacs counts convolutions and matrix products, not element-wise ops,
    # pooling or normalisation, like the published numbers; meta tensors make it instant.
    published, frames, size = PUBLISHED_GMACS[name]
    assert gmacs(_meta_model(name), (1, 3, frames, size, size)) == pytest.approx(published, rel=0.03)


# --------------------------------------------------------------------------------------------
# Cross-implementation fixtures
# --------------------------------------------------------------------------------------------


def _fixture_model(kind: str) -> tuple[MoViNet, dict[str, Tensor], Tensor]:
    model = create_movinet("a0", stream=kind == "stream").eval()
    load_movinet_pytorch_state_dict(model, torch.load(FIXTURES / f"a0_{kind}_state_dict.pt", weights_only=True))
    expected = torch.load(FIXTURES / f"a0_{kind}_expected.pt", weights_only=True)
    video = torch.load(FIXTURES / "input_b2_c3_t8_64x64.pt", weights_only=True)["video"]
    return model, expected, video


@needs_fixtures
@pytest.mark.parametrize("kind", ["base", "stream"])
@torch.no_grad()
def test_matches_the_public_implementation(kind: str) -> None:
    model, expected, video = _fixture_model(kind)
    torch.testing.assert_close(model(video), expected["logits"], atol=1e-5, rtol=0)
    torch.testing.assert_close(model.features(video).transpose(1, 2), expected["conv7_spatial_mean"], atol=1e-5, rtol=0)
    if kind == "base":
        return
    torch.testing.assert_close(_stream_in_chunks(model, video, [1] * 8), expected["logits_frame_by_frame"], atol=1e-5, rtol=0)
    torch.testing.assert_close(_stream_in_chunks(model, video, [3, 3, 2]), expected["logits_chunks_3_3_2"], atol=1e-5, rtol=0)


@needs_fixtures
def test_importer_names_what_does_not_fit() -> None:
    base = torch.load(FIXTURES / "a0_base_state_dict.pt", weights_only=True)
    with pytest.raises(ValueError, match=r"(?s)MoViNet-A1 base.*another variant.*missing.*: \['blocks\.b0_l1\.alpha"):
        load_movinet_pytorch_state_dict(_meta_model("a1"), base)
    with pytest.raises(ValueError, match=r"(?s)MoViNet-A0 stream.*it is a base checkpoint.*missing.*blocks\.b1_l0\.deep\.temporal"):
        load_movinet_pytorch_state_dict(_meta_model("a0", stream=True), base)
    with pytest.raises(ValueError, match=r"(?s)mismatched.*classifier\.3\.conv_1\.conv3d\.weight \(600, 2048"):
        load_movinet_pytorch_state_dict(_meta_model("a0", num_classes=10), base)


@needs_fixtures
def test_importer_zeroes_the_position_scalars_the_layout_lacks() -> None:
    stream = torch.load(FIXTURES / "a0_stream_state_dict.pt", weights_only=True)
    model = create_movinet("a0", stream=True, positional_encoding=True)
    with torch.no_grad():
        model.blocks.b0_l0.se.pos_alpha.fill_(1.0)
    load_movinet_pytorch_state_dict(model, stream)
    assert all(m.se.pos_alpha.item() == 0.0 for m in model.blocks.values())


# --------------------------------------------------------------------------------------------
# Streaming
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a0", "a3"])  # A3 has the positional encoding
@torch.no_grad()
def test_whole_clip_chunks_and_frames_give_the_same_logits(name: str) -> None:
    torch.manual_seed(0)  # the weights: the checks below must not depend on the tests that ran before
    model = _randomise(create_movinet(name, stream=True, num_classes=10), seed=1)
    video = _video(T=8)
    whole = model(video)
    assert 1e-2 < whole.std() < 10  # randomised BN and ReZero: the blocks are not the identity
    assert torch.equal(whole, model.step(video, None)[0])
    close = dict(atol=1e-5, rtol=1e-5)  # float32 sums in another order: ~1 ulp of logits of size ~5
    by_frame = _stream_in_chunks(model, video, [1] * 8)
    torch.testing.assert_close(by_frame[-1], whole, **close)
    torch.testing.assert_close(_stream_in_chunks(model, video, [3, 3, 2]), by_frame[[2, 5, 7]], **close)
    torch.testing.assert_close(_stream_in_chunks(model, video, [5, 3])[-1], whole, **close)
    # Causal: the prediction after frame t does not depend on later frames.
    torch.testing.assert_close(model(video[:, :, :4]), by_frame[3], **close)


@torch.no_grad()
def test_stream_state_is_explicit_and_positions_matter() -> None:
    model = _randomise(create_movinet("a3", stream=True, num_classes=10), seed=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    video = _video(T=4)
    logits, state = model.step(video, None)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the modules keep nothing
    assert state.keys() == model.state_keys and int(state["frames"]) == 4
    assert state["blocks.b2_l0.deep"].shape == (2, 240, 4, 4, 4)  # kt - 1 = 4 frames at 4×4
    assert state["blocks.b2_l0.se"].shape == state["head"].shape[:1] + (240, 1, 1, 1)
    for block in model.blocks.values():
        block.se.pos_alpha.zero_()
    assert not torch.allclose(model(video), logits, atol=1e-4)  # the position code is in use


# --------------------------------------------------------------------------------------------
# Features, taps, padding, initialisation, training
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_features_feed_the_grw_classifier_and_taps(stream: bool) -> None:
    backbone = create_movinet("a0", stream=stream, num_classes=10)
    video = _video(T=6)
    assert backbone.features(video).shape == (2, 6, backbone.num_features) == (2, 6, 480)
    out = GRWVideoClassifier(backbone, 32, num_classes=5)(video)
    assert out.logits.shape == (2, 5) and out.embeddings.shape == (2, 6, 32)
    with GRWTaps(backbone, ["blocks.b2_l1"], T=3) as taps:
        backbone(video)
        assert taps.embeddings["blocks.b2_l1"].shape == (2, 6, 56)
        assert torch.isfinite(taps.loss())


def test_tf_same_padding_and_skip_pool() -> None:
    assert same_padding(64, 3, 2) == (0, 1) and same_padding(43, 3, 2) == (1, 1)
    assert same_padding(8, 5, 1) == (2, 2) and same_padding(64, 1, 2) == (0, 0)
    x = torch.arange(16.0).view(1, 1, 1, 4, 4)
    # TF "same" on an even size: windows start at 0, 2; the last row/column averages real pixels only.
    expected = torch.tensor([[5.0, 7.0], [13.0, 15.0]]) + torch.tensor([[0.0, -0.5], [-2.0, -2.5]])
    torch.testing.assert_close(SkipPool(tf_padding=True)(x)[0, 0, 0], expected)
    # Symmetric padding: windows centred at 0, 2; the first row/column averages real pixels only.
    torch.testing.assert_close(SkipPool(tf_padding=False)(x)[0, 0, 0], torch.tensor([[2.5, 4.0], [8.5, 10.0]]))


@pytest.mark.parametrize(
    ("kernel", "stride", "causal"), [((1, 3, 3), 1, False), ((1, 5, 5), 2, False), ((3, 1, 1), 1, True), ((5, 1, 1), 1, False)]
)
def test_depthwise_convs_run_as_the_same_2d_convs(kernel: tuple[int, int, int], stride: int, causal: bool) -> None:
    torch.manual_seed(0)
    unit = ConvBNAct(6, 6, kernel, stride, groups=6, causal=causal, tf_padding=False)
    for layout in (torch.contiguous_format, torch.channels_last_3d):
        x = torch.randn(2, 6, 5, 9, 9).contiguous(memory_format=layout)
        fast, reference = unit._conv(x), unit.conv(x)
        torch.testing.assert_close(fast, reference)
        grads = [torch.autograd.grad(y.square().sum(), unit.conv.weight)[0] for y in (fast, reference)]
        torch.testing.assert_close(*grads, rtol=1e-5, atol=1e-5)  # sums of ~400 products in another order


@torch.no_grad()
def test_symmetric_padding_option_keeps_sizes_and_shifts_values() -> None:
    tf = _randomise(create_movinet("a0", num_classes=10), seed=3)
    torch_pad = create_movinet("a0", num_classes=10, tf_padding=False)
    torch_pad.load_state_dict(tf.state_dict())
    video = _video(T=4, size=48)
    a, b = tf.eval().features(video), torch_pad.eval().features(video)
    assert a.shape == b.shape == (2, 4, 480) and not torch.allclose(a, b)


def test_initialisation_follows_the_official_model() -> None:
    torch.manual_seed(0)
    model = create_movinet("a1")
    assert all(block.alpha.item() == 0.0 for block in model.blocks.values())
    bn = model.blocks.b0_l0.project.norm
    assert (bn.momentum, bn.eps) == (0.01, 1e-3)
    assert model.classifier[-1].conv.weight.std().item() == pytest.approx(0.01, rel=0.02)
    head = model.classifier[0].conv.weight  # truncated He-normal, fan-in 600
    assert head.std().item() == pytest.approx((2 / 600) ** 0.5, rel=0.02)
    assert head.abs().max().item() <= 2 * (2 / 600) ** 0.5 / 0.8796 + 1e-6
    assert model.classifier[2].p == 0.5 and create_movinet("a0").classifier[2].p == 0.2
    assert model.blocks.b4_l6.drop_path.p == pytest.approx(0.2) and model.blocks.b0_l0.drop_path.p == pytest.approx(0.2 / 24)


def test_training_step_updates_every_part() -> None:
    torch.manual_seed(0)
    model = create_movinet("a0", stream=True, num_classes=4).train()
    loss = nn.functional.cross_entropy(model(_video(T=4)), torch.tensor([0, 3]))
    loss.backward()
    assert model.blocks.b4_l3.alpha.grad.abs() > 0  # the ReZero scalars start at 0 but learn
    assert model.conv1.norm.running_mean.abs().sum() > 0


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def test_names_are_case_insensitive_and_checked() -> None:
    assert _meta_model("A2").config.name == "a2"
    with pytest.raises(ValueError, match="expected one of a0, a1, a2, a3, a4, a5"):
        create_movinet("a6")
    with pytest.raises(ValueError, match="stream=True"):
        create_movinet("a0", positional_encoding=True)


@torch.no_grad()
def test_bad_input_gets_a_clear_error() -> None:
    model = create_movinet("a0", stream=True, num_classes=10).eval()
    video = _video(T=2)
    with pytest.raises(ValueError, match=r"expected a video \[B, 3, T, H, W\].*\(2, 4, 2, 64, 64\)"):
        model(torch.rand(2, 4, 2, 64, 64))
    with pytest.raises(ValueError, match="at least 32×32 pixels"):
        model.features(torch.rand(2, 3, 2, 31, 64))
    with pytest.raises(ValueError, match="floating-point"):
        model(torch.zeros(2, 3, 2, 64, 64, dtype=torch.uint8))
    _, state = model.step(video, None)
    with pytest.raises(ValueError, match="batch size \\[2\\], the chunk has batch size 1"):
        model.step(video[:1], state)
    other = create_movinet("a1", stream=True, num_classes=10).eval()
    with pytest.raises(ValueError, match="not one of this a1 stream model"):
        other.step(video, state)
    with pytest.raises(ValueError, match=r"blocks\.b1_l0\.deep. has shape \(2, 80, 2, 8, 8\), expected \(2, 80, 2, 6, 6\)"):
        model.step(_video(T=2, size=48), state)
    with pytest.raises(ValueError, match="base \\(non-causal\\).*stream=True"):
        create_movinet("a0", num_classes=10).step(video, None)


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


class _Step(nn.Module):
    def __init__(self, model: MoViNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, chunk: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        return self.model.step(chunk, state)


@torch.no_grad()
def test_stream_step_exports() -> None:
    model = _randomise(create_movinet("a0", stream=True, num_classes=10), seed=4)
    video = _video(T=4)
    _, state = model.step(video[:, :, :2], None)
    exported = torch.export.export(_Step(model), (video[:, :, 2:3], state)).module()
    for t in (2, 3):  # the exported step carries the state like the eager one
        expected, expected_state = model.step(video[:, :, t : t + 1], state)
        logits, state = exported(video[:, :, t : t + 1], state)
        torch.testing.assert_close(logits, expected, atol=1e-6, rtol=0)
        assert state.keys() == expected_state.keys()
