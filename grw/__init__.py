"""GRW-smoothing: a Gaussian-random-walk prior that makes per-frame video embeddings smooth in time."""

from grw.loss import GRWLoss, GRWTerms, grw_loss

__all__ = ["GRWLoss", "GRWTerms", "grw_loss"]
__version__ = "0.1.0"
