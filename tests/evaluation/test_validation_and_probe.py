"""ValidationEvaluator and LinearProbeEvaluator: values and standard errors."""

import keras
import numpy as np
import pytest

import keras_sovit
from keras_sovit.evaluation import LinearProbeEvaluator
from keras_sovit.evaluation import ValidationEvaluator
from keras_sovit.evaluation import fewshot_error
from keras_sovit.evaluation import select_l2


def logits_model(num_classes=4, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,))
    outputs = keras.layers.Dense(num_classes, name="head")(inputs)
    return keras.Model(inputs, outputs)


def data(n, num_classes=4, seed=1):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % num_classes
    x = rng.normal(size=(n, 6)).astype("float32")
    x[np.arange(n), y] += 1.0
    return x, y


@pytest.mark.parametrize("preset", ["small", "paper"])
def test_validation_loss_is_the_compiled_head_loss(preset):
    model = logits_model()
    keras_sovit.training.compile_for_pretraining(
        model, total_steps=10, preset=preset
    )
    x, y = data(50)
    got = ValidationEvaluator((x, y), batch_size=16).evaluate(model)
    logits = model.predict(x, verbose=0)
    onehot = np.eye(4, dtype="float32")[y]
    per_example = keras.ops.convert_to_numpy(
        model.loss.call(onehot, logits)
    ).astype(np.float64)
    assert got["val_loss"] == pytest.approx(per_example.mean(), rel=1e-5)
    assert got["val_loss_se"] == pytest.approx(
        per_example.std(ddof=1) / np.sqrt(50), rel=1e-4
    )
    wrong = (logits.argmax(1) != y).astype(float)
    assert got["val_error"] == pytest.approx(wrong.mean())
    assert got["val_error_se"] == pytest.approx(
        wrong.std(ddof=1) / np.sqrt(50)
    )


def test_sigmoid_and_softmax_losses_differ_on_the_same_logits():
    model = logits_model()
    x, y = data(40)
    soft = ValidationEvaluator((x, y), loss="softmax").evaluate(model)
    sig = ValidationEvaluator((x, y), loss="sigmoid").evaluate(model)
    assert soft["val_error"] == sig["val_error"]
    assert soft["val_loss"] != pytest.approx(sig["val_loss"], rel=1e-2)
    with pytest.raises(ValueError, match="loss"):
        ValidationEvaluator((x, y)).evaluate(model)  # not compiled
    with pytest.raises(ValueError, match="loss"):
        ValidationEvaluator((x, y), loss="mse")


def test_stratified_subset_uses_the_stratified_standard_error():
    from keras_sovit.evaluation._common import stratified_mean_se

    model = logits_model()
    x, y = data(200)
    evaluator = ValidationEvaluator(
        (x, y), loss="softmax", test_per_class=10, prefix="holdout"
    )
    assert np.bincount(evaluator.labels).tolist() == [10] * 4
    got = evaluator.evaluate(model)
    logits = model.predict(evaluator.images, verbose=0)
    wrong = (logits.argmax(1) != evaluator.labels).astype(float)
    assert got["holdout_error_se"] == pytest.approx(
        stratified_mean_se(wrong, evaluator.labels)
    )
    # Within-class variances only: never above the i.i.d. formula here.
    assert got["holdout_error_se"] <= wrong.std(ddof=1) / np.sqrt(40) + 1e-12


def flatten():
    return keras.Sequential([keras.Input((6,)), keras.layers.Identity()])


