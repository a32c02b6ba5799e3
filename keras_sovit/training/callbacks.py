"""Compute budgets in the paper's sense: examples seen x forward GFLOPs."""

import math

import keras

from keras_sovit._validation import check_positive_int
from keras_sovit._validation import check_positive_number

# Relative slack for the floor in `steps_for_budget`, so that a budget that
# is an exact multiple of one step's compute is not lost to float rounding.
_FLOOR_SLACK = 1e-9


def steps_for_budget(budget_gflops, gflops_per_example, batch_size):
    """Number of whole training steps that fit in a compute budget.

    `floor(budget_gflops / (gflops_per_example * batch_size))`, with a
    relative slack of 1e-9 so an exact multiple is not lost to float
    rounding. Compute follows the paper: examples seen times forward GFLOPs
    per example (no factor 3 for the backward pass).

    Args:
        budget_gflops: float. Compute budget in GFLOPs, positive.
        gflops_per_example: float. Forward GFLOPs of one example, e.g.
            `shape.gflops(image_size, num_classes)`.
        batch_size: int. Global batch size.

    Returns:
        A positive int.

    Example:

    ```python
    keras_sovit.training.steps_for_budget(1000.0, 0.5, 10)  # 200
    ```
    """
    steps = whole_steps(budget_gflops, gflops_per_example, batch_size)
    if steps < 1:
        raise ValueError(
            f"`budget_gflops`={budget_gflops} buys less than one step of "
            f"{batch_size} examples at {gflops_per_example} GFLOPs each "
            f"({gflops_per_example * batch_size} GFLOPs per step)."
        )
    return steps


def whole_steps(budget_gflops, gflops_per_example, batch_size):
    """The whole steps a budget buys, possibly 0 (`steps_for_budget`'s
    rule without its error: the one place the floor is taken)."""
    check_positive_number("budget_gflops", budget_gflops)
    check_positive_number("gflops_per_example", gflops_per_example)
    check_positive_int("batch_size", batch_size)
    ratio = budget_gflops / (gflops_per_example * batch_size)
    return math.floor(ratio * (1.0 + _FLOOR_SLACK))


