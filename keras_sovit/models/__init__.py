"""SoViT models: the backbone and the image classifier."""

from keras_sovit.models.sovit_backbone import SoViTBackbone
from keras_sovit.models.sovit_classifier import SoViTClassifier

__all__ = ["SoViTBackbone", "SoViTClassifier"]
