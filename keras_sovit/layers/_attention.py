"""Private building blocks shared by `EncoderBlock` and `MAPHead`.

`MultiHeadDotProductAttention` and `MlpBlock` mirror the flax modules of the
same names in big_vision, with the same weight shapes, so a big_vision
checkpoint loads by renaming keys (`query/kernel` -> `query_kernel`, ...).
"""

import math

import keras
from keras import ops


def xavier_uniform_for(fan_in, fan_out):
    """Xavier/Glorot uniform for a kernel whose flat shape is (in, out).

    flax initialises a `DenseGeneral` kernel such as (D, H, D/H) as the flat
    (D, D) matrix; Keras' `glorot_uniform` would instead treat the leading
    axes of a 3-D kernel as a receptive field. This keeps flax's scale.
    """
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return keras.initializers.RandomUniform(-limit, limit)


class MultiHeadDotProductAttention(keras.layers.Layer):
    """Multi-head dot-product attention with big_vision's weight layout.

    Weights: `query_kernel`, `key_kernel`, `value_kernel` of shape
    (D, H, D/H) with biases (H, D/H), and `out_kernel` (H, D/H, D) with bias
    (D,). Self-attention (`value=None`) runs the Q, K and V projections as
    one (D, 3D) matrix product; cross-attention fuses K and V.

    The attention itself is `keras.ops.dot_product_attention`: a fused
    (flash) kernel where the backend and device have one and
    `keras.config.is_flash_attention_enabled()` is not `False` (`None`,
    the default, lets Keras decide; `True` demands one), the exact
    computation elsewhere, e.g. on CPUs.
    """

    def __init__(self, num_heads, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads

    def build(self, query_shape, value_shape=None):
        width = query_shape[-1]
        head_dim = width // self.num_heads
        proj = (width, self.num_heads, head_dim)
        init = xavier_uniform_for(width, width)
        for prefix in ("query", "key", "value"):
            kernel = self.add_weight(
                name=f"{prefix}_kernel", shape=proj, initializer=init
            )
            bias = self.add_weight(
                name=f"{prefix}_bias",
                shape=proj[1:],
                initializer="zeros",
            )
            setattr(self, f"{prefix}_kernel", kernel)
            setattr(self, f"{prefix}_bias", bias)
        self.out_kernel = self.add_weight(
            name="out_kernel",
            shape=(self.num_heads, head_dim, width),
            initializer=init,
        )
        self.out_bias = self.add_weight(
            name="out_bias", shape=(width,), initializer="zeros"
        )
        self.built = True

    def _project(self, x, names):
        """One matmul for several of the q/k/v projections."""
        width = ops.shape(x)[-1]
        kernels = [getattr(self, f"{n}_kernel") for n in names]
        biases = [getattr(self, f"{n}_bias") for n in names]
        kernel = ops.concatenate(
            [ops.reshape(k, (width, width)) for k in kernels], axis=-1
        )
        bias = ops.concatenate([ops.reshape(b, (width,)) for b in biases])
        y = ops.matmul(x, ops.cast(kernel, x.dtype)) + ops.cast(bias, x.dtype)
        return ops.split(y, len(names), axis=-1)

    def _heads(self, x):
        batch, tokens, _ = ops.shape(x)
        head_dim = x.shape[-1] // self.num_heads
        return ops.reshape(x, (batch, tokens, self.num_heads, head_dim))

    def call(self, query, value=None):
        if value is None:
            q, k, v = self._project(query, ("query", "key", "value"))
        else:
            (q,) = self._project(query, ("query",))
            k, v = self._project(value, ("key", "value"))
        width = query.shape[-1]
        # One fused op, so a backend can pick a flash kernel where the
        # device has one; elsewhere Keras runs the exact softmax(qk^T)v
        # with float32 logits and softmax, as big_vision does.
        out = ops.dot_product_attention(
            self._heads(q),
            self._heads(k),
            self._heads(v),
            scale=1.0 / math.sqrt(width // self.num_heads),
            flash_attention=keras.config.is_flash_attention_enabled(),
        )
        batch, tokens = ops.shape(out)[0], ops.shape(out)[1]
        out = ops.reshape(out, (batch, tokens, width))
        kernel = ops.reshape(self.out_kernel, (width, width))
        return ops.matmul(out, ops.cast(kernel, out.dtype)) + ops.cast(
            self.out_bias, out.dtype
        )

    def compute_output_shape(self, query_shape, value_shape=None):
        return query_shape

    def get_config(self):
        config = super().get_config()
        config.update({"num_heads": self.num_heads})
        return config


class MlpBlock(keras.layers.Layer):
    """big_vision's `MlpBlock`: Dense, GELU, Dropout, Dense.

    Kernels are xavier-uniform, biases normal with stddev 1e-6. GELU is the
    tanh approximation (big_vision, JAX's default) unless
    `approximate_gelu=False` selects the exact erf form (PyTorch's
    `nn.GELU()` default, used by timm's So400m/14 SigLIP definitions).
    """

    def __init__(
        self, mlp_dim, dropout_rate=0.0, approximate_gelu=True, **kwargs
    ):
        super().__init__(**kwargs)
        self.mlp_dim = mlp_dim
        self.dropout_rate = dropout_rate
        self.approximate_gelu = approximate_gelu
        bias_init = keras.initializers.RandomNormal(stddev=1e-6)
        self.dense_0 = keras.layers.Dense(
            mlp_dim,
            kernel_initializer="glorot_uniform",
            bias_initializer=bias_init,
            dtype=self.dtype_policy,
            name="Dense_0",
        )
        self.dropout = keras.layers.Dropout(
            dropout_rate, dtype=self.dtype_policy, name="dropout"
        )
        self._bias_init = bias_init

    def build(self, input_shape):
        self.dense_0.build(input_shape)
        self.dense_1 = keras.layers.Dense(
            input_shape[-1],
            kernel_initializer="glorot_uniform",
            bias_initializer=self._bias_init,
            dtype=self.dtype_policy,
            name="Dense_1",
        )
        self.dense_1.build(tuple(input_shape[:-1]) + (self.mlp_dim,))
        self.built = True

    def call(self, x, training=None, dropout_mask=None):
        """`dropout_mask`, if given, replaces the dropout layer: the GELU
        output is multiplied by it (a mask already scaled by 1 / keep)."""
        x = self.dense_0(x)
        x = keras.activations.gelu(x, approximate=self.approximate_gelu)
        if dropout_mask is not None:
            x = x * dropout_mask
        else:
            x = self.dropout(x, training=training)
        return self.dense_1(x)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "mlp_dim": self.mlp_dim,
                "dropout_rate": self.dropout_rate,
                "approximate_gelu": self.approximate_gelu,
            }
        )
        return config
