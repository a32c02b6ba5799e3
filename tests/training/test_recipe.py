import keras
import numpy as np
import pytest

from keras_sovit.training import PAPER_RECIPE
from keras_sovit.training import PRESETS
from keras_sovit.training import SMALL_RECIPE
from keras_sovit.training import AdamWDecayMults
from keras_sovit.training import BigVisionAdafactor
from keras_sovit.training import RsqrtSchedule
from keras_sovit.training import SigmoidCrossEntropy
from keras_sovit.training import compile_for_pretraining
from keras_sovit.training import head_bias_prior
from keras_sovit.training import make_optimizer
from keras_sovit.training import pipeline_kwargs
from keras_sovit.training import recipe
from keras_sovit.training import set_head_bias


def small_classifier(num_classes=5):
    inputs = keras.Input((6,))
    x = keras.layers.Dense(8, name="features")(inputs)
    x = keras.layers.LayerNormalization(name="norm")(x)
    outputs = keras.layers.Dense(num_classes, name="head")(x)
    model = keras.Model(inputs, outputs)
    for var in model.weights:  # non-zero values so decay is visible
        var.assign(np.full(var.shape, 0.5, "float32"))
    return model


def test_recipe_defaults_reproduce_paper_table_for_long_runs():
    config = recipe(total_steps=1_000_000)
    for key, value in PAPER_RECIPE.items():
        assert config[key] == value, key
    assert PAPER_RECIPE["warmup_steps"] == 10_000
    assert PAPER_RECIPE["cooldown_steps"] == 50_000
    assert PAPER_RECIPE["timescale"] == 10_000
    assert recipe(250_000)["cooldown_steps"] == 50_000


def test_recipe_scales_schedule_for_short_runs_and_overrides():
    config = recipe(total_steps=1000)
    assert (
        config["warmup_steps"],
        config["cooldown_steps"],
        config["timescale"],
    ) == (100, 200, 100)
    assert recipe(5)["timescale"] == 1
    config = recipe(1000, warmup_steps=7, cooldown_steps=0, timescale=3,
                    base_lr=1e-3, optimizer="adamw", loss="softmax")
    assert (config["warmup_steps"], config["cooldown_steps"]) == (7, 0)
    assert (config["timescale"], config["base_lr"]) == (3, 1e-3)


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(total_steps=0), "total_steps"),
        (dict(base_lr=0.0), "base_lr"),
        (dict(optimizer="sgd"), "optimizer"),
        (dict(loss="mse"), "loss"),
        (dict(weight_decay=-1.0), "weight_decay"),
        (dict(clipnorm=0.0), "clipnorm"),
        (dict(label_smoothing=1.0), "label_smoothing"),
        (dict(warmup_steps=2000), "total_steps"),
    ],
)
def test_recipe_bad_arguments(kwargs, name):
    args = dict(total_steps=1000)
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        recipe(**args)


@pytest.mark.parametrize("optimizer", ["adafactor", "adamw"])
def test_zero_gradient_step_decays_head_kernel_100x(optimizer):
    model = small_classifier()
    config = recipe(1000, base_lr=0.01, warmup_steps=0, optimizer=optimizer)
    opt = make_optimizer(config)
    variables = model.trainable_variables
    opt.apply([keras.ops.zeros(v.shape, "float32") for v in variables],
              variables)  # fmt: skip
    values = {v.path: keras.ops.convert_to_numpy(v) for v in variables}
    lr_wd = 0.01 * 0.03
    np.testing.assert_allclose(values["head/kernel"], 0.5 * (1 - 100 * lr_wd))
    np.testing.assert_allclose(values["features/kernel"], 0.5 * (1 - lr_wd))
    for path in ("head/bias", "features/bias", "norm/gamma", "norm/beta"):
        np.testing.assert_array_equal(values[path], 0.5)


def reference_adafactor(params, grads_per_step, lr, wd, mults):
    """Numpy transcription of big_vision's Adafactor (momentum 0.9)."""
    state = {}
    params = {k: v.astype(np.float64).copy() for k, v in params.items()}
    for t, grads in enumerate(grads_per_step, start=1):
        beta2 = min(0.999, 1.0 - t**-0.8)
        for k, g in grads.items():
            g2 = g.astype(np.float64) ** 2 + 1e-30
            s = state.setdefault(k, {"m": np.zeros_like(g2)})
            if g.ndim == 2 and min(g.shape) >= 32:
                big = int(np.argmax(g.shape))
                small = 1 - big
                s["r"] = beta2 * s.get("r", 0) + (1 - beta2) * g2.mean(big)
                s["c"] = beta2 * s.get("c", 0) + (1 - beta2) * g2.mean(small)
                v = np.expand_dims(s["r"], big) * np.expand_dims(s["c"], small)
                v = v / s["r"].mean()
            else:
                s["v"] = beta2 * s.get("v", 0) + (1 - beta2) * g2
                v = s["v"]
            s["m"] = 0.9 * s["m"] + 0.1 * g / np.sqrt(v)
            params[k] = params[k] - lr * (s["m"] + wd * mults[k] * params[k])
    return params


