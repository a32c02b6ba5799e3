"""Position-embedding resampling, for fine-tuning at a new resolution."""

import math

import numpy as np
import scipy.ndimage

from keras_sovit._validation import check_choice
from keras_sovit._validation import image_hw


def grid_of(tokens, grid=None, name="old_grid"):
    """`grid` as (rows, columns), or the square grid of `tokens` cells."""
    if grid is None:
        side = math.isqrt(tokens)
        if side * side != tokens:
            raise ValueError(
                f"A position embedding of {tokens} tokens is not a square "
                f"grid; pass {name}. Received: {name}=None"
            )
        return side, side
    grid = image_hw(grid, name=name)
    if grid[0] * grid[1] != tokens:
        raise ValueError(
            f"`{name}` must have as many cells as the embedding has "
            f"tokens ({tokens}). Received: {name}={grid!r}"
        )
    return grid


def resample_position_embedding(posemb, new_grid, old_grid=None, order=1):
    """Resamples a learned position embedding to a new patch grid.

    The embedding is seen as a (rows, columns, width) image and zoomed to
    the new grid with `scipy.ndimage.zoom`, spline order 1 by default:
    bilinear interpolation whose corner cells keep their values and no
    anti-aliasing, which is what big_vision's `resample_posemb` does when a
    checkpoint is fine-tuned at another resolution (224 px at patch 14 is
    16 × 16 tokens, 384 px is 27 × 27). timm and HF transformers interpolate
    bicubically when they resize at run time; results differ slightly.

    Args:
        posemb: array of shape `(1, tokens, width)` or `(tokens, width)`,
            e.g. the `pos_embedding` weight of a `SoViTBackbone`.
        new_grid: int or `(rows, columns)`. The target patch grid.
        old_grid: int, `(rows, columns)` or `None`. The grid of `posemb`;
            `None` means square (as big_vision assumes). Defaults to
            `None`.
        order: int. Spline order of the zoom: `1` (bilinear, big_vision),
            `0` (nearest) or `3` (cubic spline). Defaults to `1`.

    Returns:
        A float32 NumPy array of shape `(1, rows * columns, width)` (or
        `(rows * columns, width)` for a 2-D input). An unchanged grid
        returns the values unchanged.

    Example:

    ```python
    import numpy as np
    posemb = np.random.normal(size=(1, 16 * 16, 32)).astype("float32")
    bigger = keras_sovit.checkpoints.resample_position_embedding(
        posemb, new_grid=27
    )  # (1, 729, 32), as for 224 -> 384 px at patch 14
    ```
    """
    values = np.asarray(posemb)
    if values.ndim not in (2, 3) or (values.ndim == 3 and values.shape[0] != 1):
        raise ValueError(
            "`posemb` must have shape (1, tokens, width) or (tokens, "
            f"width). Received: posemb.shape={values.shape}"
        )
    check_choice("order", order, (0, 1, 3))
    tokens, width = values.shape[-2:]
    old = grid_of(tokens, old_grid)
    new = image_hw(new_grid, name="new_grid")
    values = values.astype(np.float32).reshape(old + (width,))
    if new != old:
        zoom = (new[0] / old[0], new[1] / old[1], 1.0)
        values = scipy.ndimage.zoom(values, zoom, order=order)
        if values.shape[:2] != new:  # zoom rounds; never seen, but be sure.
            raise ValueError(f"Resampling to {new} gave {values.shape[:2]}.")
    values = values.reshape((new[0] * new[1], width))
    if np.asarray(posemb).ndim == 3:
        values = values[None]
    return values