@keras.saving.register_keras_serializable(package="keras_sovit")
class ExamplesSeen(keras.metrics.Metric):
    """Counts the examples of the current epoch (a metric that reads sizes).

    Keras 3 batch logs do not carry the batch size. Compiling this metric
    puts the running count of the epoch's examples into the logs (under its
    name, `"epoch_examples"` by default), from which `ComputeBudget` counts
    exactly, partial batches included. `compile_for_pretraining` adds it.

    Args:
        name: str. Metric name. Defaults to `"epoch_examples"`.
        **kwargs: Passed to `keras.metrics.Metric`.

    Example:

    ```python
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(
        optimizer="adam",
        loss="mse",
        metrics=[keras_sovit.training.ExamplesSeen()],
    )
    history = model.fit(np.ones((10, 4)), np.ones((10, 1)), batch_size=4)
    history.history["epoch_examples"]  # [10.0]
    ```
    """

    def __init__(self, name="epoch_examples", **kwargs):
        super().__init__(name=name, **kwargs)
        self.count = self.add_variable(
            shape=(),
            initializer="zeros",
            dtype="float32",
            aggregation="sum",
            name="count",
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        size = keras.ops.shape(y_pred)[0]
        self.count.assign_add(keras.ops.cast(size, "float32"))

    def result(self):
        return keras.ops.convert_to_tensor(self.count)


class ComputeBudget(keras.callbacks.Callback):
    """Stops training at a compute budget and evaluates at checkpoints.

    Compute is measured as in the paper: examples seen times the model's
    forward GFLOPs per example (`ShapeSpec.gflops`, no factor 3 for the
    backward pass). After every training batch the callback updates the
    count and sets `model.stop_training` as soon as one more batch would
    exceed the budget. With a fixed batch size this runs exactly
    `steps_for_budget(budget_gflops, gflops_per_example, batch_size)` steps,
    i.e. `floor(budget / (gflops_per_example * batch_size))`; the compute
    actually spent is at most one batch below the budget.

    The batch size comes from `batch_size` when given (every step is
    counted as a full batch; the global batch size under a distribution
    strategy). Otherwise the model must be compiled with the
    `keras_sovit.training.ExamplesSeen` metric (as `compile_for_pretraining`
    does), whose running count is read from the batch logs; then partial
    batches count exactly and the next batch is assumed as large as the
    last one. With `steps_per_execution > 1` Keras calls the batch hooks
    once per execution, so the count stays exact but training can only
    stop at an execution boundary.

    Every epoch's logs get `compute_gflops` and `examples_seen` (totals
    since the start of `fit`). For each compute value in `checkpoints`, the
    first batch end at or past it (or the final batch when training stops
    for the budget) calls `evaluator.evaluate(model)` for every evaluator
    and appends `{"compute_gflops", "examples_seen", **metrics}` to
    `self.history`; those metrics also go into that epoch's logs.

    Args:
        budget_gflops: float. Compute budget in GFLOPs, positive.
        gflops_per_example: float. Forward GFLOPs per example, positive.
        checkpoints: tuple of floats. Compute values (GFLOPs, within the
            budget) at which to run the evaluators. Defaults to `()`.
        evaluators: tuple of objects with `evaluate(model) -> dict`, such as
            `keras_sovit.evaluation.FewShotEvaluator`. Defaults to `()`.
        batch_size: int or `None`. Global batch size. Defaults to `None`
            (read from the `ExamplesSeen` metric).
        examples_key: str. Log key of the `ExamplesSeen` metric. Defaults to
            `"epoch_examples"`.

    Example:

    ```python
    shape = keras_sovit.ShapeSpec(32, 2, 64, 2, patch_size=4)
    gflops = shape.gflops(16, num_classes=10)
    budget = keras_sovit.training.ComputeBudget(
        budget_gflops=100 * gflops,  # 100 examples: 6 steps of 16
        gflops_per_example=gflops,
        batch_size=16,
    )
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(10)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.ones((64, 4)), np.ones((64, 10))
    model.fit(x, y, batch_size=16, epochs=10, callbacks=[budget])
    budget.examples_seen  # 96
    ```
    """

    def __init__(
        self,
        budget_gflops,
        gflops_per_example,
        checkpoints=(),
        evaluators=(),
        batch_size=None,
        examples_key="epoch_examples",
    ):
        super().__init__()
        check_positive_number("budget_gflops", budget_gflops)
        check_positive_number("gflops_per_example", gflops_per_example)
        if batch_size is not None:
            steps_for_budget(budget_gflops, gflops_per_example, batch_size)
        for value in checkpoints:
            check_positive_number("checkpoints", value)
            if value > budget_gflops:
                raise ValueError(
                    f"`checkpoints` must lie within the budget "
                    f"({budget_gflops} GFLOPs). Received: {value}"
                )
        for evaluator in evaluators:
            if not callable(getattr(evaluator, "evaluate", None)):
                raise ValueError(
                    "`evaluators` must have an `evaluate(model)` method. "
                    f"Received: {evaluator!r}"
                )
        self.budget_gflops = float(budget_gflops)
        self.gflops_per_example = float(gflops_per_example)
        self.checkpoints = tuple(sorted(float(c) for c in checkpoints))
        self.evaluators = tuple(evaluators)
        self.batch_size = batch_size
        self.examples_key = examples_key
        self._reset()

    def _reset(self):
        self.examples_seen = 0
        self.history = []
        self.reached_budget = False
        self._epoch_start_examples = 0
        self._pending = list(self.checkpoints)
        self._epoch_records = {}

    @property
    def compute_gflops(self):
        return self.examples_seen * self.gflops_per_example

    @property
    def budget_examples(self):
        """Examples that fit in the budget (float)."""
        return self.budget_gflops / self.gflops_per_example

    def on_train_begin(self, logs=None):
        self._reset()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start_examples = self.examples_seen
        self._epoch_records = {}

    def _examples_in_epoch(self, batch, logs):
        if self.batch_size is not None:
            return (batch + 1) * self.batch_size
        if not logs or self.examples_key not in logs:
            raise ValueError(
                "ComputeBudget cannot see the batch size: pass "
                "`batch_size=...` or compile the model with "
                "`keras_sovit.training.ExamplesSeen()` as a metric (log key "
                f"{self.examples_key!r})."
            )
        return int(round(float(logs[self.examples_key])))

    def on_train_batch_end(self, batch, logs=None):
        total = self._epoch_start_examples + self._examples_in_epoch(
            batch, logs
        )
        step_size = max(total - self.examples_seen, 1)
        self.examples_seen = total
        slack = self.budget_examples * (1.0 + 1e-9)
        stop = total + step_size > slack
        while self._pending and (
            stop or self.compute_gflops >= self._pending[0] * (1 - 1e-9)
        ):
            self._pending.pop(0)
            self._run_evaluators()
        if stop:
            self.reached_budget = True
            self.model.stop_training = True

    def _run_evaluators(self):
        record = {
            "compute_gflops": self.compute_gflops,
            "examples_seen": self.examples_seen,
        }
        if self.history and self.history[-1]["examples_seen"] == (
            self.examples_seen
        ):
            return  # Two checkpoints within one batch: evaluate once.
        for evaluator in self.evaluators:
            record.update(evaluator.evaluate(self.model))
        self.history.append(record)
        self._epoch_records.update(record)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        logs.update(
            {
                key: value
                for key, value in self._epoch_records.items()
                if key not in ("compute_gflops", "examples_seen")
            }
        )
        logs["compute_gflops"] = self.compute_gflops
        logs["examples_seen"] = self.examples_seen
