"""keras_sovit: shape-optimized Vision Transformers for Keras 3.

`ShapeSpec` and the `scaling` package are pure Python and import no
framework; the other subpackages are imported lazily on first access so that
`import keras_sovit` stays cheap.
"""

import importlib

from keras_sovit.shapes import VARIANTS
from keras_sovit.shapes import ShapeSpec

__version__ = "0.1.0"

_SUBPACKAGES = (
    "layers",
    "models",
    "data",
    "training",
    "evaluation",
    "scaling",
    "tuner",
    "checkpoints",
)

__all__ = ["ShapeSpec", "VARIANTS", *_SUBPACKAGES]


def __getattr__(name):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"keras_sovit.{name}")
    raise AttributeError(f"module 'keras_sovit' has no attribute {name!r}")
