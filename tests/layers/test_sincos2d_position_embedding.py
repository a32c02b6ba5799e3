import math

import keras
import numpy as np
import pytest

from keras_sovit.layers import SinCos2DPositionEmbedding
from tests.testing import run_layer_test


def _reference(rows, columns, width, temperature=1e4):
    """Element by element: [sin(x w), cos(x w), sin(y w), cos(y w)]."""
    quarter = width // 4
    table = np.zeros((rows * columns, width))
    for y in range(rows):
        for x in range(columns):
            for i in range(quarter):
                omega = temperature ** (-i / (quarter - 1))
                token = y * columns + x
                table[token, i] = math.sin(x * omega)
                table[token, quarter + i] = math.cos(x * omega)
                table[token, 2 * quarter + i] = math.sin(y * omega)
                table[token, 3 * quarter + i] = math.cos(y * omega)
    return table


def test_layer_basics(tmp_path):
    x = np.random.default_rng(0).normal(size=(2, 12, 16)).astype("float32")
    run_layer_test(
        SinCos2DPositionEmbedding,
        {"grid_size": (3, 4), "temperature": 10000.0},
        x,
        (2, 12, 16),
        tmp_path,
        expected_num_trainable_weights=0,
    )


@pytest.mark.parametrize("grid, width", [((4, 4), 32), ((2, 5), 16)])
def test_values_match_formula(grid, width):
    layer = SinCos2DPositionEmbedding(grid_size=grid)
    zeros = np.zeros((1, grid[0] * grid[1], width), "float32")
    out = keras.ops.convert_to_numpy(layer(zeros))[0]
    np.testing.assert_allclose(out, _reference(*grid, width), atol=1e-6)
    assert layer.weights == []  # fixed, not a weight


def test_square_grid_inferred_and_added():
    x = np.ones((2, 9, 8), "float32")
    out = keras.ops.convert_to_numpy(SinCos2DPositionEmbedding()(x))
    expected = np.broadcast_to(1 + _reference(3, 3, 8), out.shape)
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_width_not_divisible_by_4():
    with pytest.raises(ValueError, match="width"):
        SinCos2DPositionEmbedding()(np.zeros((1, 4, 6), "float32"))


def test_grid_mismatch():
    with pytest.raises(ValueError, match="grid_size"):
        SinCos2DPositionEmbedding(grid_size=(2, 3))(
            np.zeros((1, 4, 8), "float32")
        )


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"grid_size": 0}, "grid_size"),
        ({"grid_size": (2, 2, 2)}, "grid_size"),
        ({"temperature": -1.0}, "temperature"),
    ],
)
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SinCos2DPositionEmbedding(**kwargs)
