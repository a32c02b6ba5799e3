import re

import keras
import numpy as np
import pytest

import keras_sovit
from keras_sovit.models import SoViTBackbone
from tests.testing import check_config_round_trip
from tests.testing import jit_compile
from tests.testing import value_and_gradients

SHAPE = keras_sovit.ShapeSpec(
    width=32, depth=2, mlp_dim=64, num_heads=4, patch_size=8
)
IMAGE_SHAPE = (32, 32, 3)


def _images(n=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, size=(n,) + IMAGE_SHAPE).astype("float32")


@pytest.mark.parametrize("pool_type", ["map", "gap", "tok", "0", "none"])
@pytest.mark.parametrize("posemb", ["learn", "sincos2d"])
def test_count_params_and_output_shape(pool_type, posemb):
    backbone = SoViTBackbone(
        SHAPE, image_shape=IMAGE_SHAPE, pool_type=pool_type, posemb=posemb
    )
    assert backbone.count_params() == SHAPE.num_params(
        image_size=32, pool_type=pool_type, posemb=posemb
    )
    expected = (2, 16, 32) if pool_type == "none" else (2, 32)
    assert tuple(backbone.output.shape[1:]) == expected[1:]
    out = keras.ops.convert_to_numpy(backbone(_images()))
    assert out.shape == expected


def test_config_round_trip():
    check_config_round_trip(
        SoViTBackbone,
        {
            "shape": SHAPE.to_dict(),
            "image_shape": IMAGE_SHAPE,
            "pool_type": "gap",
            "posemb": "sincos2d",
            "dropout_rate": 0.1,
            "stochastic_depth_rate": 0.1,
            "approximate_gelu": False,
            "remat": True,
            "strict_image_size": True,
            "name": "my_backbone",
        },
    )


def test_accepts_shape_spec_or_dict():
    from_spec = SoViTBackbone(SHAPE, image_shape=IMAGE_SHAPE)
    from_dict = SoViTBackbone(SHAPE.to_dict(), image_shape=IMAGE_SHAPE)
    assert from_spec.shape_spec == from_dict.shape_spec == SHAPE
    assert from_spec.get_config()["shape"] == SHAPE.to_dict()


@pytest.mark.parametrize("pool_type", ["map", "tok"])
def test_keras_save_load_identical(tmp_path, pool_type):
    backbone = SoViTBackbone(
        SHAPE, image_shape=IMAGE_SHAPE, pool_type=pool_type
    )
    path = str(tmp_path / "backbone.keras")
    backbone.save(path)
    restored = keras.models.load_model(path)
    assert isinstance(restored, SoViTBackbone)
    assert restored.get_config() == backbone.get_config()
    x = _images(seed=1)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(backbone(x)),
        keras.ops.convert_to_numpy(restored(x)),
    )


def test_big_vision_layer_names_and_posemb_before_cls():
    backbone = SoViTBackbone(SHAPE, image_shape=IMAGE_SHAPE, pool_type="tok")
    paths = {w.path: tuple(w.shape) for w in backbone.weights}
    assert paths["embedding/kernel"] == (8, 8, 3, 32)
    # 16 patches and no class-token position: posemb precedes the cls token.
    assert paths["pos_embedding/pos_embedding"] == (1, 16, 32)
    assert paths["cls/cls"] == (1, 1, 32)
    assert "encoderblock_1/MlpBlock_0/Dense_1/kernel" in paths
    assert "encoder_norm/gamma" in paths
    map_paths = [
        w.path for w in SoViTBackbone(SHAPE, image_shape=IMAGE_SHAPE).weights
    ]
    assert "MAPHead_0/probe" in map_paths


def _tokens_model(backbone):
    return keras.Model(
        backbone.input, backbone.get_layer("encoder_norm").output
    )


@pytest.mark.parametrize("pool_type", ["gap", "0", "tok"])
def test_pooling_reads_encoded_tokens(pool_type):
    backbone = SoViTBackbone(
        SHAPE, image_shape=IMAGE_SHAPE, pool_type=pool_type
    )
    x = _images(seed=2)
    tokens = keras.ops.convert_to_numpy(_tokens_model(backbone)(x))
    pooled = keras.ops.convert_to_numpy(backbone(x))
    expected = tokens.mean(axis=1) if pool_type == "gap" else tokens[:, 0]
    np.testing.assert_allclose(pooled, expected, rtol=1e-5, atol=1e-6)
    assert tokens.shape[1] == (17 if pool_type == "tok" else 16)


