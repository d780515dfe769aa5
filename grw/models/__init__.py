"""Video models: MoViNet backbones, small frame encoders and the GRW classifier head."""

from grw.models.heads import ClassifierOutput, FrameFeatures, GRWVideoClassifier, TemporalTransformerHead

__all__ = ["ClassifierOutput", "FrameFeatures", "GRWVideoClassifier", "TemporalTransformerHead"]