def test_probe_fits_all_of_probe_train_with_the_cv_strength():
    x, y = data(300, seed=2)
    train, test = (x[:200], y[:200]), (x[200:], y[200:])
    l2_regs = (1e-2, 1.0, 100.0, 1e4)
    probe = LinearProbeEvaluator(train, test, l2_regs=l2_regs, folds=4)
    got = probe.evaluate(flatten())
    chosen, cv_errors = select_l2(
        x[:200].astype(np.float64), y[:200], probe._fold_ids, l2_regs, 4
    )
    assert probe.selected_l2 == chosen
    assert cv_errors.min() == cv_errors[l2_regs.index(chosen)]
    want = fewshot_error(x[:200], y[:200], x[200:], y[200:], chosen)
    assert got["probe_error"] == pytest.approx(want)
    assert got["probe_error_se"] == pytest.approx(
        np.sqrt(want * (1 - want) / 99), rel=1e-6
    )
    # Folds are stratified: every fold holds every class equally.
    for fold in range(4):
        counts = np.bincount(y[:200][probe._fold_ids == fold])
        assert set(counts.tolist()) <= {12, 13}


def test_probe_fixed_strength_and_bad_arguments():
    x, y = data(120, seed=3)
    probe = LinearProbeEvaluator(
        (x[:80], y[:80]), (x[80:], y[80:]), l2_reg=2.0, name="many"
    )
    got = probe.evaluate(flatten())
    assert set(got) == {"many_error", "many_error_se"}
    assert got["many_error"] == pytest.approx(
        fewshot_error(x[:80], y[:80], x[80:], y[80:], 2.0)
    )
    with pytest.raises(ValueError, match="folds"):
        LinearProbeEvaluator((x, y), (x, y), folds=1)
    with pytest.raises(ValueError, match="l2_reg"):
        LinearProbeEvaluator((x, y), (x, y), l2_reg=-1.0)
    with pytest.raises(ValueError, match="out of range"):
        LinearProbeEvaluator((x, y), (x, y + 4), num_classes=4)


def test_shared_features_give_the_same_validation_metrics():
    shape = keras_sovit.ShapeSpec(16, 1, 32, 2, patch_size=4)
    keras.utils.set_random_seed(0)
    model = keras_sovit.models.SoViTClassifier(
        keras_sovit.models.SoViTBackbone(shape, image_shape=(8, 8, 3)),
        num_classes=4,
    )
    head = model.get_layer("head")
    head.kernel.assign(np.random.default_rng(0).normal(size=(16, 4)))
    rng = np.random.default_rng(1)
    images = rng.normal(size=(40, 8, 8, 3)).astype("float32")
    evaluator = ValidationEvaluator((images, np.arange(40) % 4),
                                    loss="softmax")
    plain = evaluator.evaluate(model)
    with keras_sovit.evaluation.feature_cache():
        shared = evaluator.evaluate(model)  # logits from backbone features
    for key, value in plain.items():
        assert shared[key] == pytest.approx(value, rel=1e-5), key


def test_data_is_checked_where_it_enters_the_evaluators():
    # Issue "Every public call checks its values", item 2: the same checks
    # for every evaluator, through the data seam.
    from keras_sovit.evaluation import FewShotEvaluator
    from keras_sovit.evaluation import LinearProbeEvaluator
    from keras_sovit.evaluation import ValidationEvaluator

    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 8, 8, 3)).astype("float32")
    y = np.arange(20) % 4
    with pytest.raises(ValueError, match=r"data labels.*\[-1\]"):
        ValidationEvaluator((x, y - 1))  # -1 was read as the last class
    nan_x = x.copy()
    nan_x[3, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="data images.*1 NaN or infinite"):
        ValidationEvaluator((nan_x, y))
    with pytest.raises(ValueError, match="train_ds.*at least 2 classes"):
        FewShotEvaluator((x, np.zeros(20, int)), (x, np.zeros(20, int)),
                         shots=(2,))  # fmt: skip
    with pytest.raises(ValueError, match="train_ds images.*NaN"):
        FewShotEvaluator((nan_x, y), (x, y), shots=(2,)).evaluate(
            keras.Sequential([keras.Input((8, 8, 3)),
                              keras.layers.GlobalAveragePooling2D()])
        )  # fmt: skip
    with pytest.raises(ValueError, match="train_data.*at least 2 classes"):
        LinearProbeEvaluator((x, np.zeros(20, int)), (x, y % 1))
