"""Private class-token layer for `pool_type="tok"`."""

import keras
from keras import ops


class ClassToken(keras.layers.Layer):
    """Prepends a learned, zero-initialised `cls` token (1, 1, width)."""

    def build(self, input_shape):
        self.cls = self.add_weight(
            name="cls", shape=(1, 1, input_shape[-1]), initializer="zeros"
        )
        self.built = True

    def call(self, inputs):
        batch = ops.shape(inputs)[0]
        cls = ops.cast(self.cls, inputs.dtype)
        cls = ops.broadcast_to(cls, (batch, 1, inputs.shape[-1]))
        return ops.concatenate([cls, inputs], axis=1)

    def compute_output_shape(self, input_shape):
        tokens = None if input_shape[1] is None else input_shape[1] + 1
        return (input_shape[0], tokens, input_shape[2])