def test_big_vision_adafactor_matches_numpy_reference():
    rng = np.random.default_rng(0)
    shapes = {"big_kernel": (40, 48), "tall_kernel": (48, 40),
              "small_kernel": (3, 5), "small_bias": (5,)}
    variables = [
        keras.Variable(rng.normal(size=s).astype("float32"), name=k)
        for k, s in shapes.items()
    ]
    paths = [v.path for v in variables]
    opt = BigVisionAdafactor(
        learning_rate=0.01,
        weight_decay=0.5,
        wd_mults=[(r"^big_kernel$", 3.0), (r"kernel$", 1.0)],
    )
    start = {p: keras.ops.convert_to_numpy(v) for p, v in zip(paths, variables)}
    steps = [
        {p: rng.normal(size=shapes[p]).astype("float32")
         for p in paths}
        for _ in range(3)
    ]
    for grads in steps:
        opt.apply([grads[p] for p in paths], variables)
    mults = {p: {"big_kernel": 3.0, "small_bias": 0.0}.get(p, 1.0)
             for p in paths}
    want = reference_adafactor(start, steps, 0.01, 0.5, mults)
    for p, v in zip(paths, variables):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(v), want[p], rtol=2e-4, atol=1e-6
        )


def test_optimizer_config_round_trip():
    config = recipe(1000)
    for name in ("adafactor", "adamw"):
        config["optimizer"] = name
        opt = make_optimizer(config)
        restored = keras.optimizers.deserialize(
            keras.optimizers.serialize(opt)
        )
        assert type(restored) is type(opt)
        assert restored.wd_mults == opt.wd_mults
        assert restored.decoupled_weight_decay == 0.03
        assert restored.global_clipnorm == 1.0
        assert isinstance(restored._learning_rate, RsqrtSchedule)
    assert isinstance(make_optimizer(config), AdamWDecayMults)


def test_sigmoid_loss_sums_over_classes():
    logits = np.array([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]], "float32")
    labels = np.array([[1, 0, 0], [0, 0, 1]], "float32")
    sig = 1 / (1 + np.exp(-logits.astype(np.float64)))
    per_example = -(labels * np.log(sig) + (1 - labels) * np.log(1 - sig))
    want = per_example.sum(1).mean()
    got = float(SigmoidCrossEntropy()(labels, logits))
    assert got == pytest.approx(want, rel=1e-5)
    smooth = labels * 0.8 + 0.1
    per_example = -(smooth * np.log(sig) + (1 - smooth) * np.log(1 - sig))
    got = float(SigmoidCrossEntropy(label_smoothing=0.2)(labels, logits))
    assert got == pytest.approx(per_example.sum(1).mean(), rel=1e-5)


def test_set_head_bias():
    model = small_classifier()
    set_head_bias(model, -10.0)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.get_layer("head").bias), -10.0
    )
    with pytest.raises(ValueError, match="classifier"):
        set_head_bias(model, -10.0, layer_name="classifier")
    with pytest.raises(ValueError, match="bias"):
        set_head_bias(model, -10.0, layer_name="norm")


def random_classifier(num_classes=5):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    x = keras.layers.Dense(16, name="features")(inputs)
    x = keras.layers.LayerNormalization(name="norm")(x)
    outputs = keras.layers.Dense(num_classes, name="head")(x)
    return keras.Model(inputs, outputs)


