"""Plug-and-play taps on models written elsewhere: torchvision's R(2+1)D-18 and pytorchvideo's X3D."""

import pytest
import torch
import torch.nn.functional as F
from pytorchvideo.models.x3d import create_x3d
from torchvision.models.video import r2plus1d_18

from grw import grw_loss
from grw.taps import GRWTaps, frame_embeddings


def test_frame_embeddings_pool_and_normalise():
    features = torch.randn(2, 6, 4, 5, 5) * 3 + 7  # [B, C, N, H, W]
    Z = frame_embeddings(features)
    assert Z.shape == (2, 4, 6)
    assert torch.allclose(Z[0, 1], (features.mean((3, 4))[0, :, 1] - features.mean((0, 2, 3, 4))) / features.mean((3, 4)).var((0, 2), unbiased=False).add(1e-5).sqrt(), atol=1e-5)
    flat = Z.reshape(-1, 6)
    assert torch.allclose(flat.mean(0), torch.zeros(6), atol=1e-5)
    per_frame = features.permute(0, 2, 1, 3, 4).reshape(8, 6, 5, 5)  # [B·N, C, H, W]
    assert torch.allclose(frame_embeddings(per_frame, frames=4), Z, atol=1e-5)
    with pytest.raises(ValueError, match="needs frames=N"):
        frame_embeddings(per_frame)
    with pytest.raises(ValueError, match="expected a video feature map"):
        frame_embeddings(torch.randn(2, 3, 4))


def _train_steps(model, taps, video, steps=4, lr=1e-3):
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        model(video)
        loss = taps.loss()
        optimizer.zero_grad()
        loss.backward()
        losses.append(loss.item())
        optimizer.step()
    return losses


def test_r2plus1d_taps_give_gradients_and_train():
    torch.manual_seed(0)
    model = r2plus1d_18(weights=None, num_classes=5)
    video = torch.rand(2, 3, 16, 32, 32)
    taps = GRWTaps(model, {"layer1": 1.0, "layer2": 0.5}, T=4)
    model(video)
    assert {k: tuple(v.shape) for k, v in taps.embeddings.items()} == {"layer1": (2, 16, 64), "layer2": (2, 8, 128)}
    expected = grw_loss(taps.embeddings["layer1"], 4) + 0.5 * grw_loss(taps.embeddings["layer2"], 4)
    loss = taps.loss()
    assert torch.isfinite(loss) and loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert model.layer1[0].conv1[0][0].weight.grad.abs().sum() > 0  # reaches the tapped layers
    assert model.fc.weight.grad is None  # and nothing after them
    losses = _train_steps(model, taps, video)
    assert losses[-1] < losses[0]
    taps.remove()
    model(video)
    assert taps.embeddings == {}


def test_x3d_taps_give_gradients_and_train():
    torch.manual_seed(0)
    model = create_x3d(input_clip_length=8, input_crop_size=32, model_num_class=5, head_activation=None)
    video = torch.rand(2, 3, 8, 32, 32)
    with GRWTaps(model, ["blocks.2", "blocks.3"], T=4) as taps:
        logits = model(video)
        assert logits.shape == (2, 5)
        loss = F.cross_entropy(logits, torch.tensor([0, 3])) + 0.1 * taps.loss()
        loss.backward()
        assert model.blocks[2].res_blocks[0].branch1_conv.weight.grad.abs().sum() > 0  # (branch2 starts zero-gated)
        losses = _train_steps(model, taps, video)
        assert losses[-1] < losses[0]
    assert not model.blocks[2]._forward_hooks


def test_unknown_layer_and_missing_forward_are_clear_errors():
    model = r2plus1d_18(weights=None)
    with pytest.raises(ValueError, match="no layer named \\['layer9'\\]"):
        GRWTaps(model, ["layer9"], T=4)
    taps = GRWTaps(model, ["layer1"], T=4)
    with pytest.raises(RuntimeError, match="run a forward pass"):
        taps.loss()


def test_x3d_trunk_feeds_the_grw_classifier():
    """Final-layer GRW on a second model family: X3D without its head → per-frame features → Z → Transformer head."""
    from torch import nn

    from grw.models import FrameFeatures, GRWVideoClassifier

    torch.manual_seed(0)
    x3d = create_x3d(input_clip_length=8, input_crop_size=32, model_num_class=5)
    trunk = nn.Sequential(*x3d.blocks[:-1])  # everything before the head: [B, 192, T, H/32, W/32]
    model = GRWVideoClassifier(FrameFeatures(trunk, 192), embed_dim=16, num_classes=5)
    video, labels = torch.rand(2, 3, 8, 32, 32), torch.tensor([0, 3])
    logits, Z = model(video)
    assert logits.shape == (2, 5) and Z.shape == (2, 8, 16)  # one embedding per frame: X3D keeps time
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(4):
        logits, Z = model(video)
        loss = F.cross_entropy(logits, labels) + 0.1 * grw_loss(Z, 4)
        optimizer.zero_grad()
        loss.backward()
        assert trunk[0].conv.conv_t.weight.grad.abs().sum() > 0  # the GRW gradient reaches the stem
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    with pytest.raises(ValueError, match="expected the trunk to give \\[B, 100"):
        FrameFeatures(trunk, 100)(video)
