import numpy as np
import pytest
from scipy.interpolate import RegularGridInterpolator

from keras_sovit.checkpoints import resample_position_embedding


def _posemb(tokens, width=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(1, tokens, width)).astype("float32")


def _bilinear_corner_aligned(grid, new):
    """Independent bilinear resampling: output cell (i, j) samples the old
    grid at (i * (h - 1) / (h' - 1), j * (w - 1) / (w' - 1))."""
    h, w, _ = grid.shape
    interp = RegularGridInterpolator(
        (np.arange(h), np.arange(w)), grid.astype("float64"), method="linear"
    )
    rows = np.linspace(0, h - 1, new[0])
    cols = np.linspace(0, w - 1, new[1])
    points = np.stack(np.meshgrid(rows, cols, indexing="ij"), axis=-1)
    return interp(points.reshape(-1, 2))


@pytest.mark.parametrize(
    "old, new",
    [
        ((4, 4), (7, 7)),
        ((16, 16), (27, 27)),
        ((4, 6), (3, 5)),
        ((5, 5), (2, 9)),
    ],
)
def test_matches_independent_bilinear_interpolation(old, new):
    posemb = _posemb(old[0] * old[1])
    out = resample_position_embedding(posemb, new, old_grid=old)
    assert out.shape == (1, new[0] * new[1], 8) and out.dtype == np.float32
    expected = _bilinear_corner_aligned(posemb.reshape(old + (8,)), new)
    np.testing.assert_allclose(out[0], expected, rtol=1e-5, atol=1e-6)


def test_square_grid_is_inferred_and_int_grid_accepted():
    posemb = _posemb(16 * 16)
    np.testing.assert_array_equal(
        resample_position_embedding(posemb, 27),
        resample_position_embedding(posemb, (27, 27), old_grid=(16, 16)),
    )


def test_unchanged_grid_and_2d_input():
    posemb = _posemb(12)
    same = resample_position_embedding(posemb, (3, 4), old_grid=(3, 4))
    np.testing.assert_array_equal(same, posemb)
    flat = resample_position_embedding(posemb[0], 5, old_grid=(3, 4))
    assert flat.shape == (25, 8)
    np.testing.assert_array_equal(
        flat, resample_position_embedding(posemb, 5, old_grid=(3, 4))[0]
    )


def test_nearest_order_copies_values():
    posemb = _posemb(4)
    out = resample_position_embedding(posemb, 4, order=0)
    grid = out.reshape(4, 4, 8)
    old = posemb.reshape(2, 2, 8)
    np.testing.assert_array_equal(grid[0, 0], old[0, 0])
    np.testing.assert_array_equal(grid[3, 3], old[1, 1])
    assert {tuple(v) for v in out[0]} <= {tuple(v) for v in posemb[0]}


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"posemb": np.zeros((2, 16, 8)), "new_grid": 4}, "posemb"),
        ({"posemb": np.zeros((16,)), "new_grid": 4}, "posemb"),
        ({"posemb": np.zeros((1, 12, 8)), "new_grid": 4}, "old_grid"),
        (
            {"posemb": np.zeros((1, 12, 8)), "new_grid": 4, "old_grid": (4, 4)},
            "old_grid",
        ),  # fmt: skip
        ({"posemb": np.zeros((1, 16, 8)), "new_grid": 0}, "new_grid"),
        (
            {"posemb": np.zeros((1, 16, 8)), "new_grid": 4, "order": 2},
            "order",
        ),  # fmt: skip
    ],
)
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        resample_position_embedding(**kwargs)