# Each preset at its own settings (its learning rate, optimizer, loss and
# head bias): the paper's Adafactor at 8e-4 moves slowly (a 22 % loss drop
# in 400 steps from the -10 bias), the small preset's AdamW at 2e-3 halves
# the loss in 100.
@pytest.mark.parametrize(
    "preset,steps,bias,ratio", [("paper", 400, -10.0, 0.85),
                                ("small", 100, 0.0, 0.6)]
)
def test_compile_for_pretraining_trains_each_preset(
    preset, steps, bias, ratio
):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = np.eye(5, dtype="float32")[np.argmax(x[:, :5], 1)]
    model = random_classifier()
    # torch runs one step per execution (Keras refuses more there).
    per_execution = 1 if keras.backend.backend() == "torch" else 4
    config = compile_for_pretraining(
        model, total_steps=steps, preset=preset,
        steps_per_execution=per_execution,
    )
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.get_layer("head").bias), bias
    )
    assert config["warmup_steps"] == min(
        PRESETS[preset]["warmup_steps"], steps // 10
    )
    history = model.fit(x, y, batch_size=16, epochs=steps // 4, verbose=0)
    assert int(model.optimizer.iterations) == steps
    assert history.history["epoch_examples"][-1] == 64.0
    losses = history.history["loss"]
    assert losses[-1] < ratio * losses[0]
    assert history.history["accuracy"][-1] > 0.5  # chance is about 0.25
    # The schedule reached zero at the last step.
    assert float(model.optimizer.learning_rate) == 0.0


def test_small_preset_values_and_overrides():
    config = recipe(1000, preset="small", num_classes=10)
    for key in ("base_lr", "optimizer", "weight_decay", "head_wd_mult",
                "clipnorm", "loss", "label_smoothing", "crop_area_range"):
        assert config[key] == SMALL_RECIPE[key], key
    assert (config["warmup_steps"], config["timescale"],
            config["cooldown_steps"]) == (50, 100, 200)
    assert recipe(10_000, preset="small", num_classes=10)["timescale"] == 250
    assert config["head_bias_init"] == 0.0
    sigmoid = recipe(1000, preset="small", num_classes=10, loss="sigmoid")
    assert sigmoid["head_bias_init"] == pytest.approx(-np.log(9))
    assert recipe(1000, preset="small", head_bias_init=None,
                  num_classes=None)["head_bias_init"] is None
    with pytest.raises(ValueError, match="num_classes"):
        recipe(1000, preset="small")
    with pytest.raises(ValueError, match="preset"):
        recipe(1000, preset="tiny")
    with pytest.raises(ValueError, match="base_learning_rate"):
        recipe(1000, base_learning_rate=1e-3)
    with pytest.raises(ValueError, match="crop_area_range"):
        recipe(1000, crop_area_range=(0.5, 0.2))
    assert pipeline_kwargs(config) == {"crop_area_range": (0.35, 1.0)}
    assert pipeline_kwargs(recipe(10)) == {"crop_area_range": (0.05, 1.0)}


def test_head_bias_prior():
    assert head_bias_prior("sigmoid", 10) == pytest.approx(-2.1972, abs=1e-4)
    assert head_bias_prior("sigmoid", 1000) == pytest.approx(-6.907, abs=1e-3)
    # The paper's -10 is JFT's prior (29,593 classes), rounded.
    assert head_bias_prior("sigmoid", 29_593) == pytest.approx(-10.3, abs=0.1)
    assert head_bias_prior("softmax", 10) == 0.0
    with pytest.raises(ValueError, match="num_classes"):
        head_bias_prior("sigmoid", 1)
    # The prior bias makes an untrained sigmoid head predict 1 / C.
    model = small_classifier(num_classes=10)
    model.get_layer("head").kernel.assign(np.zeros((8, 10), "float32"))
    compile_for_pretraining(model, 10, preset="small", loss="sigmoid")
    probs = keras.ops.sigmoid(model(np.ones((1, 6), "float32")))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(probs), 0.1,
                               rtol=1e-5)


@pytest.mark.tf_only
@pytest.mark.parametrize("optimizer", ["adafactor", "adamw"])
def test_recipe_under_mirrored_strategy(mirrored_strategy, optimizer):
    from keras_sovit.training import ComputeBudget

    rng = np.random.default_rng(2)
    x = rng.normal(size=(32, 6)).astype("float32")
    y = np.eye(5, dtype="float32")[np.argmax(x[:, :5], 1)]
    with mirrored_strategy.scope():
        model = small_classifier()
        compile_for_pretraining(
            model, total_steps=6, optimizer=optimizer, warmup_steps=0,
            cooldown_steps=0, base_lr=0.01,
        )
    head = keras.ops.convert_to_numpy(model.get_layer("head").kernel)
    budget = ComputeBudget(48.0, 1.0)  # 6 steps of 8 examples
    model.fit(x, y, batch_size=8, epochs=5, verbose=0, callbacks=[budget])
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 6
    assert budget.examples_seen == 48
    new_head = keras.ops.convert_to_numpy(model.get_layer("head").kernel)
    assert not np.allclose(head, new_head)


def test_recipe_on_sovit_classifier():
    import keras_sovit as ks

    shape = ks.ShapeSpec(32, 1, 64, 2, patch_size=4)
    backbone = ks.models.SoViTBackbone(shape, image_shape=(16, 16, 3))
    model = ks.models.SoViTClassifier(backbone, num_classes=4)
    compile_for_pretraining(model, total_steps=4, base_lr=1e-3)
    head = model.get_layer("head")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(head.bias), -10)
    mults = {
        v.path: model.optimizer.decay_multiplier(v.path)
        for v in model.trainable_variables
    }
    assert mults["head/kernel"] == 100.0
    assert [p for p, m in mults.items() if m == 100.0] == ["head/kernel"]
    # big_vision decays kernels only: no biases, norms, probe, posemb.
    for path, mult in mults.items():
        assert mult == (1.0 if path.endswith("kernel") else 0.0) or (
            path == "head/kernel"
        ), path
