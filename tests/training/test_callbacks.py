import keras
import numpy as np
import pytest

from keras_sovit.evaluation import FewShotEvaluator
from keras_sovit.training import ComputeBudget
from keras_sovit.training import ExamplesSeen
from keras_sovit.training import steps_for_budget


def tiny_model(metrics=()):
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(3, name="head")(inputs)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01),
        loss="sparse_categorical_crossentropy",
        metrics=list(metrics),
    )
    return model


def data(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)).astype("float32"), np.arange(n) % 3


class IterationsEvaluator:
    """Reports the optimizer step count the model has at evaluation time."""

    def evaluate(self, model):
        return {"iters": int(keras.ops.convert_to_numpy(
            model.optimizer.iterations
        ))}


def test_steps_for_budget():
    assert steps_for_budget(1000.0, 0.5, 10) == 200
    assert steps_for_budget(1000.0, 0.5, 11) == 181  # floor(181.8)
    # 0.1 * 3 is not exactly representable; the exact multiple still counts.
    assert steps_for_budget(0.3 * 7, 0.1, 3) == 7
    with pytest.raises(ValueError, match="budget_gflops"):
        steps_for_budget(0.0, 0.5, 10)
    with pytest.raises(ValueError, match="budget_gflops"):
        steps_for_budget(4.0, 0.5, 10)  # less than one step
    with pytest.raises(ValueError, match="gflops_per_example"):
        steps_for_budget(1.0, -1.0, 10)
    with pytest.raises(ValueError, match="batch_size"):
        steps_for_budget(1.0, 1.0, 0)


def test_stops_exactly_at_budget_with_batch_size():
    x, y = data(100)
    model = tiny_model()
    budget = ComputeBudget(137.0, 0.5, batch_size=10)
    history = model.fit(
        x, y, batch_size=10, epochs=10, verbose=0, callbacks=[budget]
    )
    # floor(137 / (0.5 * 10)) = 27 steps = 270 examples = 135 GFLOPs.
    assert int(model.optimizer.iterations) == 27
    assert steps_for_budget(137.0, 0.5, 10) == 27
    assert budget.examples_seen == 270
    assert budget.reached_budget
    assert history.history["examples_seen"] == [100, 200, 270]
    assert history.history["compute_gflops"] == [50.0, 100.0, 135.0]


def test_counts_partial_batches_through_metric():
    x, y = data(95)  # 9 full batches and one of 5 per epoch
    model = tiny_model(metrics=[ExamplesSeen()])
    budget = ComputeBudget(250.0, 1.0)
    history = model.fit(
        x, y, batch_size=10, epochs=10, verbose=0, callbacks=[budget]
    )
    # 95 + 95 + 6 batches of 10 = 250 examples, exactly the budget.
    assert history.history["examples_seen"] == [95, 190, 250]
    assert int(model.optimizer.iterations) == 26
    assert history.history["compute_gflops"][-1] == 250.0


def test_checkpoints_fire_evaluators():
    x, y = data(100)
    model = tiny_model()
    budget = ComputeBudget(
        137.0,
        0.5,
        checkpoints=(137.0, 60.0),
        evaluators=[IterationsEvaluator()],
        batch_size=10,
    )
    history = model.fit(
        x, y, batch_size=10, epochs=10, verbose=0, callbacks=[budget]
    )
    assert budget.history == [
        {"compute_gflops": 60.0, "examples_seen": 120, "iters": 12},
        {"compute_gflops": 135.0, "examples_seen": 270, "iters": 27},
    ]
    assert history.history["iters"] == [12, 27]  # epochs 2 and 3


def test_fewshot_evaluator_at_checkpoint():
    x, y = data(60)
    inputs = keras.Input((4,))
    features = keras.layers.Dense(8, name="features")(inputs)
    outputs = keras.layers.Dense(3, name="head")(features)
    model = keras.Model(inputs, outputs)
    model.backbone = keras.Model(inputs, features)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    evaluator = FewShotEvaluator((x[:30], y[:30]), (x[30:], y[30:]), shots=(5,))
    budget = ComputeBudget(
        90.0, 1.0, checkpoints=(30.0,), evaluators=[evaluator], batch_size=15
    )
    model.fit(x, y, batch_size=15, epochs=5, verbose=0, callbacks=[budget])
    assert [r["examples_seen"] for r in budget.history] == [30]
    assert 0.0 <= budget.history[0]["fewshot_5shot_error"] <= 1.0
    assert budget.examples_seen == 90


def test_bad_inputs():
    with pytest.raises(ValueError, match="budget_gflops"):
        ComputeBudget(0.0, 1.0)
    with pytest.raises(ValueError, match="budget_gflops"):
        ComputeBudget(-5.0, 1.0)
    with pytest.raises(ValueError, match="gflops_per_example"):
        ComputeBudget(5.0, 0.0)
    with pytest.raises(ValueError, match="checkpoints"):
        ComputeBudget(5.0, 1.0, checkpoints=(6.0,))
    with pytest.raises(ValueError, match="evaluators"):
        ComputeBudget(5.0, 1.0, evaluators=[object()])
    with pytest.raises(ValueError, match="budget_gflops"):
        ComputeBudget(5.0, 1.0, batch_size=10)
    x, y = data(20)
    with pytest.raises(ValueError, match="batch_size"):
        tiny_model().fit(
            x, y, batch_size=10, verbose=0, callbacks=[ComputeBudget(50.0, 1.0)]
        )
