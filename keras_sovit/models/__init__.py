"""SoViT models: the backbone and the image classifier, and presets."""

from keras_sovit.models.sovit_backbone import SoViTBackbone
from keras_sovit.models.sovit_classifier import SoViTClassifier
from keras_sovit.models.sovit_presets import SOVIT_PRESETS

# keras-hub style: the preset table, as data, on the classes that use it.
SoViTBackbone.presets = SOVIT_PRESETS
SoViTClassifier.presets = SOVIT_PRESETS

__all__ = ["SOVIT_PRESETS", "SoViTBackbone", "SoViTClassifier"]
