import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_sovit.evaluation import FewShotEvaluator
from keras_sovit.evaluation import fewshot_error


def reference_error(train_x, train_y, test_x, test_y, l2, num_classes):
    """Independent solution: least squares on an l2-augmented system."""
    mean = train_x.mean(0)
    std = train_x.std(0) + 1e-5

    def design(x):
        x = (x - mean) / std
        return np.hstack([x, np.full((len(x), 1), 100.0)])

    x = design(train_x)
    y = 2.0 * np.eye(num_classes)[train_y] - 1.0
    a = np.vstack([x, np.sqrt(l2) * np.eye(x.shape[1])])
    b = np.vstack([y, np.zeros((x.shape[1], num_classes))])
    w = np.linalg.lstsq(a, b, rcond=None)[0]
    return np.mean(np.argmax(design(test_x) @ w, 1) != test_y)


def gaussian_classes(n, dim, num_classes, sep, seed):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(num_classes, dim)) * sep
    y = np.arange(n) % num_classes
    return centers[y] + rng.normal(size=(n, dim)), y


@pytest.mark.parametrize("n_train,dim", [(60, 5), (12, 40)])
@pytest.mark.parametrize("l2", [1e-2, 1.0, 256.0])
def test_matches_independent_least_squares(n_train, dim, l2):
    x, y = gaussian_classes(n_train + 300, dim, 4, sep=0.7, seed=1)
    args = (x[:n_train], y[:n_train], x[n_train:], y[n_train:])
    got = fewshot_error(*args, l2_reg=l2)
    want = reference_error(*args, l2, 4)
    assert 0.05 < want < 0.9  # a non-trivial error, so agreement means much
    assert got == pytest.approx(want, abs=1e-12)


def test_separable_classes_give_zero_error():
    x, y = gaussian_classes(400, 16, 10, sep=20.0, seed=2)
    assert fewshot_error(x[:100], y[:100], x[100:], y[100:], 1.0) == 0.0


def test_constructed_known_error():
    # 1-D feature: class 0 near -1, class 1 near +1. Of the 10 test points,
    # exactly 4 sit on the wrong side, so the error is 0.4.
    rng = np.random.default_rng(0)
    noise = 0.01 * rng.normal(size=16)
    train_x = np.r_[-np.ones(8), np.ones(8)] + noise
    train_y = np.r_[np.zeros(8, int), np.ones(8, int)]
    test_x = np.array([-2, -1.5, -0.5, 0.5, 1.5, 2, 3, 1.2, -0.7, -3.0])
    test_y = np.array([0, 0, 0, 1, 1, 1, 0, 0, 1, 1])
    err = fewshot_error(
        train_x[:, None], train_y, test_x[:, None], test_y, l2_reg=1e-3
    )
    assert err == pytest.approx(0.4)


def test_bad_inputs_raise():
    x = np.zeros((4, 3))
    y = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="test_labels"):
        fewshot_error(x, y, x, np.array([0, 1, 2, 0]), 1.0)
    with pytest.raises(ValueError, match="train_labels"):
        fewshot_error(x, np.array([0, -1, 0, 1]), x, y, 1.0)
    with pytest.raises(ValueError, match="train_labels"):
        fewshot_error(x, y, x, y, 1.0, num_classes=1)
    with pytest.raises(ValueError, match="l2_reg"):
        fewshot_error(x, y, x, y, 0.0)
    with pytest.raises(ValueError, match="feature dimension"):
        fewshot_error(x, y, np.zeros((4, 2)), y, 1.0)
    with pytest.raises(ValueError, match="train_features"):
        fewshot_error(np.zeros((0, 3)), y[:0], x, y, 1.0)


# --- FewShotEvaluator ----------------------------------------------------


def image_data(n_train, n_test, num_classes, seed, sep=1.5):
    """Train and test splits of one Gaussian-class problem, as images."""
    n = n_train + n_test
    x, y = gaussian_classes(n, 12, num_classes, sep=sep, seed=seed)
    x = x.reshape(n, 2, 2, 3).astype("float32")
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


def flatten_model():
    return keras.Sequential([keras.Input((2, 2, 3)), keras.layers.Flatten()])


def manual_shots(labels, n, seed, num_classes):
    rng = np.random.default_rng(seed)
    return [
        rng.permutation(np.flatnonzero(labels == c))[:n]
        for c in range(num_classes)
    ]


def test_evaluator_matches_manual_sampling_and_probe():
    train, test = image_data(90, 150, 3, seed=3)
    evaluator = FewShotEvaluator(
        train, test, shots=(4, 10), l2_regs=(2.0,), seed=7, batch_size=16,
        num_draws=1,
    )
    got = evaluator.evaluate(flatten_model())
    for n in (4, 10):
        ids = np.concatenate(manual_shots(train[1], n, 7, 3))
        want = fewshot_error(
            train[0][ids].reshape(len(ids), -1),
            train[1][ids],
            test[0].reshape(150, -1),
            test[1],
            2.0,
        )
        assert got[f"fewshot_{n}shot_error"] == pytest.approx(want)
    assert 0.0 < got["fewshot_4shot_error"] < 0.7