def test_stochastic_depth_rates_increase_linearly():
    shape = SHAPE.replace(depth=3)
    backbone = SoViTBackbone(
        shape, image_shape=IMAGE_SHAPE, stochastic_depth_rate=0.2
    )
    rates = [
        backbone.get_layer(f"encoderblock_{i}").stochastic_depth_rate
        for i in range(3)
    ]
    np.testing.assert_allclose(rates, [0.0, 0.1, 0.2])


def test_fit_with_dropout_and_stochastic_depth():
    backbone = SoViTBackbone(
        SHAPE,
        image_shape=IMAGE_SHAPE,
        pool_type="gap",
        dropout_rate=0.1,
        stochastic_depth_rate=0.1,
    )
    backbone.compile(optimizer="adam", loss="mse", jit_compile=jit_compile())
    x = _images(4, seed=3)
    history = backbone.fit(x, np.zeros((4, 32)), epochs=2, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses))
    # Dropout is off at inference: deterministic outputs.
    np.testing.assert_array_equal(
        backbone.predict(x, verbose=0), backbone.predict(x, verbose=0)
    )


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"shape": (32, 2, 64, 4, 8)}, "shape"),
        ({"shape": {"width": 32, "depth": 2}}, "values"),
        # Refused only when strict since issue 12 (VALID patchify).
        ({"image_shape": (30, 32, 3), "strict_image_size": True},
         "image_size"),
        ({"image_shape": (4, 32, 3)}, "image_size"),
        ({"strict_image_size": 1}, "strict_image_size"),
        ({"approximate_gelu": "tanh"}, "approximate_gelu"),
        ({"remat": 1}, "remat"),
        ({"image_shape": (None, 32, 3)}, "image_shape"),
        ({"image_shape": (32, 32)}, "image_shape"),
        ({"image_shape": (32, 32, 0)}, "image_shape"),
        ({"pool_type": "avg"}, "pool_type"),
        ({"posemb": "rope"}, "posemb"),
        ({"dropout_rate": 1.5}, "dropout_rate"),
        ({"stochastic_depth_rate": "0.1"}, "stochastic_depth_rate"),
    ],
)
def test_bad_inputs_raise_value_error(kwargs, name):
    args = {"shape": SHAPE, "image_shape": IMAGE_SHAPE, **kwargs}
    with pytest.raises(ValueError, match=name):
        SoViTBackbone(**args)


@pytest.mark.parametrize("pool_type", ["map", "tok"])
@pytest.mark.parametrize("posemb", ["learn", "sincos2d"])
def test_any_image_size_drops_leftover_pixels(pool_type, posemb):
    # 38 x 45 px at patch 8: a 4 x 5 grid, the pixels of 32 x 40 px.
    kwargs = {"pool_type": pool_type, "posemb": posemb}
    with pytest.warns(UserWarning, match="strict=True"):
        odd = SoViTBackbone(SHAPE, image_shape=(38, 45, 3), **kwargs)
    even = SoViTBackbone(SHAPE, image_shape=(32, 40, 3), **kwargs)
    assert odd.count_params() == SHAPE.num_params(
        (38, 45), pool_type=pool_type, posemb=posemb
    )
    assert odd.count_params() == even.count_params()
    tokens = _tokens_model(odd).output.shape[1]
    assert tokens == SHAPE.num_patches((38, 45)) + (pool_type == "tok")
    assert SHAPE.num_patches((38, 45)) == 20
    even.set_weights(odd.get_weights())
    x = np.random.default_rng(5).uniform(-1, 1, (2, 38, 45, 3))
    x = x.astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(odd(x)),
        keras.ops.convert_to_numpy(even(x[:, :32, :40])),
        rtol=1e-6,
        atol=1e-6,
    )


def test_exact_gelu_reaches_every_mlp(tmp_path):
    backbone = SoViTBackbone(
        SHAPE, image_shape=IMAGE_SHAPE, approximate_gelu=False
    )
    flags = [
        layer.approximate_gelu
        for layer in backbone.layers
        if hasattr(layer, "approximate_gelu")
    ]
    assert flags == [False] * (SHAPE.depth + 1)  # blocks and the MAP head
    tanh = SoViTBackbone(SHAPE, image_shape=IMAGE_SHAPE)
    tanh.set_weights(backbone.get_weights())
    x = _images(seed=4)
    exact_out = keras.ops.convert_to_numpy(backbone(x))
    assert not np.allclose(
        exact_out, keras.ops.convert_to_numpy(tanh(x)), rtol=0, atol=1e-7
    )
    path = str(tmp_path / "exact.keras")
    backbone.save(path)
    restored = keras.models.load_model(path)
    assert restored.approximate_gelu is False
    np.testing.assert_array_equal(
        exact_out, keras.ops.convert_to_numpy(restored(x))
    )


