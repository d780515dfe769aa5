"""Video models: MoViNet backbones, small frame encoders and the GRW classifier head."""

from grw.contracts import ClassifierOutput
from grw.models.heads import FrameFeatures, GRWVideoClassifier, TemporalTransformerHead

__all__ = ["ClassifierOutput", "FrameFeatures", "GRWVideoClassifier", "TemporalTransformerHead"]
