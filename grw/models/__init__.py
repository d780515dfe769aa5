"""Video models: MoViNet backbones, small frame encoders and the GRW classifier head."""

from grw.models.heads import ClassifierOutput, GRWVideoClassifier, TemporalTransformerHead

__all__ = ["ClassifierOutput", "GRWVideoClassifier", "TemporalTransformerHead"]
