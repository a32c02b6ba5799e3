import keras
import numpy as np
import pytest

from keras_sovit.layers import PatchEmbedding
from tests.testing import run_layer_test


def _images(seed=0, shape=(2, 16, 24, 3)):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def test_layer_basics(tmp_path):
    run_layer_test(
        PatchEmbedding,
        {"width": 16, "patch_size": 4, "strict": False},
        _images(),
        (2, 4 * 6, 16),
        tmp_path,
        expected_num_trainable_weights=2,
    )


def test_equals_strided_convolution_row_major():
    x = _images(1)
    stem = PatchEmbedding(width=8, patch_size=4)
    stem.build(x.shape)
    rng = np.random.default_rng(2)
    stem.bias.assign(rng.normal(size=(8,)).astype("float32"))
    kernel = keras.ops.convert_to_numpy(stem.kernel).astype("float64")
    bias = keras.ops.convert_to_numpy(stem.bias).astype("float64")
    out = keras.ops.convert_to_numpy(stem(x))

    # Direct loop over patches of the VALID, stride-4 convolution.
    expected = np.zeros((2, 4 * 6, 8))
    for i in range(4):
        for j in range(6):
            patch = x[:, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4, :]
            expected[:, i * 6 + j] = (
                np.tensordot(patch.astype("float64"), kernel, axes=3) + bias
            )
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)

    # And Keras' own Conv2D with the same HWIO kernel agrees.
    conv = keras.layers.Conv2D(8, 4, strides=4, padding="valid")
    conv.build(x.shape)
    conv.set_weights([kernel.astype("float32"), bias.astype("float32")])
    conv_out = keras.ops.convert_to_numpy(conv(x)).reshape(2, 24, 8)
    np.testing.assert_allclose(out, conv_out, rtol=1e-5, atol=1e-5)


def test_lecun_normal_kernel_and_zero_bias():
    stem = PatchEmbedding(width=256, patch_size=4)
    stem.build((None, 8, 8, 3))
    kernel = keras.ops.convert_to_numpy(stem.kernel)
    assert kernel.shape == (4, 4, 3, 256)
    # Truncated normal with stddev sqrt(1 / fan_in), fan_in = 4 * 4 * 3.
    assert abs(kernel.std() - np.sqrt(1 / 48)) < 0.1 * np.sqrt(1 / 48)
    assert not np.any(keras.ops.convert_to_numpy(stem.bias))


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"width": 0, "patch_size": 4}, "width"),
        ({"width": 8, "patch_size": 2.0}, "patch_size"),
    ],
)
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        PatchEmbedding(**kwargs)


def test_image_not_divisible_by_patch_strict():
    # Since issue 12 the default drops leftover pixels; strict=True refuses.
    with pytest.raises(ValueError, match="patch_size"):
        PatchEmbedding(width=8, patch_size=5, strict=True)(
            np.zeros((1, 16, 16, 3))
        )


def test_image_smaller_than_a_patch():
    with pytest.raises(ValueError, match="patch_size"):
        PatchEmbedding(width=8, patch_size=5)(np.zeros((1, 4, 16, 3)))


def test_leftover_pixels_dropped_with_a_warning():
    x = _images(3, shape=(2, 19, 26, 3))
    stem = PatchEmbedding(width=8, patch_size=4)
    with pytest.warns(UserWarning, match="3 pixel rows and 2 columns"):
        stem.build(x.shape)
    out = keras.ops.convert_to_numpy(stem(x))
    assert out.shape == (2, 4 * 6, 8)
    # Same as the layer on the image cropped to its top-left 16 x 24 px.
    cropped = PatchEmbedding(width=8, patch_size=4)
    cropped.build((None, 16, 24, 3))
    cropped.set_weights(stem.get_weights())
    expected = keras.ops.convert_to_numpy(cropped(x[:, :16, :24]))
    np.testing.assert_array_equal(out, expected)
    # A strided Conv2D with VALID padding drops the same pixels.
    conv = keras.layers.Conv2D(8, 4, strides=4, padding="valid")
    conv.build(x.shape)
    conv.set_weights(stem.get_weights())
    conv_out = keras.ops.convert_to_numpy(conv(x)).reshape(2, 24, 8)
    np.testing.assert_allclose(out, conv_out, rtol=1e-5, atol=1e-5)
    assert stem.compute_output_shape((None, 19, 26, 3)) == (None, 24, 8)


def test_strict_in_config():
    stem = PatchEmbedding(width=8, patch_size=4, strict=True)
    assert stem.get_config()["strict"] is True
    with pytest.raises(ValueError, match="strict"):
        PatchEmbedding(width=8, patch_size=4, strict="yes")


def test_images_with_other_channels_than_built_for_are_refused():
    import keras_sovit

    layer = keras_sovit.layers.PatchEmbedding(width=16, patch_size=8)
    layer.build((None, 32, 32, 3))
    with pytest.raises(ValueError, match="3 channels.*channels=1"):
        layer(np.zeros((2, 32, 32, 1), "float32"))
    backbone = keras_sovit.models.SoViTBackbone(
        keras_sovit.ShapeSpec(16, 1, 32, 2, patch_size=8),
        image_shape=(32, 32, 3),
    )
    with pytest.raises(ValueError, match="channels=1"):
        backbone(np.zeros((2, 32, 32, 1), "float32"))
