"""Metrics and plotting helpers: values that would be wrong if the code were wrong."""

import matplotlib

matplotlib.use("Agg")


import matplotlib.pyplot as plt
import pytest
import torch

from grw.metrics import ClipVideoAccuracy, confusion_matrix, gmacs, mean_squared_acceleration, straightness, topk_correct
from grw.plots import pca_project, plot_confusion, plot_learning_curves, plot_trajectories


def test_topk_correct():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.3], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 2, 0])
    assert topk_correct(logits, labels, ks=(1, 2, 5)) == {1: 1, 2: 2, 5: 3}
    with pytest.raises(ValueError, match="expected logits"):
        topk_correct(logits, labels[:2])


def test_clip_and_video_accuracy_by_hand():
    # 6 classes; video 0 (label 0): clip 0 right, clip 1 confidently wrong and label last (top-5 miss) → the video is wrong;
    # video 1 (label 2): one right clip; video 2 (label 3): clip 4 has the label 4th (top-5 hit, top-1 miss), clip 5 right
    # with a far larger margin → softmax mean: class 3 (0.032 + 0.999) / 2 = 0.52 > class 0 (0.634 + 0.000) / 2 = 0.32
    logits = torch.tensor([
        [10.0, 0, 0, 0, 0, 0],
        [0.0, 20, 1, 1, 1, 1],
        [0.0, 0, 1, 0, 0, 0],
        [5.0, 4, 3, 2, 1, 0],
        [0.0, 0, 0, 9, 0, 0],
    ])
    labels, videos = torch.tensor([0, 0, 2, 3, 3]), torch.tensor([0, 0, 1, 2, 2])
    accuracy = ClipVideoAccuracy(4, 6)  # video 3 gives no clip: not counted
    accuracy.update(logits[:3], labels[:3], videos[:3])  # batches may split a video
    accuracy.update(logits[3:], labels[3:], videos[3:])
    assert accuracy.compute() == {"clips": 5, "videos": 3, "top1": 3 / 5, "top5": 4 / 5, "video_top1": 2 / 3}
    # the mean of the softmaxes, not of the logits: class 0 gets (0.909 + 0.010) / 2 = 0.46 > class 1 (0.045 + 0.520) / 2,
    # while the mean logits [1.5, 2, 1.95] would pick class 1
    one = ClipVideoAccuracy(1, 3, ks=(1,))
    one.update(torch.tensor([[3.0, 0, 0], [0, 4, 3.9]]), torch.tensor([0, 0]), torch.tensor([0, 0]))
    assert one.compute() == {"clips": 2, "videos": 1, "top1": 1 / 2, "video_top1": 1.0}
    with pytest.raises(ValueError, match="no clip was scored"):
        ClipVideoAccuracy(3, 4).compute()  # not 0 %
    with pytest.raises(ValueError, match="one video index per clip"):
        accuracy.update(logits, labels, videos[:2])


def test_confusion_matrix_rows_are_true_classes():
    cm = confusion_matrix(torch.tensor([0, 2, 2, 1]), torch.tensor([0, 1, 2, 1]), 3)
    assert cm.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]


def test_mean_squared_acceleration():
    t = torch.arange(8.0)
    line = torch.stack([2 * t + 1, -t], dim=-1)[None].repeat(3, 1, 1)
    assert mean_squared_acceleration(line) == pytest.approx(0.0, abs=1e-12)
    parabola = (t**2)[None, :, None]
    assert mean_squared_acceleration(parabola, standardized=False) == pytest.approx(4.0)
    noise = torch.randn(2000, 10, 4, generator=torch.Generator().manual_seed(0))
    assert mean_squared_acceleration(noise) == pytest.approx(6.0, rel=0.02)  # 1 + 4 + 1 for i.i.d. frames
    assert mean_squared_acceleration(100 * noise) == pytest.approx(mean_squared_acceleration(noise))
    with pytest.raises(ValueError, match="N >= 3"):
        mean_squared_acceleration(torch.randn(2, 2, 3))


def test_straightness():
    t = torch.arange(6.0)[:, None]
    line = torch.stack([t * torch.tensor([1.0, 2.0]), 5 + t**2 * torch.tensor([0.0, -1.0])])  # uneven spacing is still straight
    assert straightness(line) == pytest.approx(1.0)
    zigzag = torch.tensor([[[0.0, 0.0], [1.0, 1.0], [2.0, 0.0]]])  # chord 2, path 2·√2
    assert straightness(zigzag) == pytest.approx(2**-0.5)
    back_and_forth = torch.tensor([[[0.0], [1.0], [0.0]]])
    assert straightness(back_and_forth) == pytest.approx(0.0)
    with pytest.raises(ValueError, match=r"\[n, N >= 2, K\]"):
        straightness(torch.zeros(3, 1, 2))


def test_pca_project_finds_the_dominant_directions():
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(6, 6, generator=g)).Q[:, :2]  # two orthonormal directions in 6-D
    coords = torch.randn(5, 7, 2, generator=g) * torch.tensor([5.0, 2.0])
    Z = coords @ basis.T + 0.001 * torch.randn(5, 7, 6, generator=g)
    P = pca_project(Z)
    assert P.shape == (5, 7, 2)
    centred = coords - coords.reshape(-1, 2).mean(0)
    # the projection reproduces the planted coordinates up to rotation within the plane: distances agree
    d_true = torch.cdist(centred.reshape(-1, 2), centred.reshape(-1, 2))
    d_pca = torch.cdist(P.reshape(-1, 2), P.reshape(-1, 2))
    assert torch.allclose(d_true, d_pca, atol=0.02)
    assert P.reshape(-1, 2).var(0)[0] > P.reshape(-1, 2).var(0)[1]


def test_plots_draw_what_they_are_given():
    fig, axes = plt.subplots(1, 2)
    plot_trajectories(axes[0], torch.randn(3, 4, 2), torch.tensor([0, 1, 2]), ["yaw", "pitch", "roll"])
    assert len(axes[0].lines) == 3 + 3  # one per clip, one legend handle per class
    assert len(axes[0].texts) == 12  # frame indices
    plot_confusion(axes[1], torch.tensor([[3, 1], [0, 4]]), ["a", "b"])
    assert [t.get_text() for t in axes[1].texts] == ["3", "1", "0", "4"]
    curves = plot_learning_curves({"baseline": [{"epoch": 1, "val_top1": 50.0}, {"epoch": 2, "val_top1": 60.0}]}, keys=["val_top1"])
    assert curves.axes[0].lines[0].get_ydata().tolist() == [50.0, 60.0]
    plt.close("all")


def test_gmacs_counts_convolutions_and_leaves_the_model_alone():
    conv = torch.nn.Conv3d(3, 8, (1, 3, 3), padding=(0, 1, 1))
    assert gmacs(conv, (1, 3, 2, 10, 10)) * 1e9 == pytest.approx(8 * 2 * 10 * 10 * 3 * 9)  # outputs × MACs per output
    assert conv.weight.device.type == "cpu"
