"""Offline tfds datasets, the in-memory array pipeline and the tf.data
input pipeline.

Importing this package registers the `animal_mnist` tfds builder.
`ArrayPipeline`, `iterate_batches` and `animal_mnist_split` need no
TensorFlow; `input_pipeline` and `inception_crop` do: they load it on
first use (an `ImportError` says so where it is not installed).
"""

from keras_sovit.data.animal_mnist import AnimalMnist
from keras_sovit.data.animal_mnist import animal_mnist_split
from keras_sovit.data.arrays import ArrayPipeline
from keras_sovit.data.batches import iterate_batches
from keras_sovit.data.datasets import default_data_dir
from keras_sovit.data.datasets import load
from keras_sovit.data.datasets import prepare

_TF_NAMES = {
    "inception_crop": "keras_sovit.data.image_ops",
    "input_pipeline": "keras_sovit.data.pipeline",
}


def __getattr__(name):
    # The tf.data half loads TensorFlow: imported on first use, so the
    # array path (and JAX or torch processes) never pay for it.
    if name not in _TF_NAMES:
        raise AttributeError(f"module 'keras_sovit.data' has no {name!r}")
    import importlib

    try:
        module = importlib.import_module(_TF_NAMES[name])
    except ImportError as error:
        raise ImportError(
            f"keras_sovit.data.{name} needs TensorFlow ({error}); without "
            "it use keras_sovit.data.ArrayPipeline."
        ) from error
    return getattr(module, name)


__all__ = [
    "AnimalMnist",
    "ArrayPipeline",
    "animal_mnist_split",
    "default_data_dir",
    "inception_crop",
    "input_pipeline",
    "iterate_batches",
    "load",
    "prepare",
]
