"""The GRW loss: worked example, brute force, gradients, devices, autocast and bad input."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from grw import GRWLoss, grw_loss
from grw.loss import grw_loss_reference, ordering_forms, permutations, windows


def brute_force(Z: torch.Tensor, T: int, alpha: float, perms: torch.Tensor | None = None) -> float:
    """The definition, one window and one ordering at a time, in float64 Python loops."""
    Z = Z.detach().double()
    B, N, K = Z.shape
    orders = perms.tolist() if perms is not None else [(0, *p) for p in itertools.permutations(range(1, T))]
    total, count = 0.0, 0
    for b in range(B):
        for c in range(N // T):
            w = Z[b, c * T : (c + 1) * T]
            logits = []
            for order in orders:
                p = w[list(order)]
                logits.append(-0.5 * sum(float(((p[t + 2] - 2 * p[t + 1] + p[t]) ** 2).sum()) for t in range(T - 2)))
            log_z = max(logits) + math.log(sum(math.exp(l - max(logits)) for l in logits))
            scale = 0.5 * sum(float(((w[t + 1] - w[t]) ** 2).sum()) for t in range(T - 1))
            total += (log_z - logits[0]) + alpha * scale
            count += 1
    return total / count


def test_worked_example_T4():
    Z = torch.tensor([0.0, 1.0, 2.0, 3.0]).reshape(1, 4, 1)
    accelerations = [(0, 0), (1, -3), (-5, 3), (-3, 3), (-1, -3), (-4, 0)]
    logits = torch.tensor([[-0.5 * (a * a + b * b) for a, b in accelerations]])
    expected = F.cross_entropy(logits, torch.tensor([0])) + 1.5
    for loss_fn in (grw_loss, grw_loss_reference, GRWLoss(4, alpha=1.0)):
        kwargs = {} if isinstance(loss_fn, GRWLoss) else {"T": 4, "alpha": 1.0}
        assert torch.allclose(loss_fn(Z, **kwargs), expected, rtol=1e-6)
    terms = grw_loss(Z, 4, 1.0, return_terms=True)
    assert terms.scale.item() == pytest.approx(1.5)
    assert terms.ordering.item() == pytest.approx(expected.item() - 1.5, rel=1e-6)


def test_permutations_of_the_worked_example():
    assert permutations(4).tolist() == [[0, 1, 2, 3], [0, 1, 3, 2], [0, 2, 1, 3], [0, 2, 3, 1], [0, 3, 1, 2], [0, 3, 2, 1]]
    for T in range(3, 8):
        assert len(permutations(T)) == math.factorial(T - 1)


def test_sampled_orderings_are_distinct_fresh_and_keep_frame_0():
    g = torch.Generator().manual_seed(1)
    first, second = permutations(10, 200, g), permutations(10, 200, g)
    for perms in (first, second):
        assert perms.shape == (200, 10)
        assert perms[0].tolist() == list(range(10))
        assert (perms[:, 0] == 0).all()
        assert len({tuple(p) for p in perms.tolist()}) == 200  # distinct, identity only once
        assert (perms.sort(dim=1).values == torch.arange(10)).all()  # each row a permutation
    assert not torch.equal(first, second)  # fresh negatives on every call
    assert len(permutations(8, 10**6)) == math.factorial(7)  # asking for more than exist gives all


@pytest.mark.parametrize("shape,T", [((2, 10, 3), 3), ((3, 12, 5), 4), ((2, 11, 4), 5), ((1, 13, 2), 6), ((2, 7, 3), 7)])
def test_matches_brute_force(shape, T):
    Z = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape) + T))
    expected = brute_force(Z, T, alpha=0.5)
    assert grw_loss(Z, T).item() == pytest.approx(expected, rel=1e-5)
    assert grw_loss_reference(Z, T).item() == pytest.approx(expected, rel=1e-5)
    assert GRWLoss(T)(Z).item() == pytest.approx(expected, rel=1e-5)


def test_matches_brute_force_with_sampled_orderings():
    Z = torch.randn(2, 18, 3, generator=torch.Generator().manual_seed(0))
    perms = permutations(9, 30, torch.Generator().manual_seed(5))
    expected = brute_force(Z, 9, alpha=0.5, perms=perms)
    for loss_fn in (grw_loss, grw_loss_reference):
        assert loss_fn(Z, 9, max_perms=30, generator=torch.Generator().manual_seed(5)).item() == pytest.approx(expected, rel=1e-5)
    assert GRWLoss(9, max_perms=30)(Z, generator=torch.Generator().manual_seed(5)).item() == pytest.approx(expected, rel=1e-5)


def test_large_offset_keeps_float32_accuracy():
    g = torch.Generator().manual_seed(3)
    Z = 1000 + 0.05 * torch.randn(4, 10, 8, generator=g)
    expected = brute_force(Z.double(), 5, alpha=0.5)
    assert grw_loss(Z, 5).dtype == torch.float32
    assert grw_loss(Z, 5).item() == pytest.approx(expected, rel=1e-5)


def test_trailing_frames_are_dropped_and_windows_are_contiguous():
    Z = torch.arange(2 * 11 * 1, dtype=torch.float32).reshape(2, 11, 1)
    w = windows(Z, 5)
    assert w.shape == (4, 5, 1)
    assert w[1, :, 0].tolist() == [5, 6, 7, 8, 9] and w[2, :, 0].tolist() == [11, 12, 13, 14, 15]
    assert grw_loss(Z, 5).item() == pytest.approx(grw_loss(Z[:, :10], 5).item())


def test_ordering_forms_score_permuted_windows():
    T = 6
    perms = permutations(T)
    forms = ordering_forms(perms)
    w = torch.randn(T, 4, dtype=torch.float64)
    direct = w[perms].diff(n=2, dim=1).pow(2).sum(dim=(1, 2))
    assert torch.allclose((forms * (w @ w.T)).sum(dim=(1, 2)), direct)


def test_gradcheck_float64():
    Z = torch.randn(2, 10, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: grw_loss(z, 4), (Z,))
    assert torch.autograd.gradcheck(lambda z: grw_loss(z, 9, max_perms=20, generator=torch.Generator().manual_seed(0)), (Z,))


def test_gradients_match_reference():
    Z = torch.randn(3, 10, 6, requires_grad=True)
    (g1,) = torch.autograd.grad(grw_loss(Z, 5), Z)
    (g2,) = torch.autograd.grad(grw_loss_reference(Z, 5), Z)
    assert torch.allclose(g1, g2, rtol=1e-4, atol=1e-6)


def test_loss_is_float32_under_autocast():
    Z = torch.randn(2, 10, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = grw_loss(Z.bfloat16(), 5)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(grw_loss(Z.bfloat16().float(), 5).item(), rel=1e-6)


def test_module_buffers_move_and_stay_out_of_state_dict():
    module = GRWLoss(5)
    assert module.forms.shape == (24, 5, 5)
    assert module.state_dict() == {}
    assert module.double().forms.dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cpu_and_cuda_agree():
    Z = torch.randn(4, 20, 16)
    for T in (5, 8):
        cpu = grw_loss(Z, T, generator=torch.Generator().manual_seed(0))
        gpu = grw_loss(Z.cuda(), T, generator=torch.Generator().manual_seed(0))
        assert gpu.item() == pytest.approx(cpu.item(), rel=1e-5)
        assert GRWLoss(T).cuda()(Z.cuda(), generator=torch.Generator().manual_seed(0)).item() == pytest.approx(cpu.item(), rel=1e-5)


@pytest.mark.parametrize(
    "Z,T,max_perms,message",
    [
        (torch.randn(2, 10, 3), 2, 1000, "T must be an integer >= 3"),
        (torch.randn(2, 4, 3), 5, 1000, "fewer than one window"),
        (torch.randn(10, 3), 5, 1000, "3-D tensor"),
        (torch.randint(0, 5, (2, 10, 3)), 5, 1000, "floating dtype"),
        (torch.tensor([[[0.0], [1.0], [float("nan")], [2.0], [3.0]]]), 5, 1000, "NaN or infinite"),
        (torch.randn(2, 10, 3), 5, 1, "max_perms must be an integer >= 2"),
    ],
)
def test_bad_input_is_rejected(Z, T, max_perms, message):
    for loss_fn in (grw_loss, grw_loss_reference):
        with pytest.raises(ValueError, match=message):
            loss_fn(Z, T, max_perms=max_perms)
