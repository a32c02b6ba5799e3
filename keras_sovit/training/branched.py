"""Several compute budgets from one run, each cooled down (`BranchedRun`).

A sweep needs the value of a shape at several budgets. Training a separate
run per budget repeats the common start of every run; reading the value of
one long run at intermediate points measures a model whose learning rate has
not decayed (mid-schedule values are worse than finished runs and bias a
fit). `BranchedRun` does what Hägele et al. (2024, arXiv 2405.18392) do with
a constant or rsqrt learning rate: one main run follows the schedule's main
phase (warmup and rsqrt decay, no cooldown), and for each budget a branch
copies the weights and optimizer state at the branch point, cools the
learning rate down linearly to 0, is evaluated and is discarded while the
main run continues from the copy.

Compute, in the paper's units (examples seen x forward GFLOPs per example):

- budget `B_i` buys `S_i = steps_for_budget(B_i, gflops_per_example,
  batch_size)` steps; its cooldown is `C_i = max(1, round(f * S_i))` steps
  (`f` the cooldown fraction) and its branch point `P_i = S_i - C_i`;
- a branched point counts `S_i * batch_size * gflops_per_example` GFLOPs
  (`compute_gflops`): the main run's `P_i` steps plus its own `C_i` steps,
  exactly what an independent run of `S_i` steps with a `C_i`-step cooldown
  trains, and at most one step below `B_i`;
- the run is charged for everything it trained (`charged_gflops`): the main
  run up to the last branch point plus every cooldown,
  `(max_i P_i + sum_i C_i) * batch_size * gflops_per_example`.

Every record is measured at the end of its cooldown and has
`cooled = True`; with `cooldown_fraction=0` the values are read from the
main run at `S_i` and flagged `cooled = False` (never fit those as finished
runs).

Mechanics: training runs step by step through `model.train_on_batch`, so
the compiled train step is built once and reused by the main run and every
branch (`train_traces` counts how often it was traced). The cooldown is
switched on and off through optimizer variables
(`AdamWDecayMults.set_cooldown` / `BigVisionAdafactor.set_cooldown`), which
JAX passes to the jitted step with the rest of the optimizer state. Batches
come from one persistent iterator; the batches a branch trains on are kept
and replayed to the main run, which therefore sees exactly the batches of a
run without branches. A `tf.data.Dataset` is iterated with tf.data's
autotuner off unless its options set `autotune.enabled`: with it on,
destroying the iterator at the end of a run waited up to 18 s for the
autotuner's thread (TensorFlow 2.21; benchmarks/iterator_teardown.py).
"""

import contextlib
import time

import keras
import numpy as np

from keras_sovit._feature_cache import feature_cache
from keras_sovit._validation import check_positive_int
from keras_sovit._validation import check_positive_number
from keras_sovit._validation import check_rate
from keras_sovit.data.batches import iterate_batches
from keras_sovit.data.batches import without_autotune  # noqa: F401 (public here too)
from keras_sovit.training.callbacks import steps_for_budget
from keras_sovit.training.schedules import RsqrtSchedule


def branch_plan(budgets_gflops, gflops_per_example, batch_size,
                cooldown_fraction=0.2):
    """Steps, branch points and compute of a branched run, without training.

    Args:
        budgets_gflops: sequence of floats. Budgets in GFLOPs, ascending.
        gflops_per_example: float. Forward GFLOPs per example.
        batch_size: int. Global batch size.
        cooldown_fraction: float in [0, 1). Cooldown length as a fraction
            of each budget's steps. Defaults to `0.2`.

    Returns:
        A dict with `"branches"` (one dict per budget: `budget_gflops`,
        `steps`, `branch_step`, `cooldown_steps`, `compute_gflops`,
        `examples_seen`, `cooled`), `"main_steps"` (steps of the main run),
        `"charged_steps"` and `"charged_gflops"`.

    Example:

    ```python
    plan = keras_sovit.training.branch_plan(
        [100.0, 200.0, 400.0], gflops_per_example=0.5, batch_size=10
    )
    [b["steps"] for b in plan["branches"]]  # [20, 40, 80]
    plan["charged_steps"]  # 64 main steps + 4 + 8 + 16 cooldown = 92
    ```
    """
    budgets = _check_budgets(budgets_gflops)
    check_positive_number("gflops_per_example", gflops_per_example)
    check_positive_int("batch_size", batch_size)
    fraction = check_rate("cooldown_fraction", cooldown_fraction)
    branches = []
    for budget in budgets:
        steps = steps_for_budget(budget, gflops_per_example, batch_size)
        cooldown = max(1, round(fraction * steps)) if fraction else 0
        examples = steps * batch_size
        branches.append({
            "budget_gflops": budget,
            "steps": steps,
            "branch_step": steps - cooldown,
            "cooldown_steps": cooldown,
            "examples_seen": examples,
            "compute_gflops": examples * gflops_per_example,
            "cooled": cooldown > 0,
        })
    _check_distinct(branches)
    main = max(b["branch_step"] for b in branches)
    charged = main + sum(b["cooldown_steps"] for b in branches)
    return {
        "branches": branches,
        "main_steps": main,
        "charged_steps": charged,
        "charged_gflops": charged * batch_size * gflops_per_example,
    }


