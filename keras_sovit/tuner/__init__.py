"""KerasTuner integration: the shape oracle and the SoViT hypermodel."""

from keras_sovit.tuner.hypermodel import SoViTHyperModel
from keras_sovit.tuner.shape_oracle import ShapeOracle
from keras_sovit.tuner.shape_oracle import ShapeSearch
from keras_sovit.tuner.shape_oracle import checkpoint_metric_name
from keras_sovit.tuner.shape_oracle import default_plan

__all__ = [
    "ShapeOracle",
    "ShapeSearch",
    "SoViTHyperModel",
    "checkpoint_metric_name",
    "default_plan",
]