def test_l2_chosen_by_leave_one_shot_out_cross_validation():
    train, test = image_data(120, 90, 3, seed=5, sep=0.6)
    l2_regs = (1e-3, 1.0, 1e3)
    evaluator = FewShotEvaluator(
        train, test, shots=(10,), l2_regs=l2_regs, num_draws=1
    )
    got = evaluator.evaluate(flatten_model())["fewshot_10shot_error"]
    per_class = manual_shots(train[1], 10, 0, 3)
    flat = train[0].reshape(120, -1)
    # Fold j holds out the j-th shot of every class; never the test set.
    wrong = {v: 0 for v in l2_regs}
    for j in range(10):
        held = np.array([p[j] for p in per_class])
        fit = np.concatenate([np.delete(p[:10], j) for p in per_class])
        for v in l2_regs:
            wrong[v] += 3 * fewshot_error(
                flat[fit], train[1][fit], flat[held], train[1][held], v
            )
    best_errors = min(wrong.values())
    candidates = [v for v in l2_regs if wrong[v] == best_errors]
    chosen = evaluator.selected_l2[10][0]
    assert chosen in candidates
    ids = np.concatenate([p[:10] for p in per_class])
    want = fewshot_error(
        flat[ids], train[1][ids], test[0].reshape(90, -1), test[1], chosen
    )
    assert got == pytest.approx(want)


def test_fixed_l2_and_draws_average_with_a_crossed_standard_error():
    train, test = image_data(150, 120, 3, seed=6, sep=0.6)
    evaluator = FewShotEvaluator(
        train, test, shots=(3,), l2_reg=4.0, num_draws=4, seed=2
    )
    got = evaluator.evaluate(flatten_model())
    assert evaluator.selected_l2[3] == [4.0] * 4
    flat_train, flat_test = train[0].reshape(150, -1), test[0].reshape(120, -1)
    errors = []
    for draw in range(4):
        ids = np.concatenate(manual_shots(train[1], 3, 2 + draw, 3))
        errors.append(fewshot_error(
            flat_train[ids], train[1][ids], flat_test, test[1], 4.0
        ))
    assert got["fewshot_3shot_error"] == pytest.approx(np.mean(errors))
    # The standard error is at least the test-set part and covers the
    # spread of the draws.
    p = np.mean(errors)
    assert got["fewshot_3shot_error_se"] >= 0.9 * np.sqrt(p * (1 - p) / 120)
    assert got["fewshot_3shot_error_se"] >= np.std(errors, ddof=1) / 2 * 0.9


def test_crossed_standard_error_matches_simulation():
    from keras_sovit.evaluation import crossed_mean_se

    # z[d, i] = 1 with probability clip(0.3 + a_d + b_i): draw and example
    # effects. The formula must match the spread of the grand mean over
    # fresh draws and fresh test sets.
    rng = np.random.default_rng(0)

    def sample():
        a = rng.normal(0, 0.08, size=(5, 1))
        b = rng.normal(0, 0.15, size=(1, 400))
        p = np.clip(0.3 + a + b, 0, 1)
        return (rng.random((5, 400)) < p).astype(float)

    tables = [sample() for _ in range(400)]
    spread = np.std([t.mean() for t in tables])
    estimates = np.mean([crossed_mean_se(t) for t in tables])
    assert estimates == pytest.approx(spread, rel=0.15)
    # With one draw only the test-set part is left.
    assert crossed_mean_se(tables[0][:1]) == pytest.approx(
        tables[0][0].std(ddof=1) / 20
    )


def test_stratified_test_subset():
    from keras_sovit.evaluation import stratified_subset

    train, test = image_data(60, 90, 3, seed=9)
    evaluator = FewShotEvaluator(
        train, test, shots=(2,), test_per_class=20, num_draws=1
    )
    assert np.bincount(test[1][evaluator._test_ids]).tolist() == [20] * 3
    ids = stratified_subset(test[1], 20, seed=0)
    np.testing.assert_array_equal(ids, evaluator._test_ids)
    with pytest.raises(ValueError, match="per_class"):
        stratified_subset(test[1], 31)


def test_deterministic_with_seed_and_seed_matters():
    train, test = image_data(200, 200, 4, seed=8, sep=0.5)
    model = flatten_model()

    def run(seed):
        return FewShotEvaluator(train, test, shots=(2,), seed=seed).evaluate(
            model
        )["fewshot_2shot_error"]

    assert run(0) == run(0)
    assert len({run(s) for s in range(5)}) > 1


