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
  ``G = Z Zᵀ`` the window's ``T×T`` Gram matrix and ``M_π = P_πᵀ D2ᵀ D2 P_π``, so all logits are one
  ``[W, T²] @ [T², P]`` product.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import NamedTuple

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
    if not math.isfinite(alpha):
        raise ValueError(f"alpha must be a finite number, got {alpha!r}")


def _check_embeddings(Z: Tensor, T: int) -> None:
    if not isinstance(Z, Tensor) or Z.ndim != 3:
        shape = tuple(Z.shape) if isinstance(Z, Tensor) else type(Z).__name__
        raise ValueError(f"Z must be a 3-D tensor [B, N, K] of per-frame embeddings, got {shape}")
    if not Z.is_floating_point():
        raise ValueError(f"Z must have a floating dtype, got {Z.dtype}")
    if Z.shape[1] < T:
        raise ValueError(f"Z has N={Z.shape[1]} frames, fewer than one window of T={T}: expected N >= T")
    if Z.shape[0] == 0 or Z.shape[2] == 0:
        raise ValueError(f"Z must have at least one clip and one channel, got shape {tuple(Z.shape)}")
    if not torch.isfinite(Z).all():
        raise ValueError("Z contains NaN or infinite values; expected finite embeddings")


def windows(Z: Tensor, T: int) -> Tensor:
    """Cut ``Z [B, N, K]`` into non-overlapping windows ``[B·C, T, K]``, ``C = N // T``; trailing frames are dropped."""
    B, N, K = Z.shape
    C = N // T
    return Z[:, : C * T].reshape(B * C, T, K)


# --------------------------------------------------------------------------------------------
# Orderings and the quadratic forms that score them
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _all_orderings(T: int) -> Tensor:
    rest = itertools.permutations(range(1, T))  # lexicographic: the identity comes first
    return torch.tensor([(0, *p) for p in rest], dtype=torch.long)


def permutations(T: int, max_perms: int = 1000, generator: torch.Generator | None = None) -> Tensor:
    """Orderings of a window ``[P, T]`` (long): frame 0 first, row 0 the identity.

    All ``(T-1)!`` orderings when ``T <= 7`` or when ``max_perms`` covers them all; otherwise the
    identity plus ``max_perms - 1`` distinct, non-identity random orderings drawn from ``generator``.
    """
    _check_settings(T, 0.0, max_perms)
    if T <= EXHAUSTIVE_MAX_T or max_perms >= math.factorial(T - 1):
        return _all_orderings(T).clone()
    identity = tuple(range(1, T))
    chosen: dict[tuple[int, ...], None] = {}  # insertion-ordered set
    while len(chosen) < max_perms - 1:
        draws = torch.rand(2 * max_perms, T - 1, generator=generator).argsort(dim=1) + 1
        for row in map(tuple, draws.tolist()):
            if row != identity:
                chosen.setdefault(row)
            if len(chosen) == max_perms - 1:
                break
    rows = [(0, *identity)] + [(0, *row) for row in chosen]
    return torch.tensor(rows, dtype=torch.long)


