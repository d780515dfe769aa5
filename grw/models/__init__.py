"""Video models: MoViNet backbones, small frame encoders, the GRW classifier head and the authors' released models."""

from grw.contracts import ClassifierOutput
from grw.models.heads import FrameFeatures, GRWVideoClassifier, TemporalTransformerHead
from grw.models.snapshot import GRWSnapshot, HeadParams, load_grw_snapshot, read_grw_snapshot

__all__ = [
    "ClassifierOutput",
    "FrameFeatures",
    "GRWSnapshot",
    "GRWVideoClassifier",
    "HeadParams",
    "TemporalTransformerHead",
    "load_grw_snapshot",
    "read_grw_snapshot",
]
