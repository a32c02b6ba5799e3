import inspect

import keras
import numpy as np
import pytest

import keras_sovit
from keras_sovit.models import SoViTBackbone
from keras_sovit.models import SoViTClassifier
from tests.testing import jit_compile as default_jit_compile

SHAPE = keras_sovit.ShapeSpec(
    width=32, depth=1, mlp_dim=64, num_heads=4, patch_size=8
)
IMAGE_SHAPE = (32, 32, 3)
NUM_CLASSES = 5


def _data(n=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n,) + IMAGE_SHAPE).astype("float32")
    y = np.eye(NUM_CLASSES, dtype="float32")[np.arange(n) % NUM_CLASSES]
    return x, y


def _classifier(pool_type="map", posemb="learn", **kwargs):
    backbone = SoViTBackbone(
        SHAPE, image_shape=IMAGE_SHAPE, pool_type=pool_type, posemb=posemb
    )
    return SoViTClassifier(backbone, NUM_CLASSES, **kwargs)


def _compile(model, jit_compile=None):
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        jit_compile=default_jit_compile() if jit_compile is None else (
            jit_compile
        ),
    )


@pytest.mark.parametrize(
    "pool_type, posemb, rep_size",
    [
        ("map", "learn", None),
        ("map", "sincos2d", 16),
        ("gap", "learn", 24),
        ("tok", "sincos2d", None),
        ("0", "learn", None),
    ],
)
def test_count_params_matches_shape_spec(pool_type, posemb, rep_size):
    model = _classifier(pool_type, posemb, rep_size=rep_size)
    assert model.count_params() == SHAPE.num_params(
        image_size=32,
        num_classes=NUM_CLASSES,
        pool_type=pool_type,
        posemb=posemb,
        rep_size=rep_size,
    )


def test_head_zero_kernel_and_bias_init():
    model = _classifier(head_bias_init=-6.9)
    head = model.get_layer("head")
    assert not np.any(keras.ops.convert_to_numpy(head.kernel))
    x, _ = _data(3)
    logits = keras.ops.convert_to_numpy(model(x))
    np.testing.assert_allclose(logits, np.full((3, NUM_CLASSES), -6.9), 1e-6)


def test_pre_logits_is_tanh():
    model = _classifier(rep_size=16)
    x, _ = _data(3)
    pre = keras.Model(model.input, model.get_layer("pre_logits").output)
    features = keras.ops.convert_to_numpy(pre(x))
    assert features.shape == (3, 16)
    assert np.all(np.abs(features) < 1.0)
    backbone_out = keras.ops.convert_to_numpy(model.backbone(x))
    layer = model.get_layer("pre_logits")
    expected = np.tanh(
        backbone_out @ keras.ops.convert_to_numpy(layer.kernel)
        + keras.ops.convert_to_numpy(layer.bias)
    )
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)


def test_config_round_trip():
    model = _classifier(head_bias_init=-10.0, rep_size=8, name="clf")
    config = model.get_config()
    params = inspect.signature(SoViTClassifier.__init__).parameters
    for key in params:
        if key not in ("self", "kwargs"):
            assert key in config, key
    assert config["head_bias_init"] == -10.0 and config["rep_size"] == 8
    restored = SoViTClassifier.from_config(config)
    assert restored.get_config() == config
    assert restored.count_params() == model.count_params()
    revived = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(model)
    )
    assert isinstance(revived, SoViTClassifier)
    assert revived.get_config() == config


