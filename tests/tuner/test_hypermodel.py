"""SoViTHyperModel alone and inside a real KerasTuner search."""

import json
import os

import keras
import keras_tuner
import numpy as np
import pytest
import tensorflow as tf

import keras_sovit
from keras_sovit.tuner import ShapeOracle
from keras_sovit.tuner import SoViTHyperModel
from keras_sovit.tuner import checkpoint_metric_name
from keras_sovit.tuner.protocol import format_fractions

NUM_CLASSES = 4
IMAGE_SHAPE = (16, 16, 3)
BATCH = 8
METRIC = "fewshot_2shot_error"


def make_data(n, seed):
    """Images whose mean colour depends on the class, labels one-hot."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % NUM_CLASSES
    images = rng.uniform(-0.5, 0.5, (n,) + IMAGE_SHAPE)
    images[..., 0] += (labels[:, None, None] - 1.5) / 3
    return images.astype("float32"), labels


def train_dataset():
    images, labels = make_data(64, 0)
    one_hot = np.eye(NUM_CLASSES, dtype="float32")[labels]
    ds = tf.data.Dataset.from_tensor_slices((images, one_hot))
    return ds.repeat().batch(BATCH, drop_remainder=True)


def make_hypermodel(**kwargs):
    args = dict(
        num_classes=NUM_CLASSES,
        image_shape=IMAGE_SHAPE,
        fewshot_train=make_data(24, 1),
        fewshot_test=make_data(24, 2),
        shots=(2,),
        batch_size=BATCH,
    )
    args.update(kwargs)
    return SoViTHyperModel(**args)


SHAPE = keras_sovit.ShapeSpec(16, 1, 32, 2, patch_size=4)


def trial_hp(shape, compute):
    hp = keras_tuner.HyperParameters()
    hp.values.update(shape.to_dict(), compute_gflops=compute, phase="grid")
    return hp


def test_build_uses_the_trial_shape():
    hypermodel = make_hypermodel()
    model = hypermodel.build(trial_hp(SHAPE, 1.0))
    assert model.backbone.shape_spec == SHAPE
    assert model.count_params() == SHAPE.num_params(
        16, num_classes=NUM_CLASSES
    )


def fit_trial(hypermodel, hp, **kwargs):
    model = hypermodel.build(hp)
    return model, hypermodel.fit(hp, model, x=train_dataset(), **kwargs)


def test_fit_reports_cooled_budgets_with_exact_compute():
    hypermodel = make_hypermodel()
    per_example = SHAPE.gflops(16)
    # 8 steps of 8 examples, plus a little slack that buys no extra step.
    budget = per_example * BATCH * 8.5
    hp = trial_hp(SHAPE, budget)
    assert hypermodel.total_steps(hp) == 8
    _, metrics = fit_trial(hypermodel, hp, verbose=0)
    # Budgets at 1/4, 1/2 and all of compute_gflops: 2, 4 and 8 steps,
    # each a branch cooled down over 1, 1 and 2 steps (20 %, at least 1).
    computes = [metrics[checkpoint_metric_name("compute_gflops", i)]
                for i in range(3)]
    assert computes == pytest.approx(
        [per_example * BATCH * s for s in (2, 4, 8)]
    )
    for i in range(3):
        assert metrics[checkpoint_metric_name("cooled", i)] == 1.0
        assert checkpoint_metric_name(METRIC + "_se", i) in metrics
    assert metrics["compute_gflops"] == pytest.approx(per_example * 64)
    assert metrics[METRIC] == metrics[checkpoint_metric_name(METRIC, 2)]
    # Charged: the main run to step 6 plus cooldowns of 1 + 1 + 2 steps.
    assert metrics["charged_gflops"] == pytest.approx(
        per_example * BATCH * 10
    )
    assert checkpoint_metric_name(METRIC, 3) not in metrics
    # One compile; torch runs the step eagerly, once per charged step.
    eager = keras.backend.backend() == "torch"
    assert hypermodel.last_run.train_traces == (10 if eager else 1)


def test_training_improves_the_objective_over_the_untrained_network():
    from keras_sovit.evaluation import ValidationEvaluator

    hypermodel = make_hypermodel()
    hp = trial_hp(SHAPE, SHAPE.gflops(16) * BATCH * 60)
    validation = make_data(64, 3)
    untrained = ValidationEvaluator(validation).evaluate(
        hypermodel.build(hp)
    )
    # Zero head kernel and softmax prior bias: exactly chance, log(4).
    assert untrained["val_loss"] == pytest.approx(np.log(NUM_CLASSES))
    _, metrics = fit_trial(hypermodel, hp, validation_data=validation)
    for key in ("val_loss", "val_error"):
        # Better than untrained by more than three standard errors.
        assert metrics[key] + 3 * metrics[key + "_se"] < untrained[key], key
    # And the curve over the cooled budgets goes down.
    assert metrics["val_loss@0"] > metrics["val_loss@2"]


def shuffled_train(seed):
    """A reshuffling pipeline whose order is set by `seed`."""
    images, labels = make_data(64, 0)
    one_hot = np.eye(NUM_CLASSES, dtype="float32")[labels]
    ds = tf.data.Dataset.from_tensor_slices((images, one_hot))
    ds = ds.shuffle(64, seed=seed, reshuffle_each_iteration=True)
    return ds.repeat().batch(BATCH, drop_remainder=True)


def test_a_shared_reshuffling_dataset_depends_on_its_history():
    # Why seeded demo runs disagreed: every new iterator of one seeded,
    # reshuffling dataset gives another order, so a trial's data depended
    # on how many trials (retries, resumes) had iterated it before. A
    # callable `x(seed)` makes a fresh pipeline per trial instead.
    shared = shuffled_train(0)
    first = next(shared.as_numpy_iterator())[1]
    second = next(shared.as_numpy_iterator())[1]
    assert not np.array_equal(first, second)
    fresh = next(shuffled_train(0).as_numpy_iterator())[1]
    np.testing.assert_array_equal(first, fresh)


def test_seeded_trials_repeat_exactly_and_seeds_differ():
    hypermodel = make_hypermodel()
    budget = SHAPE.gflops(16) * BATCH * 6

    def run(seed):
        hp = trial_hp(SHAPE, budget)
        hp.values["seed"] = seed
        model = hypermodel.build(hp)
        return hypermodel.fit(hp, model, x=shuffled_train)

    first = run(0)
    # Other work in between (it draws random numbers) must not matter.
    hp = trial_hp(SHAPE, budget)
    hp.values["seed"] = 1
    other = hypermodel.build(hp).get_weights()
    keras_sovit.models.SoViTBackbone(SHAPE, image_shape=IMAGE_SHAPE)
    assert run(0) == first
    hp.values["seed"] = 0
    same = hypermodel.build(hp).get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(other, same))


def test_trials_of_one_shape_reuse_the_compiled_model():
    budget = SHAPE.gflops(16) * BATCH * 6

    def trial(hypermodel, shape, seed):
        hp = trial_hp(shape, budget)
        hp.values["seed"] = seed
        model = hypermodel.build(hp)
        metrics = hypermodel.fit(hp, model, x=shuffled_train)
        return model, metrics, hypermodel.last_run

    reusing = make_hypermodel()
    first, _, _ = trial(reusing, SHAPE, 0)
    second, metrics, run = trial(reusing, SHAPE, 1)
    # Trained by the first trial's model, without tracing its step again.
    assert run.model is first and run.train_traces is None
    fresh, expected, fresh_run = trial(
        make_hypermodel(reuse_compiled=False), SHAPE, 1
    )
    assert fresh_run.model is fresh
    # The numbers of a fresh model, and the trial's model holds its result.
    assert metrics == expected
    for mine, theirs in zip(second.get_weights(), fresh.get_weights()):
        np.testing.assert_array_equal(mine, theirs)
    # Another shape trains its own model.
    other = keras_sovit.ShapeSpec(24, 1, 32, 2, patch_size=4)
    model, _, run = trial(reusing, other, 0)
    assert run.model is model


def test_budget_fractions_hyperparameter_and_recipe_choice():
    hypermodel = make_hypermodel(checkpoints=(0.5,))
    hp = trial_hp(SHAPE, SHAPE.gflops(16) * BATCH * 10)
    assert [b / hp.values["compute_gflops"] for b in hypermodel.budgets(hp)
            ] == [0.5, 1.0]
    hp.values["budget_fractions"] = "0.2,0.4"
    assert [round(b / hp.values["compute_gflops"], 6)
            for b in hypermodel.budgets(hp)] == [0.2, 0.4, 1.0]
    hp.values["budget_fractions"] = "0.2,2"
    with pytest.raises(ValueError, match="budget_fractions"):
        hypermodel.budgets(hp)
    # Budgets below one step, or on the same step as a larger one, drop out.
    hp.values["budget_fractions"] = "0.01,0.12,0.15,0.5"
    plan = hypermodel.plan(hp)
    assert [b["steps"] for b in plan["branches"]] == [1, 5, 10]
    assert hypermodel.preset == "small"  # 16 px images
    big = SoViTHyperModel(NUM_CLASSES, (224, 224, 3))
    assert big.preset == "paper"
    assert SoViTHyperModel(NUM_CLASSES, IMAGE_SHAPE,
                           recipe="paper").preset == "paper"
    model = hypermodel.build(trial_hp(SHAPE, SHAPE.gflops(16) * BATCH * 10))
    assert model.optimizer.__class__.__name__ == "AdamWDecayMults"
    bias = model.get_layer("head").bias
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(bias), 0.0)


def test_budget_below_one_step_fails_the_trial():
    hypermodel = make_hypermodel()
    hp = trial_hp(SHAPE, SHAPE.gflops(16) * BATCH * 0.5)
    with pytest.raises(keras_tuner.errors.FailedTrialError):
        hypermodel.total_steps(hp)


def test_declares_every_oracle_hyperparameter():
    hp = keras_tuner.HyperParameters()
    make_hypermodel().declare_hyperparameters(hp)
    names = {h.name for h in hp.space}
    # budget_fractions: declared so that a ShapeOracle plans one branched
    # run per shape (its value is the hypermodel's checkpoints).
    assert names == {"width", "depth", "mlp_dim", "num_heads", "patch_size",
                     "compute_gflops", "phase", "seed", "budget_fractions"}
    assert hp.values["budget_fractions"] == format_fractions(
        make_hypermodel().checkpoints)
    # The defaults build a valid tiny model cheaply.
    shape = keras_sovit.ShapeSpec.from_dict(hp.values)
    assert shape.gflops(16) < 1e-3


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="image_shape"):
        SoViTHyperModel(NUM_CLASSES, (16, 16))
    with pytest.raises(ValueError, match="checkpoints"):
        SoViTHyperModel(NUM_CLASSES, IMAGE_SHAPE, checkpoints=(0.5, 2.0))
    with pytest.raises(ValueError, match="fewshot_test"):
        SoViTHyperModel(NUM_CLASSES, IMAGE_SHAPE,
                        fewshot_train=make_data(8, 0))
    with pytest.raises(ValueError, match="reuse_compiled"):
        SoViTHyperModel(NUM_CLASSES, IMAGE_SHAPE, reuse_compiled="yes")


def test_search_end_to_end(tmp_path):
    per_step = SHAPE.gflops(16) * BATCH
    oracle = ShapeOracle(
        objective=keras_tuner.Objective("val_loss", "min"),
        target_compute=per_step * 12,
        exponents={"width": 0.2, "depth": 0.4, "mlp_dim": 0.6},
        grid={"width": [16, 32], "mlp_dim": [32]},
        grid_budget=per_step * 6,
        star_center=SHAPE,
        rounding=keras_sovit.scaling.Rounding(
            width_multiple=8, mlp_multiple=8
        ),
        final_trials=("proposal", "control"),
        image_size=16,
        seed=1,
        max_consecutive_failed_trials=1,
    )
    tuner = keras_tuner.Tuner(
        oracle=oracle,
        hypermodel=make_hypermodel(),
        directory=str(tmp_path),
        project_name="p",
    )
    tuner.search(
        x=train_dataset(), validation_data=make_data(64, 3), verbose=0
    )

    trials = list(oracle.trials.values())
    phases = [t.hyperparameters.values["phase"] for t in trials]
    assert phases.count("grid") == 2
    assert 1 <= phases.count("final") <= 2
    assert all(t.status == "COMPLETED" for t in trials)
    for trial in trials:
        values = trial.hyperparameters.values
        budget = values["compute_gflops"]
        shape = keras_sovit.ShapeSpec.from_dict(values)
        spent = trial.metrics.get_last_value("compute_gflops")
        assert budget - shape.gflops(16) * BATCH < spent <= budget
        # The untrained network scores exactly log(4) (zero head kernel,
        # softmax prior bias; see the test above): every trial learned.
        assert trial.score < np.log(NUM_CLASSES) - 1e-3
    # Checkpoints (up to three per trial) reach the fit as extra rows.
    rows = list(oracle.results("grid"))
    assert 2 < len(rows) <= 6
    for row in rows:
        assert row["compute_gflops"] <= oracle.config.grid_budget
    proposal = oracle.proposal
    assert proposal.patch_size == 4 and proposal.num_heads == 2
    final = [keras_sovit.ShapeSpec.from_dict(t.hyperparameters.values)
             for t in trials if t.hyperparameters.values["phase"] == "final"]
    assert final[0] == proposal
    with open(os.path.join(str(tmp_path), "p", "shape_report.json")) as f:
        assert json.load(f)["proposal"] == proposal.to_dict()
    best = tuner.get_best_hyperparameters()[0].values
    assert best["phase"] in ("grid", "final")


def test_build_refuses_a_budget_below_one_step_before_building():
    hypermodel = make_hypermodel()
    # Width 8192, depth 64: one step of 8 images costs ~1.8e4 GFLOPs.
    huge = keras_sovit.ShapeSpec(8192, 64, 32768, 16, patch_size=4)
    per_step = BATCH * huge.gflops((16, 16))
    with pytest.raises(keras_tuner.errors.FailedTrialError, match="step"):
        hypermodel.build(trial_hp(huge, per_step / 2))
    # The up-front build with default values affords its one step.
    hp = keras_tuner.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    assert hypermodel.total_steps(hp) >= 1


def test_a_trial_is_decoded_once_and_planned_once(monkeypatch):
    from keras_sovit.tuner import protocol

    calls = {"decode": 0}
    decode = protocol.TrialSpec.from_values.__func__

    def counting_decode(cls, values):
        calls["decode"] += 1
        return decode(cls, values)

    monkeypatch.setattr(protocol.TrialSpec, "from_values",
                        classmethod(counting_decode))  # fmt: skip
    hypermodel = make_hypermodel()
    hp = trial_hp(SHAPE, SHAPE.gflops(16) * BATCH * 8)
    plans = []
    original_plan = hypermodel.plan

    def recording_plan(hp):
        plans.append(original_plan(hp))
        return plans[-1]

    hypermodel.plan = recording_plan
    _, metrics = fit_trial(hypermodel, hp, verbose=0)
    assert calls["decode"] == 1
    # Every use of the plan (build's step count, fit's budgets, the
    # trainer's key) got the same object: one branch_plan per trial.
    assert len(plans) >= 3 and all(p is plans[0] for p in plans)
    assert metrics["compute_gflops"] == pytest.approx(
        SHAPE.gflops(16) * BATCH * 8
    )
    # The decoded spec is the inverse of the oracle's trial_values.
    spec = hypermodel.trial(hp)
    again = protocol.TrialSpec.from_values(spec.values())
    assert again == spec and spec.shape == SHAPE and spec.phase == "grid"
