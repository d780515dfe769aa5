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


class _PerFrameNet(torch.nn.Module):
    """A reader's model: a 2-D CNN on every frame, a GRU over time; returns (logits, per-frame features)."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        from torch import nn

        self.backbone = nn.Sequential(nn.Conv2d(3, 6, 3, stride=2), nn.BatchNorm2d(6), nn.ReLU(),
                                      nn.Conv2d(6, 8, 3, stride=2), nn.ReLU())
        self.unused = nn.Linear(2, 2)  # a layer that never runs
        self.rnn = nn.GRU(8, 12, batch_first=True)
        self.classifier = nn.Linear(12, classes)

    def forward(self, video):  # [B, 3, N, H, W]
        B, N = video.shape[0], video.shape[2]
        features = self.backbone(video.transpose(1, 2).flatten(0, 1)).mean(dim=(2, 3)).unflatten(0, (B, N))
        hidden, _ = self.rnn(features)
        return self.classifier(hidden[:, -1]), features


def test_tapped_classifier_returns_the_layers_embeddings_and_splits_the_parameters():
    from grw.contracts import check_model, check_output
    from grw.taps import TappedClassifier

    torch.manual_seed(0)
    net = _PerFrameNet()
    video = torch.rand(2, 3, 6, 16, 16)
    wrapped = TappedClassifier(net, "backbone.2", num_classes=3, backbone="backbone")
    check_model(wrapped, ["a", "b", "c"])
    logits, Z = check_output(wrapped(video), batch=2, num_classes=3)
    kept = {}
    handle = net.backbone[2].register_forward_hook(lambda m, i, o: kept.setdefault("out", o))
    expected_logits, _ = net(video)
    handle.remove()
    assert torch.allclose(logits, expected_logits)
    assert Z.shape == (2, 6, 6) and torch.allclose(Z, frame_embeddings(kept["out"], frames=6))
    groups = wrapped.parameter_groups()
    assert {id(p) for p in groups["backbone"]} == {id(p) for p in net.backbone.parameters()}
    assert {id(p) for p in groups["head"]} == {id(p) for n, p in net.named_parameters() if not n.startswith("backbone.")}
    assert wrapped(torch.rand(3, 3, 4, 16, 16)).embeddings.shape == (3, 4, 6)  # N read from each video


def test_tapped_classifier_copies_hook_their_own_layer():
    """The engine's EMA deep-copies the model: the copy's embeddings are its own layer's, the original's untouched."""
    import copy

    from grw.taps import TappedClassifier

    torch.manual_seed(0)
    wrapped = TappedClassifier(_PerFrameNet(), "backbone.2", num_classes=3, backbone="backbone")
    video = torch.rand(2, 3, 4, 16, 16)
    twin = copy.deepcopy(wrapped)
    with torch.no_grad():
        twin.model.backbone[0].weight.mul_(-1)
    Z, Z_twin = wrapped(video).embeddings, twin(video).embeddings
    assert not torch.allclose(Z, Z_twin)
    assert torch.allclose(wrapped(video).embeddings, Z)


def test_tapped_classifier_trains_through_fit_with_grw_on_the_tapped_layer(tmp_path):
    from grw import GRWLoss
    from grw.taps import TappedClassifier
    from grw.train import TrainConfig, fit

    class Clips(torch.utils.data.Dataset):
        classes = ("a", "b", "c")

        def __len__(self):
            return 12

        def __getitem__(self, i):
            return torch.rand(3, 6, 16, 16, generator=torch.Generator().manual_seed(i)), i % 3

    torch.manual_seed(0)
    model = TappedClassifier(_PerFrameNet(), "backbone.2", num_classes=3, backbone="backbone")
    cfg = TrainConfig(epochs=2, batch_size=4, lr=1e-2, ema_decay=0.9, out_dir=str(tmp_path), progress=False,
                      log_epochs=False)
    result = fit(model, Clips(), Clips(), cfg, regularizer=GRWLoss(3), lam=0.1)
    assert (tmp_path / "checkpoint.pt").exists() and len(result.history) == 2
    assert result.history[-1]["train_grw"] > 0 and "ema_val_top1" in result.history[-1]
    assert result.ema(torch.rand(2, 3, 6, 16, 16)).embeddings.shape == (2, 6, 6)


def test_tapped_classifier_errors_name_the_problem():
    from grw.taps import TappedClassifier

    net = _PerFrameNet()
    with pytest.raises(ValueError, match="no layer named \\['backbone.9'\\]"):
        TappedClassifier(net, "backbone.9", num_classes=3, backbone="backbone")
    with pytest.raises(ValueError, match="no layer named \\['trunk'\\]"):
        TappedClassifier(net, "backbone.2", num_classes=3, backbone="trunk")
    with pytest.raises(RuntimeError, match="'unused' did not run"):
        TappedClassifier(net, "unused", num_classes=3, backbone="backbone")(torch.rand(1, 3, 4, 16, 16))
    with pytest.raises(ValueError, match="expected a video batch"):
        TappedClassifier(net, "backbone.2", num_classes=3, backbone="backbone")(torch.rand(3, 4, 16, 16))