def test_sincos2d_needs_width_divisible_by_4():
    shape = keras_sovit.ShapeSpec(
        width=18, depth=1, mlp_dim=8, num_heads=3, patch_size=8
    )
    with pytest.raises(ValueError, match="width"):
        SoViTBackbone(shape, image_shape=IMAGE_SHAPE, posemb="sincos2d")


def _twin_backbones(**kwargs):
    """A plain backbone and a rematerialised one, equal weights and seeds."""
    models = []
    for remat in (False, True):
        keras.utils.set_random_seed(4)
        models.append(
            SoViTBackbone(
                SHAPE, image_shape=IMAGE_SHAPE, remat=remat, **kwargs
            )
        )
    models[1].set_weights(models[0].get_weights())
    return models


def test_remat_keeps_outputs_and_gradients():
    plain, remat = _twin_backbones(
        dropout_rate=0.1, stochastic_depth_rate=0.2
    )
    assert all(b.remat for b in remat.encoder_blocks)
    assert not any(b.remat for b in plain.encoder_blocks)
    x = _images(3, seed=2)
    keras.utils.set_random_seed(9)  # torch's dropout uses its global RNG
    loss, grads = value_and_gradients(plain, x)
    keras.utils.set_random_seed(9)
    remat_loss, remat_grads = value_and_gradients(remat, x)
    np.testing.assert_allclose(remat_loss, loss, rtol=1e-6)
    assert len(grads) == len(plain.trainable_variables)
    for g, h in zip(grads, remat_grads):
        np.testing.assert_allclose(h, g, rtol=1e-5, atol=1e-6)


def test_remat_fits_and_round_trips_through_keras_file(tmp_path):
    _, backbone = _twin_backbones(pool_type="gap")
    x = _images(4, seed=3)
    target = np.zeros((4, 32), "float32")
    backbone.compile(
        optimizer=keras.optimizers.SGD(0.1), loss="mse",
        jit_compile=jit_compile(),
    )
    before = backbone.evaluate(x, target, verbose=0)
    backbone.fit(x, target, epochs=3, verbose=0)
    assert backbone.evaluate(x, target, verbose=0) < 0.9 * before
    path = tmp_path / "remat.keras"
    backbone.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.remat and all(b.remat for b in loaded.encoder_blocks)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), backbone.predict(x, verbose=0),
        rtol=1e-6, atol=1e-6,
    )


@pytest.mark.skipif(
    keras.backend.backend() != "torch",
    reason="counts the tensors torch's autograd keeps for the backward",
)
def test_remat_keeps_fewer_activations_for_the_backward_pass():
    import torch

    def saved_bytes(model):
        total = []

        def pack(tensor):
            total.append(tensor.numel() * tensor.element_size())
            return tensor

        x = _images(8, seed=1)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = (model(x, training=True) ** 2).sum()
        loss.backward()
        return sum(total)

    plain, remat = _twin_backbones(pool_type="gap")
    plain_bytes, remat_bytes = saved_bytes(plain), saved_bytes(remat)
    # Per block the plain model keeps its LayerNorm, attention and MLP
    # intermediates; the rematerialised one little more than its input.
    assert remat_bytes < 0.5 * plain_bytes, (remat_bytes, plain_bytes)


@pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="reads the JAX program"
)
def test_remat_puts_one_checkpoint_per_block_in_the_jax_program():
    import jax

    for model, expected in zip(_twin_backbones(), (0, SHAPE.depth)):
        trainable = [v.value for v in model.trainable_variables]
        others = [v.value for v in model.non_trainable_variables]

        def loss(values, x, model=model, others=others):
            y, _ = model.stateless_call(values, others, x, training=True)
            return (y**2).sum()

        jaxpr = str(jax.make_jaxpr(jax.grad(loss))(trainable, _images()))
        # jax.checkpoint's primitive ("remat2" in JAX 0.10), once a block.
        assert len(re.findall(r"\bremat\w*\[", jaxpr)) == expected
