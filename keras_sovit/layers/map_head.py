import keras
from keras import ops

from keras_sovit._validation import check_bool
from keras_sovit._validation import check_epsilon
from keras_sovit._validation import check_positive_int
from keras_sovit.layers._attention import MlpBlock
from keras_sovit.layers._attention import MultiHeadDotProductAttention
from keras_sovit.layers._checks import check_token_input


@keras.saving.register_keras_serializable(package="keras_sovit")
class MAPHead(keras.layers.Layer):
    """Multihead attention pooling, big_vision's `MAPHead`.

    A learned `probe` of shape (1, 1, width), xavier-uniform initialised,
    is tiled over the batch and attends to all tokens; then
    `x + MLP(LayerNorm(x))` and the single probe token is returned. The MLP
    uses the same `mlp_dim` (and GELU form) as the encoder blocks. Weight
    names map to big_vision's `MAPHead_0` by renaming: `probe`,
    `MultiHeadDotProductAttention_0`, `LayerNorm_0`, `MlpBlock_0`.

    Args:
        num_heads: int. Number of attention heads; must divide the width.
        mlp_dim: int. Hidden size of the MLP.
        layer_norm_epsilon: float. LayerNorm epsilon. Defaults to `1e-6`.
        approximate_gelu: bool. Whether the MLP uses the tanh
            approximation of GELU (`True`, big_vision) or the exact erf form
            (`False`, PyTorch's default). Defaults to `True`.
        **kwargs: other keyword arguments of `keras.layers.Layer`, such as
            `name` and `dtype`.

    Call arguments:
        inputs: float tensor of shape `(batch, tokens, width)`.

    Returns:
        Pooled features of shape `(batch, width)`.

    Example:

    ```python
    import numpy as np
    head = keras_sovit.layers.MAPHead(num_heads=4, mlp_dim=128)
    y = head(np.zeros((2, 16, 64), "float32"))  # shape (2, 64)
    ```

    Reference:
    - [Lee et al., 2019](https://arxiv.org/abs/1810.00825)
    - [Zhai et al., 2022](https://arxiv.org/abs/2106.04560)
    """

    def __init__(
        self,
        num_heads,
        mlp_dim,
        layer_norm_epsilon=1e-6,
        approximate_gelu=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int("num_heads", num_heads)
        check_positive_int("mlp_dim", mlp_dim)
        check_bool("approximate_gelu", approximate_gelu)
        check_epsilon("layer_norm_epsilon", layer_norm_epsilon)

        # === Config ===
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.layer_norm_epsilon = layer_norm_epsilon
        self.approximate_gelu = approximate_gelu

        # === Layers ===
        self.attention = MultiHeadDotProductAttention(
            num_heads,
            dtype=self.dtype_policy,
            name="MultiHeadDotProductAttention_0",
        )
        self.layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon,
            dtype=self.dtype_policy,
            name="LayerNorm_0",
        )
        self.mlp = MlpBlock(
            mlp_dim,
            approximate_gelu=approximate_gelu,
            dtype=self.dtype_policy,
            name="MlpBlock_0",
        )

    def build(self, input_shape):
        width = check_token_input("MAPHead", input_shape, self.num_heads)
        self.probe = self.add_weight(
            name="probe",
            shape=(1, 1, width),
            initializer="glorot_uniform",
        )
        probe_shape = (input_shape[0], 1, width)
        self.attention.build(probe_shape, input_shape)
        self.layer_norm.build(probe_shape)
        self.mlp.build(probe_shape)
        self.built = True

    def call(self, inputs):
        batch = ops.shape(inputs)[0]
        probe = ops.cast(self.probe, inputs.dtype)
        probe = ops.broadcast_to(probe, (batch, 1, inputs.shape[-1]))
        x = self.attention(probe, inputs)
        x = x + self.mlp(self.layer_norm(x))
        return x[:, 0]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "mlp_dim": self.mlp_dim,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "approximate_gelu": self.approximate_gelu,
            }
        )
        return config
