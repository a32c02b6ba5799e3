"""BranchedRun: cooled budgets from one run, exact compute accounting."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_sovit.training import BranchedRun
from keras_sovit.training import branch_plan
from keras_sovit.training import compile_for_pretraining

SCHEDULE = dict(warmup_steps=4, timescale=4)
BUDGETS = [80.0, 160.0, 320.0]  # 10, 20, 40 steps of 8 examples


def dataset():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = np.eye(3, dtype="float32")[np.argmax(x[:, :3], 1)]
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    return ds.shuffle(64, seed=1).repeat().batch(8)


def model(total_steps, cooldown_steps, optimizer="adamw"):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, activation="gelu", name="f")(inputs)
    outputs = keras.layers.Dense(3, name="head")(hidden)
    net = keras.Model(inputs, outputs)
    compile_for_pretraining(
        net, total_steps=total_steps, preset="small", optimizer=optimizer,
        cooldown_steps=cooldown_steps, **SCHEDULE,
    )
    return net


def weights(net):
    return [keras.ops.convert_to_numpy(v) for v in net.trainable_variables]


class Weights:
    """An evaluator that reports a copy of the weights it is shown."""

    def __init__(self):
        self.seen = []

    def evaluate(self, net):
        self.seen.append(weights(net))
        return {"weight_sum": float(sum(w.sum() for w in self.seen[-1]))}


def independent(steps, cooldown, optimizer="adamw"):
    """One ordinary run of `steps` with a `cooldown`-step cooldown."""
    net = model(steps, cooldown, optimizer)
    batches = dataset().as_numpy_iterator()
    for _ in range(steps):
        net.train_on_batch(*next(batches))
    return weights(net)


def test_plan_accounting_is_exact():
    plan = branch_plan(BUDGETS, 1.0, 8, cooldown_fraction=0.2)
    rows = [(b["steps"], b["branch_step"], b["cooldown_steps"])
            for b in plan["branches"]]
    assert rows == [(10, 8, 2), (20, 16, 4), (40, 32, 8)]
    # A branched point counts its main-run plus cooldown examples.
    assert [b["compute_gflops"] for b in plan["branches"]] == [80, 160, 320]
    assert all(b["cooled"] for b in plan["branches"])
    # The run is charged the main run to the last branch point plus every
    # cooldown: 32 + 2 + 4 + 8 steps of 8 examples.
    assert plan["main_steps"] == 32
    assert plan["charged_gflops"] == 46 * 8
    # Budgets between steps are floored; without cooldown nothing cools.
    plan = branch_plan([85.0, 170.0], 1.0, 8, cooldown_fraction=0.0)
    assert [b["compute_gflops"] for b in plan["branches"]] == [80, 168]
    assert not any(b["cooled"] for b in plan["branches"])
    assert plan["charged_gflops"] == 168


@pytest.mark.parametrize("kwargs,name", [
    (dict(budgets_gflops=[160.0, 80.0]), "ascending"),
    (dict(budgets_gflops=[]), "empty"),
    (dict(budgets_gflops=[80.0, 81.0]), "same number of steps"),
    (dict(budgets_gflops=[4.0]), "less than one step"),
    (dict(cooldown_fraction=1.0), "cooldown_fraction"),
    (dict(batch_size=0), "batch_size"),
])
def test_plan_bad_arguments(kwargs, name):
    args = dict(budgets_gflops=BUDGETS, gflops_per_example=1.0, batch_size=8)
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        branch_plan(**args)


@pytest.mark.parametrize("optimizer", ["adamw", "adafactor"])
def test_each_cooled_branch_equals_an_independent_run(optimizer):
    net = model(40, 0, optimizer)
    evaluator = Weights()
    run = BranchedRun(net, dataset(), BUDGETS, 1.0, 8, evaluators=[evaluator])
    records = run.run()
    assert [r["steps"] for r in records] == [10, 20, 40]
    assert all(r["cooled"] for r in records)
    # Budget i's branch = an ordinary run of its steps with the same data,
    # seed and schedule, cooling down over its last 20 %. The last one
    # continued the main run after two branches, so the main run was not
    # disturbed by them.
    for record, seen in zip(records, evaluator.seen):
        want = independent(record["steps"], record["cooldown_steps"],
                           optimizer)
        for got_w, want_w in zip(seen, want):
            np.testing.assert_allclose(got_w, want_w, rtol=1e-5, atol=1e-6)
    # The model ends as the last cooled branch.
    for got_w, want_w in zip(weights(net), evaluator.seen[-1]):
        np.testing.assert_array_equal(got_w, want_w)
    assert run.charged_gflops == 46 * 8
    assert int(net.optimizer.iterations) == 40
    # One compile for the main run and every branch; torch runs the step
    # eagerly, one Python execution per step (46: the main run's 40 steps
    # and the branches' cooldowns, as charged above).
    eager = keras.backend.backend() == "torch"
    assert run.train_traces == (46 if eager else 1)


def test_main_run_is_unaffected_by_branches():
    # Main run with two branches, stopped at its last branch point (a third
    # budget with no cooldown ends there), against a run without branches.
    net = model(40, 0)
    BranchedRun(net, dataset(), [80.0, 160.0], 1.0, 8).run()
    net.optimizer.clear_cooldown()
    branched_state = weights(net)  # the cooled 160-GFLOPs branch
    plain = model(40, 0)
    batches = dataset().as_numpy_iterator()
    for _ in range(16):
        plain.train_on_batch(*next(batches))
    main_at_16 = weights(plain)
    # The cooled branch differs from the un-cooled main run at its point.
    assert any(not np.allclose(a, b) for a, b in
               zip(branched_state, main_at_16))
    evaluator = Weights()
    net = model(40, 0)
    run = BranchedRun(net, dataset(), [80.0, 160.0, 256.0], 1.0, 8,
                      cooldown_fraction=0.2, evaluators=[evaluator])
    run.run()
    # Budget 256 = 32 steps, branch point 26: the main run reached step 26
    # through both earlier branches.
    for _ in range(10):
        plain.train_on_batch(*next(batches))
    want = independent(32, 6)
    for got_w, want_w in zip(evaluator.seen[-1], want):
        np.testing.assert_allclose(got_w, want_w, rtol=1e-5, atol=1e-6)


def test_without_cooldown_values_are_flagged_uncooled():
    # cooldown_fraction=0 reads the main run at each budget: flagged
    # un-cooled, and equal to the main run there (rate not decayed).
    evaluator = Weights()
    net = model(40, 0)
    records = BranchedRun(
        net, dataset(), BUDGETS, 1.0, 8, cooldown_fraction=0.0,
        evaluators=[evaluator],
    ).run()
    assert [r["cooled"] for r in records] == [False] * 3
    assert [r["cooldown_steps"] for r in records] == [0] * 3
    plain = model(40, 0)
    batches = dataset().as_numpy_iterator()
    done = 0
    for record, seen in zip(records, evaluator.seen):
        for _ in range(record["steps"] - done):
            plain.train_on_batch(*next(batches))
        done = record["steps"]
        for got_w, want_w in zip(seen, weights(plain)):
            np.testing.assert_allclose(got_w, want_w, rtol=1e-5, atol=1e-6)
    cooled = independent(40, 8)
    assert any(not np.allclose(a, b) for a, b in
               zip(cooled, evaluator.seen[-1]))


def test_callbacks_see_each_cooled_branch_as_an_epoch():
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append((epoch, logs["steps"], logs["cooled"]))

    net = model(40, 0)
    BranchedRun(net, dataset(), BUDGETS, 1.0, 8, callbacks=[Record()]).run()
    assert seen == [(0, 10, True), (1, 20, True), (2, 40, True)]


def test_refuses_models_it_cannot_branch():
    net = model(40, 10)  # the schedule has its own cooldown
    with pytest.raises(ValueError, match="cooldown_steps=0"):
        BranchedRun(net, dataset(), BUDGETS, 1.0, 8)
    net = model(20, 0)  # the schedule ends before the main run
    with pytest.raises(ValueError, match="total_steps"):
        BranchedRun(net, dataset(), BUDGETS, 1.0, 8)
    net = model(40, 0)
    net.compile(optimizer="adam", loss="mse")
    with pytest.raises(ValueError, match="set_cooldown"):
        BranchedRun(net, dataset(), BUDGETS, 1.0, 8)
    net = model(40, 0)
    finite = dataset().take(3)
    with pytest.raises(ValueError, match="ran out"):
        BranchedRun(net, finite, BUDGETS, 1.0, 8).run()
    net = model(40, 0)
    with pytest.raises(ValueError, match="evaluate"):
        BranchedRun(net, dataset(), BUDGETS, 1.0, 8, evaluators=[object()])


@pytest.mark.backend_free
def test_datasets_are_iterated_without_the_autotuner_unless_they_set_it():
    import keras_sovit.data
    from keras_sovit.training.branched import without_autotune

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (48, 16, 16, 1), dtype=np.uint8)
    labels = rng.integers(0, 3, 48)

    def pipeline():  # A new one each time: a second pass reshuffles.
        return keras_sovit.data.input_pipeline(
            tf.data.Dataset.from_tensor_slices((images, labels)), 16, 8,
            training=True, num_classes=3, seed=3,
        )

    ds, off = pipeline(), without_autotune(pipeline())
    assert ds.options().autotune.enabled is None
    assert off.options().autotune.enabled is False
    # The batches are the same: only parallelism and buffering change.
    for (x_on, y_on), (x_off, y_off) in zip(
        ds.take(8).as_numpy_iterator(), off.take(8).as_numpy_iterator()
    ):
        np.testing.assert_array_equal(x_on, x_off)
        np.testing.assert_array_equal(y_on, y_off)
    options = tf.data.Options()
    options.autotune.enabled = True
    chosen = ds.with_options(options)
    assert without_autotune(chosen) is chosen
