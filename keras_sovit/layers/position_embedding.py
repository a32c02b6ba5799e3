import math

import keras


@keras.saving.register_keras_serializable(package="keras_sovit")
class PositionEmbedding(keras.layers.Layer):
    """Learned position embedding added to a sequence of patch tokens.

    Holds one weight `pos_embedding` of shape (1, tokens, width), initialised
    from normal(stddev=1/sqrt(width)) as in big_vision, and adds it to the
    inputs. There is no class-token position: big_vision adds the position
    embedding before any class token is prepended.

    Args:
        initializer_stddev: float or None. Standard deviation of the normal
            initialiser; `None` uses `1 / sqrt(width)`. Defaults to `None`.
        **kwargs: other keyword arguments of `keras.layers.Layer`, such as
            `name` and `dtype`.

    Call arguments:
        inputs: float tensor of shape `(batch, tokens, width)`.

    Example:

    ```python
    import numpy as np
    posemb = keras_sovit.layers.PositionEmbedding()
    y = posemb(np.zeros((2, 64, 32), "float32"))  # shape (2, 64, 32)
    ```
    """

    def __init__(self, initializer_stddev=None, **kwargs):
        super().__init__(**kwargs)
        if initializer_stddev is not None and not (
            isinstance(initializer_stddev, (int, float))
            and not isinstance(initializer_stddev, bool)
            and initializer_stddev > 0
        ):
            raise ValueError(
                "`initializer_stddev` must be a positive float or None. "
                f"Received: initializer_stddev={initializer_stddev!r}"
            )

        # === Config ===
        self.initializer_stddev = initializer_stddev

    def build(self, input_shape):
        if len(input_shape) != 3 or None in input_shape[1:]:
            raise ValueError(
                "`PositionEmbedding` expects inputs of static shape (batch, "
                f"tokens, width). Received: input_shape={input_shape}"
            )
        width = input_shape[-1]
        stddev = self.initializer_stddev or 1.0 / math.sqrt(width)
        self.pos_embedding = self.add_weight(
            name="pos_embedding",
            shape=(1,) + tuple(input_shape[1:]),
            initializer=keras.initializers.RandomNormal(stddev=stddev),
        )
        self.built = True

    def call(self, inputs):
        return inputs + keras.ops.cast(self.pos_embedding, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"initializer_stddev": self.initializer_stddev})
        return config
