import keras
import numpy as np
import pytest

from keras_sovit.layers import PositionEmbedding
from tests.testing import run_layer_test


def test_layer_basics(tmp_path):
    x = np.random.default_rng(0).normal(size=(2, 16, 32)).astype("float32")
    run_layer_test(
        PositionEmbedding,
        {"initializer_stddev": None},
        x,
        (2, 16, 32),
        tmp_path,
        expected_num_trainable_weights=1,
    )


def test_adds_weight_with_big_vision_init():
    width = 256
    layer = PositionEmbedding()
    x = np.random.default_rng(1).normal(size=(3, 64, width))
    out = keras.ops.convert_to_numpy(layer(x.astype("float32")))
    table = keras.ops.convert_to_numpy(layer.pos_embedding)
    assert table.shape == (1, 64, width)
    np.testing.assert_allclose(out, x + table, rtol=1e-6, atol=1e-6)
    # normal(stddev = 1 / sqrt(width)) = 0.0625.
    assert abs(table.std() - 1 / np.sqrt(width)) < 0.05 / np.sqrt(width)


def test_custom_stddev():
    layer = PositionEmbedding(initializer_stddev=2.0)
    layer.build((None, 64, 64))
    std = keras.ops.convert_to_numpy(layer.pos_embedding).std()
    assert abs(std - 2.0) < 0.1


@pytest.mark.parametrize("stddev", [0.0, -1.0, "x", True])
def test_bad_stddev(stddev):
    with pytest.raises(ValueError, match="initializer_stddev"):
        PositionEmbedding(initializer_stddev=stddev)