def test_keras_save_load_identical(tmp_path):
    model = _classifier(rep_size=8, head_bias_init=-1.0)
    x, y = _data()
    _compile(model)
    model.fit(x, y, epochs=1, verbose=0)  # non-zero head weights
    path = str(tmp_path / "clf.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    assert isinstance(restored, SoViTClassifier)
    assert isinstance(restored.backbone, SoViTBackbone)
    np.testing.assert_array_equal(
        model.predict(x, verbose=0), restored.predict(x, verbose=0)
    )


def test_fit_jit_compile_reduces_loss(request):
    # XLA on TensorFlow and JAX; on torch this is torch.compile, 3 minutes
    # of C++ code generation on a CPU, so only with --run_large there.
    if keras.backend.backend() == "torch" and not request.config.getoption(
        "--run_large"
    ):
        pytest.skip("torch.compile takes minutes on a CPU (--run_large)")
    model = _classifier(pool_type="gap")
    x, y = _data(10)
    _compile(model, jit_compile=True)
    history = model.fit(x, y, batch_size=10, epochs=8, verbose=0)
    losses = history.history["loss"]
    np.testing.assert_allclose(losses[0], np.log(NUM_CLASSES), rtol=1e-4)
    assert losses[-1] < losses[0] - 0.05


def test_mixed_bfloat16():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = _classifier()
        assert model.get_layer("head").compute_dtype == "bfloat16"
        assert all(w.dtype == "float32" for w in model.weights)
        x, y = _data()
        _compile(model)
        history = model.fit(x, y, epochs=2, verbose=0)
        assert np.all(np.isfinite(history.history["loss"]))
        assert keras.backend.standardize_dtype(model(x).dtype) == "bfloat16"
    finally:
        keras.config.set_dtype_policy(previous)


def test_dtype_argument_is_kept_inherited_and_saved(tmp_path):
    backbone = SoViTBackbone(
        SHAPE, image_shape=IMAGE_SHAPE, dtype="mixed_bfloat16"
    )
    model = SoViTClassifier(backbone, NUM_CLASSES)
    assert backbone.dtype_policy.name == "mixed_bfloat16"
    assert model.dtype_policy.name == "mixed_bfloat16"
    assert model.get_layer("head").compute_dtype == "bfloat16"
    x, _ = _data()
    path = str(tmp_path / "bf16.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    assert restored.dtype_policy.name == "mixed_bfloat16"
    assert restored.backbone.get_layer("encoderblock_0").compute_dtype == (
        "bfloat16"
    )
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model(x)),
        keras.ops.convert_to_numpy(restored(x)),
    )


def test_default_names():
    model = _classifier()
    assert model.name.startswith("sovit_classifier")
    assert model.backbone.name.startswith("sovit_backbone")


@pytest.mark.tf_only
def test_mirrored_strategy(mirrored_strategy):
    assert mirrored_strategy.num_replicas_in_sync == 2
    with mirrored_strategy.scope():
        model = _classifier()
        # XLA with MirroredStrategy on logical CPUs fails (ANCHORS 7.2.4);
        # "auto" resolves to no XLA here.
        _compile(model, jit_compile="auto")
    x, y = _data(8)
    before = keras.ops.convert_to_numpy(model.get_layer("head").bias)
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    after = keras.ops.convert_to_numpy(model.get_layer("head").bias)
    assert not np.allclose(before, after)
    assert "Mirrored" in type(model.get_layer("head").bias.value).__name__


def test_from_variant():
    model = SoViTClassifier.from_variant(
        "mu/8", num_classes=3, image_shape=(32, 32, 3), pool_type="gap"
    )
    shape = keras_sovit.ShapeSpec.from_variant("mu/8")
    assert model.backbone.shape_spec == shape
    assert model.backbone.pool_type == "gap"
    assert model.count_params() == shape.num_params(
        image_size=32, num_classes=3, pool_type="gap"
    )


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": 2.0}, "num_classes"),
        ({"rep_size": -1}, "rep_size"),
        ({"head_bias_init": "x"}, "head_bias_init"),
    ],
)
def test_bad_inputs_raise_value_error(kwargs, name):
    backbone = SoViTBackbone(SHAPE, image_shape=IMAGE_SHAPE)
    args = {"num_classes": NUM_CLASSES, **kwargs}
    with pytest.raises(ValueError, match=name):
        SoViTClassifier(backbone, **args)


def test_backbone_must_pool():
    backbone = SoViTBackbone(SHAPE, image_shape=IMAGE_SHAPE, pool_type="none")
    with pytest.raises(ValueError, match="pool_type"):
        SoViTClassifier(backbone, NUM_CLASSES)
    with pytest.raises(ValueError, match="backbone"):
        SoViTClassifier(keras.layers.Dense(3), NUM_CLASSES)


def test_from_variant_unknown():
    with pytest.raises(ValueError, match="variant"):
        SoViTClassifier.from_variant("Q/16", num_classes=3)
