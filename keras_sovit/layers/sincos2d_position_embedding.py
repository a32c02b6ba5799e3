import keras
import numpy as np

from keras_sovit._validation import image_hw


@keras.saving.register_keras_serializable(package="keras_sovit")
class SinCos2DPositionEmbedding(keras.layers.Layer):
    """Fixed 2-D sine-cosine position embedding (MoCo v3 layout).

    For a token in row `y` and column `x` of the patch grid (flattened
    row-major) and `omega_i = temperature ** (-i / (width / 4 - 1))`,
    `i = 0 .. width / 4 - 1`, the embedding is the concatenation
    `[sin(x * omega), cos(x * omega), sin(y * omega), cos(y * omega)]`,
    exactly big_vision's `posemb_sincos_2d`. It is a constant, not a weight,
    and is added to the inputs. The width must be divisible by 4.

    Args:
        grid_size: int or `(rows, columns)`. The patch grid of the tokens.
            `None` infers a square grid from the token count. Defaults to
            `None`.
        temperature: float. The frequency base. Defaults to `10000.0`.
        **kwargs: other keyword arguments of `keras.layers.Layer`, such as
            `name` and `dtype`.

    Call arguments:
        inputs: float tensor of shape `(batch, rows * columns, width)`.

    Example:

    ```python
    import numpy as np
    posemb = keras_sovit.layers.SinCos2DPositionEmbedding(grid_size=(8, 8))
    y = posemb(np.zeros((2, 64, 32), "float32"))  # shape (2, 64, 32)
    ```

    Reference:
    - [Chen et al., 2021](https://arxiv.org/abs/2104.02057)
    """

    def __init__(self, grid_size=None, temperature=10000.0, **kwargs):
        super().__init__(**kwargs)
        if grid_size is not None:
            grid_size = image_hw(grid_size, name="grid_size")
        if isinstance(temperature, bool) or not (
            isinstance(temperature, (int, float)) and temperature > 0
        ):
            raise ValueError(
                "`temperature` must be a positive float. "
                f"Received: temperature={temperature!r}"
            )

        # === Config ===
        self.grid_size = grid_size
        self.temperature = temperature

    def _grid(self, input_shape):
        if len(input_shape) != 3 or None in input_shape[1:]:
            raise ValueError(
                "`SinCos2DPositionEmbedding` expects inputs of static shape "
                f"(batch, tokens, width). Received: input_shape={input_shape}"
            )
        tokens, width = input_shape[1:]
        if width % 4:
            raise ValueError(
                "`SinCos2DPositionEmbedding` needs a width divisible by 4. "
                f"Received: width={width}"
            )
        if self.grid_size is None:
            side = int(round(tokens**0.5))
            grid = (side, side)
        else:
            grid = self.grid_size
        if grid[0] * grid[1] != tokens:
            raise ValueError(
                "`grid_size` must match the number of tokens. Received: "
                f"grid_size={self.grid_size!r}, tokens={tokens}"
            )
        return grid

    def build(self, input_shape):
        rows, columns = self._grid(input_shape)
        self._table = sincos2d_table(
            rows, columns, input_shape[-1], self.temperature
        )
        self.built = True

    def call(self, inputs):
        table = keras.ops.convert_to_tensor(self._table, dtype=inputs.dtype)
        return inputs + table

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {"grid_size": self.grid_size, "temperature": self.temperature}
        )
        return config


def sincos2d_table(rows, columns, width, temperature=10000.0):
    """The (1, rows * columns, width) float32 sine-cosine table."""
    y, x = np.mgrid[:rows, :columns]
    quarter = width // 4
    omega = np.arange(quarter, dtype=np.float64) / max(quarter - 1, 1)
    omega = 1.0 / temperature**omega
    y = y.reshape(-1)[:, None] * omega[None, :]
    x = x.reshape(-1)[:, None] * omega[None, :]
    table = np.concatenate(
        [np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1
    )
    return table[None].astype("float32")
