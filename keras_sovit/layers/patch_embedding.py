import warnings

import keras
from keras import ops

from keras_sovit._validation import check_bool
from keras_sovit._validation import check_positive_int


@keras.saving.register_keras_serializable(package="keras_sovit")
class PatchEmbedding(keras.layers.Layer):
    """Patchify stem: a patch-strided convolution with a flat token output.

    Computes big_vision's `embedding`, a convolution with `width` filters,
    kernel and stride `patch_size` and VALID padding (lecun-normal kernel,
    zero bias), and flattens the (h, w) patch grid row-major to
    (batch, h * w, width), with `h = height // patch_size` and
    `w = width // patch_size`. As in big_vision, an image side that is not
    a multiple of the patch size loses its last pixels (bottom rows, right
    columns): 384 px at patch 14 gives 27 × 27 tokens, the pixels of 378 px.
    Building the layer on such images warns; `strict=True` makes it a
    `ValueError`. The weights are `kernel` in the HWIO layout
    (patch, patch, channels, width) and `bias` (width,), exactly big_vision's
    `embedding/kernel` and `embedding/bias`. Because the stride equals the
    kernel, the convolution is computed as one matrix product of the
    non-overlapping patches.

    Args:
        width: int. Size of each patch token.
        patch_size: int. Side of the square patches.
        strict: bool. Whether image sides that are not multiples of
            `patch_size` raise a `ValueError` instead of a warning.
            Defaults to `False`.
        **kwargs: other keyword arguments of `keras.layers.Layer`, such as
            `name` and `dtype`.

    Call arguments:
        inputs: images of shape `(batch, height, width, channels)` with
            static height and width of at least `patch_size`.

    Example:

    ```python
    import numpy as np
    stem = keras_sovit.layers.PatchEmbedding(width=64, patch_size=4)
    tokens = stem(np.zeros((2, 32, 32, 3), "float32"))  # (2, 64, 64)
    ```
    """

    def __init__(self, width, patch_size, strict=False, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("width", width)
        check_positive_int("patch_size", patch_size)
        check_bool("strict", strict)

        # === Config ===
        self.width = width
        self.patch_size = patch_size
        self.strict = strict

        # === Weights ===
        # Created in `build` as `kernel` (patch, patch, channels, width)
        # and `bias` (width,), the names of big_vision's `embedding`.

    def _grid(self, input_shape, warn=False):
        if len(input_shape) != 4:
            raise ValueError(
                "`PatchEmbedding` expects images of shape (batch, height, "
                f"width, channels). Received: input_shape={input_shape}"
            )
        p = self.patch_size
        sides = input_shape[1:3]
        for side in sides:
            if side is None or side < p or (self.strict and side % p):
                raise ValueError(
                    "Image height and width must be static and at least "
                    "`patch_size` (multiples of it with strict=True). "
                    f"Received: input_shape={input_shape}, patch_size={p}, "
                    f"strict={self.strict}"
                )
        grid = sides[0] // p, sides[1] // p
        if warn and (sides[0] % p or sides[1] % p):
            warnings.warn(
                f"`PatchEmbedding` drops the last {sides[0] % p} pixel "
                f"rows and {sides[1] % p} columns of {sides[0]}x{sides[1]} "
                f"images (patch_size={p}): the token grid is "
                f"{grid[0]}x{grid[1]}. Pass strict=True to make this an "
                "error.",
                stacklevel=2,
            )
        return grid

    def build(self, input_shape):
        self._grid(input_shape, warn=True)
        p = self.patch_size
        self.kernel = self.add_weight(
            name="kernel",
            shape=(p, p, input_shape[-1], self.width),
            initializer="lecun_normal",
        )
        self.bias = self.add_weight(
            name="bias", shape=(self.width,), initializer="zeros"
        )
        self.built = True

    def call(self, inputs):
        # A VALID convolution whose stride equals its kernel is a matmul of
        # non-overlapping patches; XLA runs the matmul form faster.
        h, w = self._grid(inputs.shape)
        p, channels = self.patch_size, inputs.shape[-1]
        if channels != self.kernel.shape[2]:
            raise ValueError(
                f"`PatchEmbedding` was built for images with "
                f"{self.kernel.shape[2]} channels. Received: images with "
                f"channels={channels} (input shape {inputs.shape})"
            )
        x = inputs
        if inputs.shape[1] != h * p or inputs.shape[2] != w * p:
            x = x[:, : h * p, : w * p, :]
        x = ops.reshape(x, (-1, h, p, w, p, channels))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        x = ops.reshape(x, (-1, h * w, p * p * channels))
        kernel = ops.reshape(self.kernel, (p * p * channels, self.width))
        return ops.matmul(x, kernel) + self.bias

    def compute_output_shape(self, input_shape):
        h, w = self._grid(input_shape)
        return (input_shape[0], h * w, self.width)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "width": self.width,
                "patch_size": self.patch_size,
                "strict": self.strict,
            }
        )
        return config
