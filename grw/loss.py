"""The GRW-smoothing loss: a Gaussian-random-walk prior on the velocity of per-frame embeddings.

A layer gives per-frame embeddings ``Z`` of shape ``[B, N, K]``. ``Z`` is cut into ``C = N // T``
non-overlapping windows of ``T`` frames. Within a window, the prior treats accelerations
``a_t = z_{t+2} - 2 z_{t+1} + z_t`` as i.i.d. standard normal, so an ordering ``π`` of the window has
log-likelihood ``-1/2 Σ_t ||a^π_t||²``. The loss of a window is

* the cross-entropy of a softmax over orderings that keep frame 0 first, the true order being the
  target (the *ordering* term), plus
* ``alpha · 1/2 Σ_t ||v_t||²`` on the true order's velocities (the *scale* term),

averaged over the ``B·C`` windows. Nothing is divided by ``K`` or ``T`` (as in the published code).

Two implementations compute the same value:

* :func:`grw_loss_reference` materializes every permuted window ``[W, P, T, K]`` and takes second
  differences: readable, and the definition the tests check against.
* :func:`grw_loss` never builds that tensor. ``Σ_t ||a^π_t||² = Σ_ij M_π[i, j] G[i, j]`` with
  ``G = Z Zᵀ`` the window's ``T×T`` Gram matrix and ``M_π = P_πᵀ D2ᵀ D2 P_π``. Both are symmetric, so their
  ``U = T(T+1)/2`` entries on and above the diagonal say it all: the logits are one ``[W, U] @ [U, P]`` product.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "GRWLoss",
    "GRWTerms",
    "difference_matrix",
    "grw_loss",
    "grw_loss_reference",
    "ordering_forms",
    "permutations",
    "upper",
    "upper_forms",
    "windows",
]

EXHAUSTIVE_MAX_T = 7
"""Up to this window length every ordering of frames 1…T-1 is used; beyond it, a random sample."""


class GRWTerms(NamedTuple):
    """The loss and its two parts, each a scalar averaged over windows."""

    loss: Tensor
    ordering: Tensor
    scale: Tensor


# --------------------------------------------------------------------------------------------
# Input checks and windows
# --------------------------------------------------------------------------------------------


def _check_settings(T: int, alpha: float, max_perms: int) -> None:
    if not isinstance(T, int) or T < 3:
        raise ValueError(f"T must be an integer >= 3 (a window needs two velocities to have an acceleration), got {T!r}")
    if not isinstance(max_perms, int) or max_perms < 2:
        raise ValueError(f"max_perms must be an integer >= 2 (the true order and at least one other), got {max_perms!r}")
    if not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"alpha must be a finite number >= 0 (it weighs a sum of squares), got {alpha!r}")


def _check_embeddings(Z: Tensor, T: int, check_finite: bool = False) -> None:
    if not isinstance(Z, Tensor) or Z.ndim != 3:
        shape = tuple(Z.shape) if isinstance(Z, Tensor) else type(Z).__name__
        raise ValueError(f"Z must be a 3-D tensor [B, N, K] of per-frame embeddings, got {shape}")
    if not Z.is_floating_point():
        raise ValueError(f"Z must have a floating dtype, got {Z.dtype}")
    if Z.shape[1] < T:
        raise ValueError(f"Z has N={Z.shape[1]} frames, fewer than one window of T={T}: expected N >= T")
    if Z.shape[0] == 0 or Z.shape[2] == 0:
        raise ValueError(f"Z must have at least one clip and one channel, got shape {tuple(Z.shape)}")
    if check_finite and not torch.isfinite(Z).all():  # a host sync on GPU, hence opt-in
        raise ValueError("Z contains NaN or infinite values; expected finite embeddings")


def windows(Z: Tensor, T: int) -> Tensor:
    """Cut ``Z [B, N, K]`` into non-overlapping windows ``[B·C, T, K]``, ``C = N // T``; trailing frames are dropped."""
    B, N, K = Z.shape
    C = N // T
    return Z[:, : C * T].reshape(B * C, T, K)


# --------------------------------------------------------------------------------------------
# Orderings and the quadratic forms that score them
# --------------------------------------------------------------------------------------------


def _cached(build: Callable[..., Any]) -> Callable[..., Any]:
    """``functools.cache`` for the loss's constant tensors, always built outside inference mode: a tensor first made
    under ``torch.inference_mode()`` could never be saved for the backward pass of a later training call."""

    @functools.cache
    @functools.wraps(build)
    def cached(*args: Any) -> Any:
        with torch.inference_mode(False):
            return build(*args)

    return cached


@_cached
def _all_orderings(T: int, device: torch.device) -> Tensor:
    rest = itertools.permutations(range(1, T))  # lexicographic: the identity comes first
    return torch.tensor([(0, *p) for p in rest], dtype=torch.long).to(device)  # copied once per device, not per call