def difference_matrix(T: int, order: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """The ``[T - order, T]`` finite-difference matrix ``D`` with ``D @ z = z.diff(n=order)``."""
    return torch.eye(T, dtype=dtype).diff(n=order, dim=0)


def ordering_forms(perms: Tensor) -> Tensor:
    """``M_π = P_πᵀ D2ᵀ D2 P_π`` for each ordering ``[P, T]``: ``[P, T, T]``, so that ``Σ_t ||a^π_t||² = <M_π, Z Zᵀ>``."""
    T = perms.shape[1]
    D2 = difference_matrix(T, 2, dtype=torch.float64).to(perms.device)
    Q = D2.T @ D2  # [T, T]
    # (P_π z)_t = z_{π(t)}, hence (P_πᵀ Q P_π)[i, j] = Q[π⁻¹(i), π⁻¹(j)].
    inverse = perms.argsort(dim=1)
    return Q[inverse.unsqueeze(2), inverse.unsqueeze(1)]


def _velocity_form(T: int) -> Tensor:
    D1 = difference_matrix(T, 1)
    return D1.T @ D1  # Σ_t ||v_t||² = <D1ᵀD1, Z Zᵀ>


# --------------------------------------------------------------------------------------------
# The loss
# --------------------------------------------------------------------------------------------


def _loss_from_gram(gram: Tensor, forms: Tensor, velocity_form: Tensor, alpha: float) -> GRWTerms:
    """Loss terms from window Gram matrices ``[W, T, T]``, ordering forms ``[P, T, T]`` and ``D1ᵀD1 [T, T]``."""
    W, T, _ = gram.shape
    flat = gram.reshape(W, T * T)
    logits = -0.5 * flat @ forms.reshape(-1, T * T).T  # [W, P]
    target = torch.zeros(W, dtype=torch.long, device=gram.device)  # the identity is ordering 0
    ordering = F.cross_entropy(logits, target)
    scale = 0.5 * (flat @ velocity_form.reshape(T * T)).mean()
    return GRWTerms(ordering + alpha * scale, ordering, scale)


def _compute_dtype(Z: Tensor) -> torch.dtype:
    return torch.promote_types(Z.dtype, torch.float32)  # float32 at least, float64 kept


def _gram(Z: Tensor, T: int) -> Tensor:
    """Gram matrices ``[B·C, T, T]`` of the windows of ``Z [B, N, K]``, each centred over time first.

    The forms annihilate constants (every row of D1 and D2 sums to zero), so centring is exact; it
    removes the cancellation float32 would suffer when embeddings carry a large common offset.
    """
    w = windows(Z.to(_compute_dtype(Z)), T)
    w = w - w.mean(dim=1, keepdim=True)
    return w @ w.transpose(1, 2)


def grw_loss(
    Z: Tensor,
    T: int,
    alpha: float = 0.5,
    *,
    max_perms: int = 1000,
    generator: torch.Generator | None = None,
    return_terms: bool = False,
) -> Tensor | GRWTerms:
    """GRW-smoothing loss of per-frame embeddings ``Z [B, N, K]`` with windows of ``T`` frames (vectorized).

    Returns the scalar mean over windows of ``ordering CE + alpha · scale``, computed in float32 (or
    float64 for float64 input) even under autocast; ``return_terms=True`` gives :class:`GRWTerms`.
    """
    _check_settings(T, alpha, max_perms)
    _check_embeddings(Z, T)
    perms = permutations(T, max_perms, generator).to(Z.device)
    dtype = _compute_dtype(Z)
    with torch.autocast(Z.device.type, enabled=False):
        forms = ordering_forms(perms).to(dtype)
        terms = _loss_from_gram(_gram(Z, T), forms, _velocity_form(T).to(Z.device, dtype), alpha)
    return terms if return_terms else terms.loss


def grw_loss_reference(
    Z: Tensor,
    T: int,
    alpha: float = 0.5,
    *,
    max_perms: int = 1000,
    generator: torch.Generator | None = None,
    return_terms: bool = False,
) -> Tensor | GRWTerms:
    """The same loss as :func:`grw_loss`, materialized: permute every window ``[W, P, T, K]``, take second differences, sum.

    Memory grows as ``W·P·T·K``; use it to read and to check, not to train.
    """
    _check_settings(T, alpha, max_perms)
    _check_embeddings(Z, T)
    perms = permutations(T, max_perms, generator).to(Z.device)
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

    For ``T > 7`` a fresh sample of orderings is drawn on every call (from ``generator`` if given).
    """

    def __init__(self, T: int, alpha: float = 0.5, max_perms: int = 1000) -> None:
        super().__init__()
        _check_settings(T, alpha, max_perms)
        self.T, self.alpha, self.max_perms = T, alpha, max_perms
        self.exhaustive = T <= EXHAUSTIVE_MAX_T or max_perms >= math.factorial(T - 1)
        forms = ordering_forms(permutations(T, max_perms)) if self.exhaustive else torch.empty(0, T, T)
        self.register_buffer("forms", forms.float(), persistent=False)  # [P, T, T]
        self.register_buffer("velocity_form", _velocity_form(T).float(), persistent=False)  # [T, T]

    def extra_repr(self) -> str:
        return f"T={self.T}, alpha={self.alpha}, max_perms={self.max_perms}"

    def forward(
        self, Z: Tensor, *, generator: torch.Generator | None = None, return_terms: bool = False
    ) -> Tensor | GRWTerms:
        """Loss of ``Z [B, N, K]``; see :func:`grw_loss`."""
        _check_embeddings(Z, self.T)
        dtype = _compute_dtype(Z)
        with torch.autocast(Z.device.type, enabled=False):
            if self.exhaustive:
                forms = self.forms.to(dtype)
            else:
                perms = permutations(self.T, self.max_perms, generator).to(Z.device)
                forms = ordering_forms(perms).to(dtype)
            terms = _loss_from_gram(_gram(Z, self.T), forms, self.velocity_form.to(dtype), self.alpha)
        return terms if return_terms else terms.loss
