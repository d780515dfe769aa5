"""The GRW loss: worked example, brute force, gradients, devices, autocast and bad input."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

import grw.loss as loss_module
from grw import GRWLoss, grw_loss
from grw.loss import grw_loss_reference, ordering_forms, permutations, upper, upper_forms, windows


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
    logits = torch.tensor([[-0.5 * (a * a + b * b) for a, b in accelerations]], dtype=torch.float64)
    ordering = F.cross_entropy(logits, torch.tensor([0])).item()
    expected = torch.tensor(ordering + 1.5, dtype=torch.float32)
    for loss_fn in (grw_loss, grw_loss_reference, GRWLoss(4, alpha=1.0)):
        kwargs = {} if isinstance(loss_fn, GRWLoss) else {"T": 4, "alpha": 1.0}
        assert torch.allclose(loss_fn(Z, **kwargs), expected, rtol=1e-6)
    terms = grw_loss(Z, 4, 1.0, return_terms=True)
    assert terms.scale.item() == pytest.approx(1.5)
    assert terms.ordering.item() == pytest.approx(ordering, rel=1e-6)


def test_permutations_of_the_worked_example():
    assert permutations(4).tolist() == [[0, 1, 2, 3], [0, 1, 3, 2], [0, 2, 1, 3], [0, 2, 3, 1], [0, 3, 1, 2], [0, 3, 2, 1]]
    for T in range(3, 8):
        assert len(permutations(T)) == math.factorial(T - 1)


def test_sampled_orderings_are_valid_reproducible_and_fresh():
    g = torch.Generator().manual_seed(1)
    first, second = permutations(10, 200, g), permutations(10, 200, g)
    for perms in (first, second):
        assert perms.shape == (200, 10) and perms.dtype == torch.long
        assert perms[0].tolist() == list(range(10))
        assert (perms[:, 0] == 0).all()
        assert (perms.sort(dim=1).values == torch.arange(10)).all()  # each row a permutation
        assert len({tuple(p) for p in perms[1:].tolist()}) > 190  # random draws, not one ordering repeated
    assert not torch.equal(first, second)  # fresh negatives on every call
    assert torch.equal(permutations(10, 200, torch.Generator().manual_seed(1)), first)  # the seed fixes the draw
    assert not torch.equal(permutations(10, 200, torch.Generator().manual_seed(2)), first)
    assert len(permutations(8, 10**6)) == math.factorial(7)  # asking for more than exist gives all


@pytest.mark.parametrize("T,max_perms", [(5, 1000), (10, 50)])
@pytest.mark.parametrize("seeded", [False, True])
def test_orderings_and_forms_live_on_the_requested_device(T, max_perms, seeded):
    generator = torch.Generator().manual_seed(0) if seeded else None  # a CPU generator draws on the CPU, then moves
    perms = permutations(T, max_perms, generator, device="meta")
    assert perms.device.type == "meta" and perms.shape == (min(max_perms, math.factorial(T - 1)), T)
    forms = ordering_forms(perms, torch.float32)
    assert forms.device.type == "meta" and forms.dtype == torch.float32


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


def test_sampled_loss_T16_matches_reference_for_the_same_seed():
    Z = torch.randn(2, 35, 4, generator=torch.Generator().manual_seed(0))
    expected = grw_loss_reference(Z, 16, generator=torch.Generator().manual_seed(7)).item()
    assert grw_loss(Z, 16, generator=torch.Generator().manual_seed(7)).item() == pytest.approx(expected, rel=1e-5)
    assert GRWLoss(16)(Z, generator=torch.Generator().manual_seed(7)).item() == pytest.approx(expected, rel=1e-5)
    other = grw_loss(Z, 16, generator=torch.Generator().manual_seed(8)).item()
    assert other != pytest.approx(expected, rel=1e-5)  # other negatives, other loss


def test_a_drawn_identity_adds_a_second_copy_of_the_true_logit(monkeypatch):
    Z = torch.randn(1, 9, 3, generator=torch.Generator().manual_seed(4))
    perms = permutations(9, 20, torch.Generator().manual_seed(0))
    doubled = torch.cat([perms, perms[:1]])  # as if a draw had hit the identity
    monkeypatch.setattr("grw.loss.permutations", lambda *args, **kwargs: doubled)
    logits = -0.5 * Z[0, doubled].diff(n=2, dim=1).pow(2).sum(dim=(1, 2))
    ordering = torch.logsumexp(logits, 0) - logits[0]  # the target stays row 0; row 20 only enlarges the denominator
    terms = grw_loss(Z, 9, max_perms=21, return_terms=True)
    assert terms.ordering.item() == pytest.approx(ordering.item(), rel=1e-5)
    assert terms.ordering.item() > math.log(2)  # two equal true logits: the ordering term cannot fall below log 2
    assert GRWLoss(9, max_perms=21)(Z).item() == pytest.approx(terms.loss.item(), rel=1e-6)


def test_large_offset_keeps_float32_accuracy():
    g = torch.Generator().manual_seed(3)
    Z = 1000 + 0.05 * torch.randn(4, 10, 8, generator=g)
    expected = brute_force(Z.double(), 5, alpha=0.5)
    assert grw_loss(Z, 5).dtype == torch.float32
    assert grw_loss(Z, 5).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("magnitude,K", [(2e17, 480), (1e19, 8), (3e37, 8), (1e-30, 8)])
def test_any_finite_float32_magnitude_gives_the_float64_loss(magnitude, K):
    g = torch.Generator().manual_seed(4)
    # A nearly straight, evenly spaced walk: the true order is by far the most likely, so the ordering term is
    # finite at any magnitude although the logits themselves are far beyond float32.
    walk = torch.linspace(0, 1, 10)[:, None] * torch.randn(1, K, generator=g) + 1e-3 * torch.randn(10, K, generator=g)
    Z = (magnitude * walk).expand(2, 10, K).float().requires_grad_()
    terms32 = grw_loss(Z, 5, alpha=0.0, return_terms=True)
    terms64 = grw_loss(Z.detach().double(), 5, alpha=0.0, return_terms=True)
    assert torch.isfinite(terms32.ordering)
    assert terms32.ordering.item() == pytest.approx(terms64.ordering.item(), rel=1e-4, abs=1e-30)
    terms32.loss.backward()
    assert torch.isfinite(Z.grad).all()
    # With the scale term, the loss is the float64 value rounded to float32: inf where it exceeds the range, never NaN.
    full32, full64 = grw_loss(Z.detach(), 5), grw_loss(Z.detach().double(), 5)
    assert not torch.isnan(full32)
    assert full32.item() == pytest.approx(full64.float().item(), rel=1e-4, abs=1e-30)


@pytest.mark.parametrize("magnitude,K", [(2e17, 480), (1e19, 8)])
def test_huge_random_embeddings_give_the_rounded_float64_loss_not_nan(magnitude, K):
    Z = magnitude * torch.randn(2, 10, K, generator=torch.Generator().manual_seed(0))
    for alpha in (0.0, 0.5):
        loss, wide = grw_loss(Z, 5, alpha), grw_loss(Z.double(), 5, alpha).float()
        assert not torch.isnan(loss)
        assert loss.item() == pytest.approx(wide.item(), rel=1e-4)  # finite at 2e17, inf (beyond float32) at 1e19


def test_negative_alpha_is_refused():
    for make in (lambda: grw_loss(torch.randn(2, 10, 3), 5, alpha=-10.0), lambda: GRWLoss(5, alpha=-0.1)):
        with pytest.raises(ValueError, match="alpha must be a finite number >= 0"):
            make()


def test_trailing_frames_are_dropped_and_windows_are_contiguous():
    Z = torch.arange(2 * 11 * 1, dtype=torch.float32).reshape(2, 11, 1)
    w = windows(Z, 5)
    assert w.shape == (4, 5, 1)
    assert w[1, :, 0].tolist() == [5, 6, 7, 8, 9] and w[2, :, 0].tolist() == [11, 12, 13, 14, 15]
    assert grw_loss(Z, 5).item() == pytest.approx(grw_loss(Z[:, :10], 5).item())


@pytest.mark.parametrize("T", [3, 6, 11])
def test_upper_entries_give_the_full_inner_product(T):
    g = torch.Generator().manual_seed(T)
    perms = permutations(T, 50, g)
    w = torch.randn(T, 4, dtype=torch.float64, generator=g)
    full = ordering_forms(perms)
    assert torch.equal(full, full.mT)  # symmetric, as M_π = P_πᵀ Q P_π is
    assert torch.allclose(upper_forms(perms) @ upper(w @ w.T), (full * (w @ w.T)).sum(dim=(1, 2)))
    assert (upper_forms(perms) != 0).sum(dim=1).tolist() == [3 * T - 3] * len(perms)  # only Q's band, moved


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


@pytest.mark.parametrize("seed", range(5))
def test_float32_gradients_match_the_float64_reference(seed):
    Z = torch.randn(3, 10, 6, generator=torch.Generator().manual_seed(seed), requires_grad=True)
    (exact,) = torch.autograd.grad(grw_loss_reference(Z.double(), 5), Z)
    tolerance = 1e-6 * exact.abs().max()  # a few float32 roundings of the largest entry
    for loss in (grw_loss, grw_loss_reference):
        (gradient,) = torch.autograd.grad(loss(Z, 5), Z)
        assert (gradient - exact).abs().max() < tolerance


def test_loss_is_float32_under_autocast():
    Z = torch.randn(2, 10, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = grw_loss(Z.bfloat16(), 5)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(grw_loss(Z.bfloat16().float(), 5).item(), rel=1e-6)


def test_module_buffers_move_and_stay_out_of_state_dict():
    module = GRWLoss(5)
    assert module.forms.shape == (24, 15)  # 4! orderings, the 5·6/2 entries on and above the diagonal
    assert module.state_dict() == {}
    assert module.double().forms.dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_generator_draws_on_the_device():
    def seeded() -> torch.Generator:
        return torch.Generator("cuda").manual_seed(3)

    perms = permutations(16, 100, seeded(), device="cuda")
    assert perms.is_cuda and torch.equal(perms, permutations(16, 100, seeded(), device="cuda"))
    Z = torch.randn(2, 32, 8, device="cuda")
    expected = grw_loss_reference(Z, 16, generator=seeded()).item()
    assert grw_loss(Z, 16, generator=seeded()).item() == pytest.approx(expected, rel=1e-5)
    assert GRWLoss(16).cuda()(Z, generator=seeded()).item() == pytest.approx(expected, rel=1e-5)


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
        (torch.randn(2, 10, 3), 5, 1, "max_perms must be an integer >= 2"),
    ],
)
def test_bad_input_is_rejected(Z, T, max_perms, message):
    for loss_fn in (grw_loss, grw_loss_reference):
        with pytest.raises(ValueError, match=message):
            loss_fn(Z, T, max_perms=max_perms)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("T", [5, 8])
def test_finiteness_is_checked_only_on_request(bad, T):
    Z = torch.randn(2, 2 * T, 3)
    Z[1, 3, 2] = bad
    for loss_fn in (
        lambda z, **kw: grw_loss(z, T, **kw),
        lambda z, **kw: grw_loss_reference(z, T, **kw),
        lambda z, **kw: GRWLoss(T, **kw)(z),
    ):
        with pytest.raises(ValueError, match="NaN or infinite values; expected finite embeddings"):
            loss_fn(Z, check_finite=True)
        assert not torch.isfinite(loss_fn(Z))  # unchecked by default: no host sync, the loss shows it
        assert torch.isfinite(loss_fn(Z.nan_to_num(0.0, 0.0, 0.0), check_finite=True))


@pytest.mark.parametrize("T,N", [(5, 10), (6, 12), (9, 18)])  # exhaustive orderings, and sampled ones past T = 7
def test_a_call_under_inference_mode_leaves_training_calls_working(T, N):
    for cached in (loss_module._all_orderings, loss_module._pairs, loss_module._acceleration_band):
        cached.cache_clear()  # as in a fresh process whose first call of the loss is an evaluation
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():  # the first calls of this T build the cached constants, and a module's buffers
        evaluated = GRWLoss(T)(torch.randn(2, N, 4, generator=generator))
        built_there = GRWLoss(T)
    Z = torch.randn(2, N, 4, generator=generator, requires_grad=True)
    for loss in (GRWLoss(T), built_there):
        Z.grad = None
        loss(Z).backward()  # raised "Inference tensors cannot be saved for backward" when the cache was built above
        assert Z.grad is not None and torch.isfinite(Z.grad).all()
    assert torch.isfinite(evaluated)
