import keras
from keras import ops

from keras_sovit._validation import check_bool
from keras_sovit._validation import check_epsilon
from keras_sovit._validation import check_positive_int
from keras_sovit._validation import check_rate
from keras_sovit.layers._attention import MlpBlock
from keras_sovit.layers._attention import MultiHeadDotProductAttention
from keras_sovit.layers._checks import check_token_input


@keras.saving.register_keras_serializable(package="keras_sovit")
class EncoderBlock(keras.layers.Layer):
    """A pre-LayerNorm Transformer encoder block, as in big_vision's ViT.

    `x + Dropout(MHA(LN(x)))`, then `x + Dropout(MLP(LN(x)))`, with
    LayerNorm epsilon 1e-6, xavier-uniform attention and MLP kernels, MLP
    biases drawn from normal(stddev=1e-6) and the tanh approximation of
    GELU (big_vision's; `approximate_gelu=False` selects exact erf GELU,
    as in timm's So400m/14 SigLIP models). Dropout sits where big_vision
    puts it: after the attention output, after the GELU inside the MLP and
    after the MLP output; there is no
    attention-probability dropout. Optional stochastic depth drops each
    residual branch per example during training.

    `remat=True` rematerialises the block (`keras.remat`: `jax.checkpoint`,
    `tf.recompute_grad` or torch's activation checkpointing): the backward
    pass recomputes the block's activations from its input instead of
    keeping them, trading one more forward pass for the block's activation
    memory (big_vision trains So400m this way). The outputs and gradients
    are those of the plain block: the dropout and stochastic-depth masks
    are drawn once, before the recomputed part, from the same seeds.

    Weight names follow big_vision's `Encoder1DBlock`, so a checkpoint maps
    by renaming: `LayerNorm_0`, `MultiHeadDotProductAttention_0` (with
    `query_kernel` (D, H, D/H), `query_bias` (H, D/H), ... `out_kernel`
    (H, D/H, D), `out_bias` (D,)), `LayerNorm_1`,
    `MlpBlock_0/Dense_0`, `MlpBlock_0/Dense_1`.

    Args:
        num_heads: int. Number of attention heads; must divide the width.
        mlp_dim: int. Hidden size of the MLP.
        dropout_rate: float. Dropout rate (see above). Defaults to `0.0`.
        stochastic_depth_rate: float. Probability of dropping each
            residual branch of an example while training. Defaults to `0.0`.
        layer_norm_epsilon: float. LayerNorm epsilon. Defaults to `1e-6`.
        approximate_gelu: bool. Whether the MLP uses the tanh
            approximation of GELU (`True`, big_vision) or the exact erf form
            (`False`, PyTorch's default). Defaults to `True`.
        remat: bool. Whether to rematerialise the block in the backward
            pass (see above). Defaults to `False`.
        **kwargs: other keyword arguments of `keras.layers.Layer`, such as
            `name` and `dtype`.

    Call arguments:
        inputs: float tensor of shape `(batch, tokens, width)`.
        training: bool. Whether dropout and stochastic depth are active.

    Example:

    ```python
    import numpy as np
    block = keras_sovit.layers.EncoderBlock(num_heads=4, mlp_dim=128)
    y = block(np.zeros((2, 16, 64), "float32"))  # shape (2, 16, 64)
    ```

    Reference:
    - [Dosovitskiy et al., 2020](https://arxiv.org/abs/2010.11929)
    - [Alabdulmohsin et al., 2023](https://arxiv.org/abs/2305.13035)
    """

    def __init__(
        self,
        num_heads,
        mlp_dim,
        dropout_rate=0.0,
        stochastic_depth_rate=0.0,
        layer_norm_epsilon=1e-6,
        approximate_gelu=True,
        remat=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int("num_heads", num_heads)
        check_positive_int("mlp_dim", mlp_dim)
        check_rate("dropout_rate", dropout_rate)
        check_rate("stochastic_depth_rate", stochastic_depth_rate)
        check_bool("approximate_gelu", approximate_gelu)
        check_epsilon("layer_norm_epsilon", layer_norm_epsilon)
        check_bool("remat", remat)

        # === Config ===
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.dropout_rate = dropout_rate
        self.stochastic_depth_rate = stochastic_depth_rate
        self.layer_norm_epsilon = layer_norm_epsilon
        self.approximate_gelu = approximate_gelu
        self.remat = remat

        # === Layers ===
        self.layer_norm_0 = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon,
            dtype=self.dtype_policy,
            name="LayerNorm_0",
        )
        self.attention = MultiHeadDotProductAttention(
            num_heads,
            dtype=self.dtype_policy,
            name="MultiHeadDotProductAttention_0",
        )
        self.attention_dropout = keras.layers.Dropout(
            dropout_rate, dtype=self.dtype_policy, name="attention_dropout"
        )
        self.layer_norm_1 = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon,
            dtype=self.dtype_policy,
            name="LayerNorm_1",
        )
        self.mlp = MlpBlock(
            mlp_dim,
            dropout_rate=dropout_rate,
            approximate_gelu=approximate_gelu,
            dtype=self.dtype_policy,
            name="MlpBlock_0",
        )
        self.mlp_dropout = keras.layers.Dropout(
            dropout_rate, dtype=self.dtype_policy, name="mlp_dropout"
        )
        if stochastic_depth_rate:
            self.seed_generator = keras.random.SeedGenerator(
                name="stochastic_depth_seed"
            )

    def build(self, input_shape):
        check_token_input("EncoderBlock", input_shape, self.num_heads)
        self.layer_norm_0.build(input_shape)
        self.attention.build(input_shape)
        self.layer_norm_1.build(input_shape)
        self.mlp.build(input_shape)
        self.built = True

    def _masks(self, inputs, training):
        """The block's random masks, scaled by 1 / keep, drawn up front.

        Each comes from the seed generator of the layer it belongs to
        (drawn as `keras.random.dropout` of ones), so the forward pass
        itself is deterministic and a rematerialised block recomputes it
        with the same masks. Only the masks in use are drawn.
        """
        if not training:
            return {}
        batch, tokens, width = ops.shape(inputs)
        dtype = inputs.dtype
        masks = {}
        for name, layer, size in (
            ("attention", self.attention_dropout, width),
            ("hidden", self.mlp.dropout, self.mlp_dim),
            ("mlp", self.mlp_dropout, width),
        ):
            if layer.rate > 0:
                ones = ops.ones((batch, tokens, size), dtype)
                masks[name] = keras.random.dropout(
                    ones, layer.rate, seed=layer.seed_generator
                )
        if self.stochastic_depth_rate:
            keep = 1.0 - self.stochastic_depth_rate
            for name in ("attention_path", "mlp_path"):
                uniform = keras.random.uniform(
                    (batch, 1, 1), dtype=dtype, seed=self.seed_generator
                )
                masks[name] = ops.cast(uniform < keep, dtype) / ops.cast(
                    keep, dtype
                )
        return masks

    def _forward(self, inputs, masks):
        def apply(name, x):
            return x * masks[name] if name in masks else x

        y = self.attention(self.layer_norm_0(inputs))
        x = inputs + apply("attention_path", apply("attention", y))
        y = self.mlp(self.layer_norm_1(x), dropout_mask=masks.get("hidden"))
        return x + apply("mlp_path", apply("mlp", y))

    def call(self, inputs, training=None):
        masks = self._masks(inputs, training)
        if not self.remat:
            return self._forward(inputs, masks)
        names = tuple(masks)

        def forward(x, *values):
            return self._forward(x, dict(zip(names, values)))

        return keras.remat(forward)(inputs, *(masks[n] for n in names))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "mlp_dim": self.mlp_dim,
                "dropout_rate": self.dropout_rate,
                "stochastic_depth_rate": self.stochastic_depth_rate,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "approximate_gelu": self.approximate_gelu,
                "remat": self.remat,
            }
        )
        return config

