"""`ShapeSearch`: a `keras_tuner.Tuner` built around a `ShapeOracle`."""

import inspect

import keras_tuner

from keras_sovit.tuner.shape_oracle import ShapeOracle


class ShapeSearch(keras_tuner.Tuner):
    """A `keras_tuner.Tuner` whose trials follow the SoViT scaling law.

    A thin convenience class: it builds a `ShapeOracle` from the oracle
    arguments and passes everything else to `keras_tuner.Tuner` (directory,
    project_name, overwrite, distribution_strategy, ...). After `search`,
    `tuner.oracle.proposal` is the compute-optimal shape for
    `target_compute` and `tuner.oracle.report()` says how it was found.

    Args:
        hypermodel: `keras_tuner.HyperModel`, e.g.
            `keras_sovit.tuner.SoViTHyperModel`. It must declare the
            oracle's hyperparameters.
        **kwargs: the arguments of `ShapeOracle` (`objective`,
            `target_compute`, the search's settings, `seed`, ...) build the
            oracle; the rest go to `keras_tuner.Tuner` (`directory`,
            `project_name`, `overwrite`, `distribution_strategy`, ...).

    Example:

    ```python
    tuner = keras_sovit.tuner.ShapeSearch(
        hypermodel=keras_sovit.tuner.SoViTHyperModel(
            num_classes=10, image_shape=(32, 32, 3)
        ),
        objective=keras_tuner.Objective("fewshot_10shot_error", "min"),
        target_compute=2e4,
        exponents={"width": 0.22, "depth": 0.45, "mlp_dim": 0.6},
        grid={"width": [16, 32, 48], "depth": [1, 2, 3],
              "mlp_dim": [32, 64, 96]},
        grid_budget=50.0,
        star_center=keras_sovit.ShapeSpec(64, 6, 256, 4, patch_size=4),
        image_size=32,
        directory="/tmp/shape_search",
        overwrite=True,
    )
    ```
    """

    def __init__(self, hypermodel=None, **kwargs):
        names = inspect.signature(ShapeOracle).parameters
        oracle = ShapeOracle(**{k: kwargs.pop(k) for k in list(kwargs)
                                if k in names})
        _check_same_images(oracle, hypermodel)
        super().__init__(oracle, hypermodel, **kwargs)


def _check_same_images(oracle, hypermodel):
    """The oracle budgets compute at the size the hypermodel trains at."""
    size = getattr(hypermodel, "image_size", None)
    if size is not None and tuple(size) != tuple(oracle.config.image_size):
        raise ValueError(
            "`image_size` must match the hypermodel's images, or trials "
            "would be budgeted for another image size. Received: "
            f"image_size={oracle.config.image_size}, hypermodel image size "
            f"{size}"
        )
