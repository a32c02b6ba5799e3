import math

import keras
import numpy as np
import pytest

import keras_sovit
from keras_sovit.models import SoViTBackbone
from keras_sovit.models import SoViTClassifier
from keras_sovit.training import LayerDecaySGD
from keras_sovit.training import compile_for_fine_tuning
from keras_sovit.training import fine_tuning_recipe
from keras_sovit.training import layer_decay_multipliers
from keras_sovit.training import make_fine_tuning_schedule

SHAPE = keras_sovit.ShapeSpec(32, 3, 48, 4, patch_size=4)


def _classifier(num_classes=5):
    backbone = SoViTBackbone(SHAPE, image_shape=(16, 16, 3), pool_type="map")
    return SoViTClassifier(backbone, num_classes)


@pytest.mark.parametrize(
    "resolution, decay, randaugment, mixup",
    [(224, 0.85, None, None), (384, 0.9, (2, 10), 0.2),
     (518, 0.9, (2, 10), 0.2)],
)  # fmt: skip
def test_recipe_is_table_8(resolution, decay, randaugment, mixup):
    config = fine_tuning_recipe(50_000, paper_resolution=resolution)
    assert config == {
        "total_steps": 50_000,
        "base_lr": 0.03,
        "momentum": 0.9,
        "clipnorm": 1.0,
        "warmup_steps": 500,
        "layer_decay": decay,
        "randaugment": randaugment,
        "mixup_alpha": mixup,
    }
    assert fine_tuning_recipe(1000)["warmup_steps"] == 100
    assert fine_tuning_recipe(1000, base_lr=0.01)["base_lr"] == 0.01


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"total_steps": 0}, "total_steps"),
        ({"total_steps": 10, "paper_resolution": 256}, "paper_resolution"),
        ({"total_steps": 10, "weight_decay": 0.1}, "weight_decay"),
        ({"total_steps": 10, "layer_decay": 1.5}, "layer_decay"),
        ({"total_steps": 10, "warmup_steps": 10}, "warmup_steps"),
    ],
)
def test_recipe_refuses_bad_settings(kwargs, name):
    with pytest.raises(ValueError, match=name):
        fine_tuning_recipe(**kwargs)


def test_layer_decay_multipliers_cover_every_variable():
    model = _classifier()
    optimizer = LayerDecaySGD(lr_mults=layer_decay_multipliers(model, 0.5))
    mults = {v.path: optimizer.lr_multiplier(v.path) for v in model.weights}
    assert mults["embedding/kernel"] == 0.5**4
    assert mults["pos_embedding/pos_embedding"] == 0.5**4
    assert mults["encoderblock_0/LayerNorm_0/gamma"] == 0.5**3
    assert mults["encoderblock_2/MlpBlock_0/Dense_1/kernel"] == 0.5
    assert mults["encoder_norm/gamma"] == 1.0
    assert mults["MAPHead_0/probe"] == 1.0
    assert mults["head/kernel"] == 1.0
    assert len({v for k, v in mults.items() if "encoderblock" in k}) == 3


def test_layer_decay_sgd_matches_numpy_momentum_sgd():
    rng = np.random.default_rng(0)
    variables = [
        keras.Variable(rng.normal(size=(3, 2)).astype("float32"), name=n)
        for n in ("slow", "fast")
    ]
    optimizer = LayerDecaySGD(
        learning_rate=0.1, momentum=0.9, lr_mults=[("slow", 0.25)]
    )
    values = [
        keras.ops.convert_to_numpy(v).astype("float64") for v in variables
    ]
    velocity = [np.zeros_like(v) for v in values]
    for step in range(3):
        grads = [rng.normal(size=(3, 2)).astype("float32") for _ in variables]
        optimizer.apply([keras.ops.convert_to_tensor(g) for g in grads],
                        variables)  # fmt: skip
        for i, (g, lr) in enumerate(zip(grads, (0.025, 0.1))):
            velocity[i] = 0.9 * velocity[i] - lr * g
            values[i] = values[i] + velocity[i]
    for variable, expected in zip(variables, values):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(variable), expected, rtol=1e-5
        )
    restored = LayerDecaySGD.from_config(optimizer.get_config())
    assert restored.lr_mults == (("slow", 0.25),)
    with pytest.raises(ValueError, match="lr_mults"):
        LayerDecaySGD(lr_mults=[("(", 1.0)])


def test_schedule_warms_up_then_cosine():
    config = fine_tuning_recipe(1000, base_lr=0.02)
    schedule = make_fine_tuning_schedule(config)
    assert float(schedule(0)) == pytest.approx(0.0, abs=1e-9)
    assert float(schedule(50)) == pytest.approx(0.01, rel=1e-5)
    assert float(schedule(100)) == pytest.approx(0.02, rel=1e-5)
    # Half-way through the cosine part: half the peak.
    assert float(schedule(550)) == pytest.approx(0.01, rel=1e-4)
    assert float(schedule(1000)) == pytest.approx(0.0, abs=1e-7)


def test_compile_resets_the_head_and_trains():
    model = _classifier(num_classes=7)
    head = model.get_layer("head")
    head.kernel.assign(np.ones(head.kernel.shape, "float32"))
    config = fine_tuning_recipe(20)
    optimizer = compile_for_fine_tuning(model, config)
    assert not np.any(keras.ops.convert_to_numpy(head.kernel))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(head.bias), -math.log(7), rtol=1e-6
    )
    assert optimizer.global_clipnorm == 1.0
    assert optimizer.momentum == 0.9
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(8, 16, 16, 3)).astype("float32")
    y = np.eye(7, dtype="float32")[np.arange(8) % 7]
    # Zero kernel: every logit is -log 7, every probability 1/8, so the
    # summed sigmoid cross-entropy is exact.
    expected = -np.log(1 / 8) - 6 * np.log(1 - 1 / 8)
    first = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    assert first == pytest.approx(expected, rel=1e-5)
    history = model.fit(x, y, epochs=3, batch_size=8, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    with pytest.raises(ValueError, match="config"):
        compile_for_fine_tuning(model, {"base_lr": 0.1})
    with pytest.raises(ValueError, match="model"):
        compile_for_fine_tuning(model.backbone, config)