def _check_budgets(budgets):
    try:
        budgets = [float(b) for b in budgets]
    except (TypeError, ValueError):
        raise ValueError(
            "`budgets_gflops` must be a sequence of positive numbers. "
            f"Received: budgets_gflops={budgets!r}"
        ) from None
    if not budgets:
        raise ValueError("`budgets_gflops` must not be empty. Received: []")
    for budget in budgets:
        check_positive_number("budgets_gflops", budget)
    if budgets != sorted(budgets):
        raise ValueError(
            "`budgets_gflops` must be ascending. Received: "
            f"budgets_gflops={budgets}"
        )
    return budgets


def _check_distinct(branches):
    steps = [b["steps"] for b in branches]
    if len(set(steps)) != len(steps):
        raise ValueError(
            "Two budgets buy the same number of steps "
            f"({steps}); pass budgets at least one step apart. Received: "
            f"budgets_gflops={[b['budget_gflops'] for b in branches]}"
        )


class _BatchStream:
    """Batches of one iterator by position, kept while still needed.

    `get(position)` pulls from the iterator up to `position`; `release(
    position)` forgets every batch before it. A branch reads ahead of the
    main run and the main run later reads the same positions again.
    """

    def __init__(self, iterator):
        self._iterator = iterator
        self._first = 0  # position of self._kept[0]
        self._kept = []

    def get(self, position):
        if position < self._first:
            raise ValueError(f"Batch {position} was already released.")
        while position >= self._first + len(self._kept):
            try:
                self._kept.append(next(self._iterator))
            except StopIteration:
                raise ValueError(
                    "The training data ran out after "
                    f"{self._first + len(self._kept)} batches; pass a "
                    "repeating dataset (e.g. input_pipeline(..., "
                    "training=True))."
                ) from None
        return self._kept[position - self._first]

    def release(self, position):
        drop = min(max(position - self._first, 0), len(self._kept))
        del self._kept[:drop]
        self._first += drop

    @property
    def kept(self):
        return len(self._kept)


def strategy_scope(model):
    """The model's `tf.distribute` strategy scope (TensorFlow), if any."""
    strategy = getattr(model, "distribute_strategy", None)
    if strategy is None:
        return contextlib.nullcontext()
    return strategy.scope()


def build_optimizer(model):
    """Builds the model's optimizer for its trainable variables (in the
    model's strategy scope), unless it is built already."""
    if not model.optimizer.built:
        with strategy_scope(model):
            model.optimizer.build(model.trainable_variables)


def _values(variables):
    return [np.array(keras.ops.convert_to_numpy(v)) for v in variables]


def _check_optimizer(optimizer, main_steps):
    if not callable(getattr(optimizer, "set_cooldown", None)):
        raise ValueError(
            "BranchedRun needs an optimizer with `set_cooldown` "
            "(keras_sovit.training.AdamWDecayMults or BigVisionAdafactor, "
            "as compile_for_pretraining makes). Received: "
            f"{type(optimizer).__name__}"
        )
    schedule = getattr(optimizer, "_learning_rate", None)
    if isinstance(schedule, RsqrtSchedule) and schedule.cooldown_steps:
        raise ValueError(
            "The optimizer's RsqrtSchedule has its own cooldown "
            f"(cooldown_steps={schedule.cooldown_steps}); a branched run "
            "follows the main phase only: compile with cooldown_steps=0."
        )
    if isinstance(schedule, RsqrtSchedule) and (
        schedule.total_steps < main_steps
    ):
        raise ValueError(
            f"The schedule ends at total_steps={schedule.total_steps}, "
            f"before the run's {main_steps} main steps."
        )