def permutations(
    T: int, max_perms: int = 1000, generator: torch.Generator | None = None, *, device: torch.device | str | None = None
) -> Tensor:
    """Orderings of a window ``[P, T]`` (long, on ``device``, default CPU): frame 0 first, row 0 the identity.

    All ``(T-1)!`` orderings when ``T <= 7`` or when ``max_perms`` covers them all; otherwise the identity plus
    ``max_perms - 1`` uniform draws *with replacement* (duplicates, even of the identity, are kept), drawn in one
    call on ``generator``'s device: a generator on ``device`` makes the draw reproducible with no copy.
    """
    _check_settings(T, 0.0, max_perms)
    device = torch.device("cpu" if device is None else device)
    if T <= EXHAUSTIVE_MAX_T or max_perms >= math.factorial(T - 1):
        return _all_orderings(T, device).clone()
    # Removing repeats would need a host sync. They are rare and harmless: the draws are a uniform sample
    # of the softmax's denominator over all orderings, which holds the identity too (a draw of it, chance
    # 1/(T-1)! per row, adds a second copy of the true logit), as in the authors' code.
    draw_device = generator.device if generator is not None else device
    # Random sort keys in [0, 2³¹) (integers tie less often than float32's 2²⁴ values in [0, 1)); frame 0 gets the
    # smallest key in every row, and row 0 gets sorted keys, so that it is the identity.
    keys = torch.empty(max_perms, T, dtype=torch.int32, device=draw_device).random_(generator=generator)
    keys[:, 0] = -1
    keys[0] = torch.arange(T, dtype=torch.int32, device=draw_device)
    if keys.device.type == "cpu":  # numpy sorts short rows with SIMD sorting networks: about twice torch's speed
        perms = torch.from_numpy(np.argsort(keys.numpy(), axis=1))
    else:
        perms = keys.argsort(dim=1)
    return perms.to(device)


def difference_matrix(
    T: int, order: int, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
) -> Tensor:
    """The ``[T - order, T]`` finite-difference matrix ``D`` with ``D @ z = z.diff(n=order)``."""
    return torch.eye(T, dtype=dtype, device=device).diff(n=order, dim=0)


class _Pairs(NamedTuple):
    """The ``U = T(T+1)/2`` entries ``(i, j)``, ``i <= j``, of a symmetric ``T×T`` matrix, in ``torch.triu_indices`` order."""

    flat: Tensor  # [U]: the entries' places i·T + j in a flattened [T, T] matrix
    of_place: Tensor  # [T²]: the entry that holds each place, (i, j) and (j, i) alike
    weight: Tensor  # [U]: 1 on the diagonal, 2 off it, so that <A, B> = Σ_u weight_u A_u B_u for symmetric A, B


@_cached
def _pairs(T: int, device: torch.device) -> _Pairs:
    i, j = torch.triu_indices(T, T)
    of_place = torch.empty(T, T, dtype=torch.long)
    of_place[i, j] = of_place[j, i] = torch.arange(len(i))
    return _Pairs(*(t.to(device) for t in (i * T + j, of_place.flatten(), torch.where(i == j, 1.0, 2.0))))


def upper(A: Tensor) -> Tensor:
    """Entries on and above the diagonal of symmetric ``A [..., T, T]``: ``[..., T(T+1)/2]``, off-diagonal ones doubled.

    So ``<M, A> = upper(A) · M_u`` for any symmetric ``M`` given by its own entries ``M_u`` (see :func:`upper_forms`).
    """
    pairs = _pairs(A.shape[-1], A.device)
    return A.flatten(-2).index_select(-1, pairs.flat) * pairs.weight.to(A.dtype)


