"""`ShapeSearch`: a `keras_tuner.Tuner` built around a `ShapeOracle`."""

import keras_tuner

from keras_sovit.tuner.protocol import DEFAULT_PHASES
from keras_sovit.tuner.shape_oracle import ShapeOracle


class ShapeSearch(keras_tuner.Tuner):
    """A `keras_tuner.Tuner` whose trials follow the SoViT scaling law.

    A thin convenience class: it builds a `ShapeOracle` from the oracle
    arguments and passes everything else to `keras_tuner.Tuner` (directory,
    project_name, overwrite, distribution_strategy, ...). After `search`,
    `tuner.oracle.proposal` is the compute-optimal shape for
    `target_compute` and `tuner.oracle.star_fit_` the fitted law.

    Args:
        hypermodel: `keras_tuner.HyperModel`, e.g.
            `keras_sovit.tuner.SoViTHyperModel`. It must declare the
            oracle's hyperparameters.
        objective: `keras_tuner.Objective` or str. A loss-like metric to
            minimise, e.g. `keras_tuner.Objective("fewshot_10shot_error",
            "min")`.
        target_compute: float. GFLOPs of the final training run.
        star_center: `ShapeSpec`, dict, or `None`. Centre of the star sweep.
        star_grids: dict or `None`. Values per dimension below the centre.
        star_budgets: list of floats or `None`. Star-sweep budgets.
        grid: dict or `None`. Values per dimension of the grid sweep.
        grid_budget: float or `None`. Compute budget of the grid sweep.
        exponents: dict or `None`. Given, the star sweep is skipped.
        base_shape: `ShapeSpec`, dict, or `None`. Given with
            `base_compute`, the grid sweep is skipped.
        base_compute: float or `None`. The compute `base_shape` is optimal
            for.
        rounding: `keras_sovit.scaling.Rounding` or `None`.
        final_trials: tuple of `"proposal"` and/or `"control"`.
        proposal_method: `"paper"`, `"joint"` or `"auto"`.
        validation_trials: bool. Train the proposal's ±20% neighbours.
        validation_compute: float or `None`. Compute of those trials.
        image_size: int or `(height, width)`. Image size used for compute.
        n_bootstrap: int. Bootstrap resamples of the star-sweep fit.
        max_grid_extensions: int. Grid extensions allowed.
        phases: tuple of str. Registered phase names, in order.
        replicates: int. Seeds of every sweep trial.
        final_seeds: int. Seeds of every final trial.
        branch_budgets: bool or `None`. One run per trial for several
            budgets; `None`: when the hypermodel declares them.
        seed: int or `None`. Random seed.
        max_retries_per_trial: int. Retries of a crashed trial.
        max_consecutive_failed_trials: int. Failures in a row that abort.
        **kwargs: arguments of `keras_tuner.Tuner`.

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

    def __init__(
        self,
        hypermodel=None,
        objective=None,
        target_compute=None,
        star_center=None,
        star_grids=None,
        star_budgets=None,
        grid=None,
        grid_budget=None,
        exponents=None,
        base_shape=None,
        base_compute=None,
        rounding=None,
        final_trials=("proposal",),
        proposal_method="auto",
        validation_trials=False,
        validation_compute=None,
        image_size=224,
        n_bootstrap=200,
        max_grid_extensions=8,
        phases=DEFAULT_PHASES,
        replicates=1,
        final_seeds=1,
        branch_budgets=None,
        seed=None,
        max_retries_per_trial=0,
        max_consecutive_failed_trials=3,
        **kwargs,
    ):
        oracle = ShapeOracle(
            objective=objective,
            target_compute=target_compute,
            star_center=star_center,
            star_grids=star_grids,
            star_budgets=star_budgets,
            grid=grid,
            grid_budget=grid_budget,
            exponents=exponents,
            base_shape=base_shape,
            base_compute=base_compute,
            rounding=rounding,
            final_trials=final_trials,
            proposal_method=proposal_method,
            validation_trials=validation_trials,
            validation_compute=validation_compute,
            image_size=image_size,
            n_bootstrap=n_bootstrap,
            max_grid_extensions=max_grid_extensions,
            phases=phases,
            replicates=replicates,
            final_seeds=final_seeds,
            branch_budgets=branch_budgets,
            seed=seed,
            max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials,
        )
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
