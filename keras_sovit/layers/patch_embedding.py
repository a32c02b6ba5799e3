import keras
from keras import ops

from keras_sovit._validation import check_positive_int


@keras.saving.register_keras_serializable(package="keras_sovit")
class PatchEmbedding(keras.layers.Layer):
    """Patchify stem: a patch-strided convolution with a flat token output.

    Computes big_vision's `embedding`, a convolution with `width` filters,
    kernel and stride `patch_size` and VALID padding (lecun-normal kernel,
    zero bias), and flattens the (h, w) patch grid row-major to
    (batch, h * w, width). The weights are `kernel` in the HWIO layout
    (patch, patch, channels, width) and `bias` (width,), exactly big_vision's
    `embedding/kernel` and `embedding/bias`. Because the stride equals the
    kernel, the convolution is computed as one matrix product of the
    non-overlapping patches.

    Args:
        width: int. Size of each patch token.
        patch_size: int. Side of the square patches.
        **kwargs: other keyword arguments of `keras.layers.Layer`, such as
            `name` and `dtype`.

    Call arguments:
        inputs: images of shape `(batch, height, width, channels)` with
            static height and width divisible by `patch_size`.

    Example:

    ```python
    import numpy as np
    stem = keras_sovit.layers.PatchEmbedding(width=64, patch_size=4)
    tokens = stem(np.zeros((2, 32, 32, 3), "float32"))  # (2, 64, 64)
    ```
    """

    def __init__(self, width, patch_size, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("width", width)
        check_positive_int("patch_size", patch_size)

        # === Config ===
        self.width = width
        self.patch_size = patch_size

        # === Weights ===
        # Created in `build` as `kernel` (patch, patch, channels, width)
        # and `bias` (width,), the names of big_vision's `embedding`.

    def _grid(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                "`PatchEmbedding` expects images of shape (batch, height, "
                f"width, channels). Received: input_shape={input_shape}"
            )
        sides = input_shape[1:3]
        for side in sides:
            if side is None or side % self.patch_size:
                raise ValueError(
                    "Image height and width must be static and divisible by "
                    f"`patch_size`. Received: input_shape={input_shape}, "
                    f"patch_size={self.patch_size}"
                )
        return sides[0] // self.patch_size, sides[1] // self.patch_size

    def build(self, input_shape):
        self._grid(input_shape)
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
        x = ops.reshape(inputs, (-1, h, p, w, p, channels))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        x = ops.reshape(x, (-1, h * w, p * p * channels))
        kernel = ops.reshape(self.kernel, (p * p * channels, self.width))
        return ops.matmul(x, kernel) + self.bias

    def compute_output_shape(self, input_shape):
        h, w = self._grid(input_shape)
        return (input_shape[0], h * w, self.width)

    def get_config(self):
        config = super().get_config()
        config.update({"width": self.width, "patch_size": self.patch_size})
        return config