def test_tf_data_inputs_equal_numpy_inputs():
    train, test = image_data(60, 30, 3, seed=10)
    onehot = tf.data.Dataset.from_tensor_slices(
        (train[0], np.eye(3, dtype="float32")[train[1]])
    ).batch(7)
    as_dict = tf.data.Dataset.from_tensor_slices(
        {"image": test[0], "label": test[1]}
    )
    model = flatten_model()
    from_arrays = FewShotEvaluator(train, test, shots=(5,)).evaluate(model)
    from_tf = FewShotEvaluator(onehot, as_dict, shots=(5,)).evaluate(model)
    assert from_tf == from_arrays


def test_backbone_token_features_are_mean_pooled():
    train, test = image_data(60, 60, 3, seed=12)
    inputs = keras.Input((2, 2, 3))
    tokens = keras.layers.Reshape((4, 3))(inputs)
    backbone = keras.Model(inputs, tokens, name="backbone")
    outputs = keras.layers.Dense(3, name="head")(
        keras.layers.GlobalAveragePooling1D()(backbone(inputs))
    )
    model = keras.Model(inputs, outputs)
    model.backbone = backbone
    got = FewShotEvaluator(
        train, test, shots=(6,), l2_regs=(1.0,), num_draws=1
    ).evaluate(model)
    ids = np.concatenate(manual_shots(train[1], 6, 0, 3))
    pooled_train = train[0].reshape(60, 4, 3).mean(1)
    pooled_test = test[0].reshape(60, 4, 3).mean(1)
    want = fewshot_error(
        pooled_train[ids], train[1][ids], pooled_test, test[1], 1.0
    )
    assert got["fewshot_6shot_error"] == pytest.approx(want)


def test_logs_appear_in_fit_history():
    train, test = image_data(60, 30, 3, seed=14)
    inputs = keras.Input((2, 2, 3))
    outputs = keras.layers.Dense(3, name="head")(
        keras.layers.Flatten()(inputs)
    )
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    evaluator = FewShotEvaluator(train, test, shots=(1, 5))
    history = model.fit(
        train[0], train[1], epochs=2, batch_size=30, verbose=0,
        callbacks=[evaluator],
    )
    for key in ("fewshot_1shot_error", "fewshot_5shot_error"):
        assert len(history.history[key]) == 2
        assert 0.0 <= history.history[key][-1] <= 1.0
    # The logged value is the evaluation of the trained model.
    final = evaluator.evaluate(model)
    assert history.history["fewshot_5shot_error"][-1] == final[
        "fewshot_5shot_error"
    ]


def test_deepcopy_shares_datasets_for_keras_tuner():
    # KerasTuner deep-copies the callbacks of every trial.
    import copy

    from keras_sovit.training import ComputeBudget

    train, test = image_data(30, 30, 3, seed=18)
    evaluator = FewShotEvaluator(
        tf.data.Dataset.from_tensor_slices(train), test, shots=(2,)
    )
    budget = ComputeBudget(10.0, 1.0, evaluators=[evaluator], batch_size=2)
    clone = copy.deepcopy([budget])[0]
    copied = clone.evaluators[0]
    assert copied is not evaluator and copied.train_ds is evaluator.train_ds
    model = flatten_model()
    assert copied.evaluate(model) == evaluator.evaluate(model)


def test_evaluator_bad_inputs():
    train, test = image_data(30, 30, 3, seed=16)
    with pytest.raises(ValueError, match="shots.*class"):
        FewShotEvaluator(train, test, shots=(11,))
    with pytest.raises(ValueError, match="test_ds.*out of range"):
        FewShotEvaluator(train, (test[0], test[1] + 5), num_classes=3)
    with pytest.raises(ValueError, match="train_ds.*out of range"):
        FewShotEvaluator(train, test, num_classes=2, shots=(1,))
    empty = tf.data.Dataset.from_tensor_slices(
        (np.zeros((0, 2, 2, 3), "float32"), np.zeros((0,), "int64"))
    )
    with pytest.raises(ValueError, match="train_ds.*empty"):
        FewShotEvaluator(empty, test)
    with pytest.raises(ValueError, match="infinite"):
        FewShotEvaluator(
            tf.data.Dataset.from_tensor_slices(train).repeat(), test
        )
    for kwargs, name in [
        (dict(shots=(0,)), "shots"),
        (dict(l2_regs=(-1.0,)), "l2_reg"),
        (dict(l2_reg=0.0), "l2_reg"),
        (dict(num_draws=0), "num_draws"),
        (dict(batch_size=0), "batch_size"),
    ]:
        with pytest.raises(ValueError, match=name):
            FewShotEvaluator(train, test, **kwargs)