class BranchedRun:
    """Trains one run and evaluates a cooled-down branch at each budget.

    See the module docstring for the procedure and the exact compute
    accounting. The model must be compiled (e.g. with
    `keras_sovit.training.compile_for_pretraining(..., cooldown_steps=0)`)
    with one of keras_sovit's optimizers and must not have trained yet.

    Args:
        model: a compiled, untrained `keras.Model`.
        data: a repeating, batched `tf.data.Dataset` of `(images, labels)`,
            or any iterable of such batches, with batches of `batch_size`.
            A dataset is iterated with tf.data's autotuner off unless its
            options set `autotune.enabled` (see `without_autotune`).
        budgets_gflops: sequence of floats. Budgets in GFLOPs, ascending.
        gflops_per_example: float. Forward GFLOPs per example.
        batch_size: int. Global batch size of `data`.
        cooldown_fraction: float in [0, 1). Defaults to `0.2`.
        evaluators: objects with `evaluate(model) -> dict`, such as
            `keras_sovit.evaluation.ValidationEvaluator`. Defaults to `()`.
        callbacks: Keras callbacks. Each budget is one "epoch": after its
            evaluation `on_epoch_end(i, logs)` runs on the cooled branch's
            weights, with the record as logs (KerasTuner's best-epoch
            checkpointing then saves the best cooled branch). Batch-level
            hooks are not called. Defaults to `()`.
        uncooled_evaluators: evaluators also run on the main run at each
            branch point, before its cooldown, into `uncooled_records`
            (flagged `cooled = False`, compute of the branch point): the
            mid-schedule values, for comparison only. Defaults to `()`.

    After `run`, the model holds the cooled branch of the last budget (the
    model a single run of that budget would give).

    Attributes (after `run`):
        records: the list `run` returned.
        uncooled_records: list. One record per budget when
            `uncooled_evaluators` are given.
        charged_gflops: float. Compute the run trained in all.
        train_traces: int or `None`. Python executions of the model's
            `train_step` during the run: the number of traces (compiles)
            when the step is compiled (TensorFlow graphs, JAX `jit`), the
            number of steps when it runs eagerly (torch, or
            `jit_compile=False` on JAX); `None` if the model already had a
            train function.
        train_seconds, eval_seconds: wall time training and evaluating.
        first_step_seconds: float. Wall time of the first train step,
            which includes tracing and compiling it when the model had no
            train function yet.

    Example:

    ```python
    import numpy as np
    import tensorflow as tf
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(inputs))
    keras_sovit.training.compile_for_pretraining(
        model, total_steps=40, preset="small", cooldown_steps=0
    )
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = np.eye(3, dtype="float32")[np.arange(64) % 3]
    data = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(8)
    run = keras_sovit.training.BranchedRun(
        model, data, budgets_gflops=[80.0, 160.0, 320.0],
        gflops_per_example=1.0, batch_size=8,
    )
    records = run.run()  # one per budget, each with "cooled": True
    [r["steps"] for r in records], run.charged_gflops  # [10, 20, 40], 368
    ```
    """

    def __init__(
        self,
        model,
        data,
        budgets_gflops,
        gflops_per_example,
        batch_size,
        cooldown_fraction=0.2,
        evaluators=(),
        callbacks=(),
        uncooled_evaluators=(),
    ):
        self.plan = branch_plan(
            budgets_gflops, gflops_per_example, batch_size, cooldown_fraction
        )
        for evaluator in (*evaluators, *uncooled_evaluators):
            if not callable(getattr(evaluator, "evaluate", None)):
                raise ValueError(
                    "`evaluators` must have an `evaluate(model)` method. "
                    f"Received: {evaluator!r}"
                )
        if getattr(model, "optimizer", None) is None:
            raise ValueError("`model` must be compiled before BranchedRun.")
        _check_optimizer(model.optimizer, self.plan["main_steps"])
        self.model = model
        self.data = data
        self.batch_size = batch_size
        self.gflops_per_example = float(gflops_per_example)
        self.evaluators = tuple(evaluators)
        self.uncooled_evaluators = tuple(uncooled_evaluators)
        self.callbacks = list(callbacks or ())
        self.records = []
        self.uncooled_records = []
        self.charged_gflops = 0.0
        self.train_traces = None
        self.train_seconds = 0.0
        self.first_step_seconds = None
        self.eval_seconds = 0.0

    def run(self):
        """Trains and returns one record (a dict) per budget.

        A record holds `budget_gflops`, `compute_gflops`, `examples_seen`,
        `steps`, `branch_step`, `cooldown_steps`, `cooled` and every
        evaluator's metrics.
        """
        model, optimizer = self.model, self.model.optimizer
        if int(keras.ops.convert_to_numpy(optimizer.iterations)) != 0:
            raise ValueError(
                "`model` has already trained "
                f"({int(optimizer.iterations)} optimizer steps); "
                "BranchedRun needs a fresh model."
            )
        build_optimizer(model)
        optimizer.clear_cooldown()
        counter = self._count_traces()
        stream = _BatchStream(iterate_batches(self.data))
        callbacks = keras.callbacks.CallbackList(
            self.callbacks, model=model, add_history=False,
            add_progbar=False,
        )
        callbacks.on_train_begin()
        position = 0
        for index, branch in enumerate(self.plan["branches"]):
            callbacks.on_epoch_begin(index)
            position = self._train(
                stream, position, branch["branch_step"], release=True
            )
            if self.uncooled_evaluators:
                self.uncooled_records.append(self._uncooled(branch))
            record = self._branch(stream, branch)
            self.records.append(record)
            callbacks.on_epoch_end(index, dict(record))
            last = index == len(self.plan["branches"]) - 1
            if branch["cooldown_steps"] and not last:
                self._restore()
        callbacks.on_train_end()
        self.charged_gflops = self.plan["charged_gflops"]
        self.train_traces = None if counter is None else counter[0]
        self._uncount(counter)
        return self.records

    def _train(self, stream, start, stop, release):
        begin = time.perf_counter()
        for position in range(start, stop):
            x, y = stream.get(position)
            step_begin = time.perf_counter()
            self.model.train_on_batch(x, y)
            if self.first_step_seconds is None:
                self.first_step_seconds = time.perf_counter() - step_begin
            if release:
                stream.release(position + 1)
        self.train_seconds += time.perf_counter() - begin
        return stop

    def _branch(self, stream, branch):
        optimizer = self.model.optimizer
        start, length = branch["branch_step"], branch["cooldown_steps"]
        if length:
            self._snapshot = (
                _values(self.model.variables), _values(optimizer.variables)
            )
            optimizer.set_cooldown(start, length)
            self._train(stream, start, start + length, release=False)
            optimizer.clear_cooldown()
        record = dict(branch)
        record.update(self._evaluate(self.evaluators))
        return record

    def _uncooled(self, branch):
        """The main run at a branch point, flagged un-cooled."""
        steps = branch["branch_step"]
        examples = steps * self.batch_size
        record = {
            "budget_gflops": branch["budget_gflops"],
            "steps": steps,
            "branch_step": steps,
            "cooldown_steps": 0,
            "examples_seen": examples,
            "compute_gflops": examples * self.gflops_per_example,
            "cooled": False,
        }
        record.update(self._evaluate(self.uncooled_evaluators))
        return record

    def _evaluate(self, evaluators):
        begin = time.perf_counter()
        metrics = {}
        with feature_cache():
            for evaluator in evaluators:
                metrics.update(evaluator.evaluate(self.model))
        self.eval_seconds += time.perf_counter() - begin
        return metrics

    def _restore(self):
        weights, state = self._snapshot
        for variable, value in zip(self.model.variables, weights):
            variable.assign(value)
        for variable, value in zip(self.model.optimizer.variables, state):
            variable.assign(value)
        self._snapshot = None

    def _count_traces(self):
        """Counts Python executions of `train_step` (= traces on TF/JAX)."""
        if getattr(self.model, "train_function", None) is not None:
            return None
        counter = [0]
        original = self.model.train_step

        def train_step(*args, **kwargs):
            counter[0] += 1
            return original(*args, **kwargs)

        self.model.train_step = train_step
        return counter

    def _uncount(self, counter):
        if counter is not None:
            # The compiled train function keeps the wrapper it traced.
            self.model.__dict__.pop("train_step", None)
