"""Offline tfds datasets and the tf.data input pipeline.

Importing this package registers the `animal_mnist` tfds builder.
"""

from keras_sovit.data.animal_mnist import AnimalMnist
from keras_sovit.data.datasets import default_data_dir
from keras_sovit.data.datasets import load
from keras_sovit.data.datasets import prepare
from keras_sovit.data.image_ops import inception_crop
from keras_sovit.data.pipeline import input_pipeline

__all__ = [
    "AnimalMnist",
    "default_data_dir",
    "inception_crop",
    "input_pipeline",
    "load",
    "prepare",
]