def upper_forms(perms: Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
    """The entries ``i <= j`` of ``M_π = P_πᵀ D2ᵀ D2 P_π`` for each ordering ``[P, T]``: ``[P, T(T+1)/2]`` on ``perms.device``.

    ``(P_π z)_t = z_{π(t)}``, hence ``M_π[π(a), π(b)] = Q[a, b]`` with ``Q = D2ᵀ D2``, whose band ``|a - b| <= 2`` is
    all that is non-zero: ``3T - 3`` entries per ordering, read off the orderings by slicing and scattered in one call.
    """
    P, T = perms.shape
    pairs = _pairs(T, perms.device)
    places = perms.new_empty(P, 3 * T - 3)  # flat places a·T + b of (π(s), π(s + d)), d = 0, 1, 2, written in place
    torch.mul(perms, T + 1, out=places[:, :T])
    torch.add(perms[:, 1:], perms[:, :-1], alpha=T, out=places[:, T : 2 * T - 1])
    torch.add(perms[:, 2:], perms[:, :-2], alpha=T, out=places[:, 2 * T - 1 :])
    entries = pairs.of_place.index_select(0, places.view(-1)).view_as(places)  # [P, 3T - 3]
    values = _acceleration_band(T, dtype, perms.device)  # [3T - 3]
    return values.new_zeros(P, len(pairs.flat)).scatter_(1, entries, values.expand(P, -1))


def ordering_forms(perms: Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
    """``M_π = P_πᵀ D2ᵀ D2 P_π`` for each ordering ``[P, T]``: ``[P, T, T]`` on ``perms.device``, so that ``Σ_t ||a^π_t||² = <M_π, Z Zᵀ>``."""
    P, T = perms.shape
    return upper_forms(perms, dtype)[:, _pairs(T, perms.device).of_place].view(P, T, T)


@_cached
def _acceleration_band(T: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``Q = D2ᵀ D2``'s diagonal, first and second upper diagonals ``[3T - 3]`` (built once per device: no copy per call)."""
    D2 = difference_matrix(T, 2, dtype)
    Q = D2.T @ D2
    return torch.cat([Q.diagonal(), Q.diagonal(1), Q.diagonal(2)]).to(device)


def _velocity_form(T: int, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> Tensor:
    """``R = D1ᵀ D1`` on and above its diagonal ``[T(T+1)/2]``: ``Σ_t ||v_t||² = <R, Z Zᵀ>``."""
    D1 = difference_matrix(T, 1, dtype, device)
    return (D1.T @ D1).flatten().index_select(0, _pairs(T, D1.device).flat)


# --------------------------------------------------------------------------------------------
# The loss
# --------------------------------------------------------------------------------------------


def _loss_from_gram(
    gram: Tensor, forms: Tensor, velocity_form: Tensor, alpha: float, scale: Tensor | None = None
) -> GRWTerms:
    """Loss terms from window Gram matrices ``[W, T, T]`` and, on and above their diagonals, the ordering forms
    ``[P, T(T+1)/2]`` (:func:`upper_forms`) and ``D1ᵀD1 [T(T+1)/2]``.

    ``scale [W]``, if given, is the unit of each window's Gram matrix (the true Gram is ``scale · gram``); it is
    applied to the ``[W, P]`` logits in float64, where no finite float32 input can overflow.
    """
    W = len(gram)
    entries = upper(gram)  # [W, T(T+1)/2]: G is symmetric, so half of it (doubled off the diagonal) is all of it
    logits = -0.5 * entries @ forms.T  # [W, P]
    velocity = 0.5 * entries @ velocity_form  # [W]
    if scale is not None:
        wide = _wide_dtype(gram.device)
        logits, velocity = logits.to(wide) * scale[:, None], velocity.to(wide) * scale
    target = torch.zeros(W, dtype=torch.long, device=gram.device)  # the identity is ordering 0
    ordering = F.cross_entropy(logits, target)
    velocity = velocity.mean()
    terms = (ordering + alpha * velocity, ordering, velocity)
    return GRWTerms(*(term.to(gram.dtype) for term in terms))


def _compute_dtype(Z: Tensor) -> torch.dtype:
    return torch.promote_types(Z.dtype, torch.float32)  # float32 at least, float64 kept


def _wide_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64


def _gram(Z: Tensor, T: int) -> tuple[Tensor, Tensor]:
    """Gram matrices ``[B·C, T, T]`` of the windows of ``Z [B, N, K]``, and the unit ``[B·C]`` (float64) they are in.

    Each window is divided by a power of two ``2^e >= max |w|`` (exact), so the product can neither overflow nor
    underflow whatever the magnitude of ``Z``; the true Gram matrix is ``4^e`` times the one returned. Each window
    is centred over time: the forms annihilate constants (every row of D1 and D2 sums to zero), so centring is
    exact, and it removes the cancellation float32 would suffer when embeddings carry a large common offset.
    """
    w = windows(Z.to(_compute_dtype(Z)), T)
    exponent = torch.frexp(w.detach().abs().amax(dim=(1, 2)))[1]  # [W]: max |w| < 2^e (e = 0 for a zero window)
    w = w * torch.exp2(-exponent.to(w.dtype))[:, None, None]
    w = w - w.mean(dim=1, keepdim=True)
    return w @ w.transpose(1, 2), torch.exp2(2 * exponent.to(_wide_dtype(Z.device)))


def grw_loss(
    Z: Tensor,
    T: int,
    alpha: float = 0.5,
    *,
    max_perms: int = 1000,
    generator: torch.Generator | None = None,
    return_terms: bool = False,
    check_finite: bool = False,
) -> Tensor | GRWTerms:
    """GRW-smoothing loss of per-frame embeddings ``Z [B, N, K]`` with windows of ``T`` frames (vectorized).

    Returns the scalar mean over windows of ``ordering CE + alpha · scale``, in float32 (float64 for float64 input)
    even under autocast; ``return_terms=True`` gives :class:`GRWTerms`. Any finite ``Z`` gives finite logits (windows
    are rescaled by exact powers of two, the logits formed in float64), so the loss is never NaN from finite input;
    it is ``inf`` only where its value exceeds the dtype's range. ``check_finite=True`` raises a ValueError on
    NaN/inf in ``Z`` (a host sync on GPU; off by default, when such a ``Z`` gives a non-finite loss).
    """
    _check_settings(T, alpha, max_perms)
    _check_embeddings(Z, T, check_finite)
    perms = permutations(T, max_perms, generator, device=Z.device)
    dtype = _compute_dtype(Z)
    with torch.autocast(Z.device.type, enabled=False):
        forms = upper_forms(perms, dtype)
        gram, scale = _gram(Z, T)
        terms = _loss_from_gram(gram, forms, _velocity_form(T, dtype, Z.device), alpha, scale)
    return terms if return_terms else terms.loss


def grw_loss_reference(
    Z: Tensor,
    T: int,
    alpha: float = 0.5,
    *,
    max_perms: int = 1000,
    generator: torch.Generator | None = None,
    return_terms: bool = False,
    check_finite: bool = False,
) -> Tensor | GRWTerms:
    """The same loss as :func:`grw_loss`, materialized: permute every window ``[W, P, T, K]``, take second differences, sum.

    Memory grows as ``W·P·T·K``; use it to read and to check, not to train. The keywords are :func:`grw_loss`'s.
    """
    _check_settings(T, alpha, max_perms)
    _check_embeddings(Z, T, check_finite)
    perms = permutations(T, max_perms, generator, device=Z.device)
    with torch.autocast(Z.device.type, enabled=False):
        w = windows(Z.to(_compute_dtype(Z)), T)  # [W, T, K]
        permuted = w[:, perms]  # [W, P, T, K]
        accelerations = permuted.diff(n=2, dim=2)  # [W, P, T-2, K]
        logits = -0.5 * accelerations.pow(2).sum(dim=(2, 3))  # [W, P]
        target = torch.zeros(len(w), dtype=torch.long, device=Z.device)
        ordering = F.cross_entropy(logits, target)
        scale = 0.5 * w.diff(dim=1).pow(2).sum(dim=(1, 2)).mean()
    terms = GRWTerms(ordering + alpha * scale, ordering, scale)
    return terms if return_terms else terms.loss


class GRWLoss(nn.Module):
    """:func:`grw_loss` as a module; the ordering forms are buffers, so ``.to(device)`` moves them.

    For ``T > 7`` a fresh sample of orderings is drawn on every call, on ``Z``'s device with no host sync (from
    ``generator`` if given: see :func:`permutations`). ``check_finite=True`` rejects NaN/inf ``Z``, one sync a call.
    """

    def __init__(self, T: int, alpha: float = 0.5, max_perms: int = 1000, check_finite: bool = False) -> None:
        super().__init__()
        _check_settings(T, alpha, max_perms)
        self.T, self.alpha, self.max_perms, self.check_finite = T, alpha, max_perms, check_finite
        self.exhaustive = T <= EXHAUSTIVE_MAX_T or max_perms >= math.factorial(T - 1)
        with torch.inference_mode(False):  # buffers made under inference mode could not take part in training
            forms = (upper_forms(permutations(T, max_perms), torch.float32) if self.exhaustive
                     else torch.empty(0, T * (T + 1) // 2))
            self.register_buffer("forms", forms, persistent=False)  # [P, T(T+1)/2]
            self.register_buffer("velocity_form", _velocity_form(T, torch.float32), persistent=False)  # [T(T+1)/2]

    def extra_repr(self) -> str:
        return f"T={self.T}, alpha={self.alpha}, max_perms={self.max_perms}, check_finite={self.check_finite}"

    def forward(
        self, Z: Tensor, *, generator: torch.Generator | None = None, return_terms: bool = False
    ) -> Tensor | GRWTerms:
        """Loss of ``Z [B, N, K]``; see :func:`grw_loss`."""
        _check_embeddings(Z, self.T, self.check_finite)
        dtype = _compute_dtype(Z)
        with torch.autocast(Z.device.type, enabled=False):
            if self.exhaustive:
                forms = self.forms.to(dtype)
            else:
                forms = upper_forms(permutations(self.T, self.max_perms, generator, device=Z.device), dtype)
            gram, scale = _gram(Z, self.T)
            terms = _loss_from_gram(gram, forms, self.velocity_form.to(dtype), self.alpha, scale)
        return terms if return_terms else terms.loss
