import keras
from keras import ops

from keras_sovit._validation import check_bool
from keras_sovit._validation import check_image_shape
from keras_sovit._validation import check_rate
from keras_sovit.layers._class_token import ClassToken
from keras_sovit.layers.encoder_block import EncoderBlock
from keras_sovit.layers.map_head import MAPHead
from keras_sovit.layers.patch_embedding import PatchEmbedding
from keras_sovit.layers.position_embedding import PositionEmbedding
from keras_sovit.layers.sincos2d_position_embedding import (
    SinCos2DPositionEmbedding,
)
from keras_sovit.shapes import check_shape_spec


class FunctionalModel(keras.Model):
    """A functional `keras.Model` whose constructor sets attributes early.

    The SoViT models create their layers, and keep them as attributes,
    before `keras.Model.__init__` runs. On the torch backend a Keras model
    is a `torch.nn.Module`, which refuses sub-modules before its own
    `__init__`; those early attributes are stored plainly instead (the
    functional graph tracks the layers anyway).
    """

    def __setattr__(self, name, value):
        if (
            keras.backend.backend() == "torch"
            and "_modules" not in self.__dict__
            and not name.startswith("_")
        ):
            object.__setattr__(self, name, value)
            return
        super().__setattr__(name, value)


@keras.saving.register_keras_serializable(package="keras_sovit")
class SoViTBackbone(FunctionalModel):
    """A (shape-optimised) Vision Transformer backbone, as in big_vision.

    Patchify stem, position embedding (added before any class token),
    dropout, `depth` pre-LN encoder blocks, a final LayerNorm and pooling.
    Every dimension comes from a `keras_sovit.ShapeSpec`, so
    `backbone.count_params()` equals `shape.num_params(...)`. Shapes are
    static: the image shape is fixed at construction, which keeps the model
    compilable by XLA and usable under `tf.distribute.TPUStrategy`.

    Layer names follow big_vision, so a checkpoint maps by renaming keys:
    `embedding`, `pos_embedding`, `cls`, `encoderblock_{i}` (big_vision's
    `Transformer/encoderblock_{i}`), `encoder_norm` and `MAPHead_0`.
    The encoded tokens are available as
    `backbone.get_layer("encoder_norm").output`.

    Args:
        shape: `keras_sovit.ShapeSpec`, or a dict of its five fields.
        image_shape: tuple `(height, width, channels)`. Any height and
            width of at least one patch: as in big_vision, the patchify is
            VALID and leftover pixels are dropped (384 px at patch 14 is a
            27 × 27 grid), with a warning. Defaults to `(224, 224, 3)`.
        pool_type: str. `"map"` (multihead attention pooling), `"gap"`
            (mean over tokens), `"tok"` (a prepended class token), `"0"`
            (the first patch token) or `"none"` (return all tokens).
            Defaults to `"map"`.
        posemb: str. `"learn"` or `"sincos2d"` (fixed; needs a width
            divisible by 4). Defaults to `"learn"`.
        dropout_rate: float. Dropout after the position embedding and
            inside every block. Defaults to `0.0`.
        stochastic_depth_rate: float. Stochastic depth rate of the last
            block; block `i` uses `rate * i / (depth - 1)`. Defaults to
            `0.0`.
        approximate_gelu: bool. tanh-approximate GELU in every MLP (`True`,
            big_vision) or exact erf GELU (`False`, timm's So400m/14
            SigLIP). Defaults to `True`.
        remat: bool. Whether every encoder block is rematerialised in
            the backward pass (`keras.remat`, per block, as big_vision
            trains So400m): activation memory of about one block's
            input per block instead of all its intermediates, for one
            more forward pass of compute. Outputs and gradients are
            unchanged. Defaults to `False`.
        strict_image_size: bool. Whether an image size that is not a
            multiple of the patch size raises a `ValueError` instead of a
            warning. Defaults to `False`.
        name: str. Model name. Defaults to `None`.
        dtype: dtype or `keras.DTypePolicy` of the layers. Defaults to
            `None` (the global policy).

    Returns:
        Pooled features `(batch, width)`, or tokens
        `(batch, tokens, width)` for `pool_type="none"`.

    Example:

    ```python
    import keras
    import numpy as np
    shape = keras_sovit.ShapeSpec(
        width=64, depth=2, mlp_dim=128, num_heads=4, patch_size=4
    )
    backbone = keras_sovit.models.SoViTBackbone(shape, image_shape=(32, 32, 3))
    features = backbone(np.zeros((2, 32, 32, 3), "float32"))  # (2, 64)
    assert backbone.count_params() == shape.num_params(32)

    # A big_vision variant by name; the paper's SoViT-400m/14 is
    # ShapeSpec.from_variant("So400m/14") (428M parameters).
    small = keras_sovit.models.SoViTBackbone(
        keras_sovit.ShapeSpec.from_variant("S/16"),
        image_shape=(224, 224, 3),
        posemb="sincos2d",
    )
    tokens = keras.Model(
        small.input, small.get_layer("encoder_norm").output
    )  # (batch, 196, 384) encoded tokens
    ```

    Reference:
    - [Alabdulmohsin et al., 2023](https://arxiv.org/abs/2305.13035)
    """

    def __init__(
        self,
        shape,
        image_shape=(224, 224, 3),
        pool_type="map",
        posemb="learn",
        dropout_rate=0.0,
        stochastic_depth_rate=0.0,
        approximate_gelu=True,
        remat=False,
        strict_image_size=False,
        name=None,
        dtype=None,
        **kwargs,
    ):
        # One long constructor on purpose (keras-hub's backbone layout):
        # validation, layers, the functional graph and the config in the
        # order Keras needs them, each section marked.
        spec = check_shape_spec("shape", shape, allow_dict=True)
        image_shape = check_image_shape(image_shape)
        check_bool("strict_image_size", strict_image_size)
        # Validates pool_type, posemb and the image size against the patch
        # size with ValueErrors, before any framework code runs.
        spec.num_params(
            image_size=image_shape[:2],
            pool_type=pool_type,
            posemb=posemb,
            channels=image_shape[2],
            strict=strict_image_size,
        )
        check_rate("dropout_rate", dropout_rate)
        check_rate("stochastic_depth_rate", stochastic_depth_rate)
        check_bool("approximate_gelu", approximate_gelu)
        check_bool("remat", remat)
        grid = (
            image_shape[0] // spec.patch_size,
            image_shape[1] // spec.patch_size,
        )

        # === Layers ===
        self.patch_embedding = PatchEmbedding(
            spec.width,
            spec.patch_size,
            strict=strict_image_size,
            dtype=dtype,
            name="embedding",
        )
        if posemb == "learn":
            self.position_embedding = PositionEmbedding(
                dtype=dtype, name="pos_embedding"
            )
        else:
            self.position_embedding = SinCos2DPositionEmbedding(
                grid_size=grid, dtype=dtype, name="pos_embedding"
            )
        self.class_token = None
        if pool_type == "tok":
            self.class_token = ClassToken(dtype=dtype, name="cls")
        self.embedding_dropout = keras.layers.Dropout(
            dropout_rate, dtype=dtype, name="dropout"
        )
        self.encoder_blocks = [
            EncoderBlock(
                spec.num_heads,
                spec.mlp_dim,
                dropout_rate=dropout_rate,
                stochastic_depth_rate=_block_rate(
                    stochastic_depth_rate, i, spec.depth
                ),
                approximate_gelu=approximate_gelu,
                remat=remat,
                dtype=dtype,
                name=f"encoderblock_{i}",
            )
            for i in range(spec.depth)
        ]
        self.encoder_norm = keras.layers.LayerNormalization(
            epsilon=1e-6, dtype=dtype, name="encoder_norm"
        )
        self.map_head = None
        if pool_type == "map":
            self.map_head = MAPHead(
                spec.num_heads,
                spec.mlp_dim,
                approximate_gelu=approximate_gelu,
                dtype=dtype,
                name="MAPHead_0",
            )

        # === Functional Model ===
        images = keras.Input(shape=image_shape, name="images")
        x = self.patch_embedding(images)
        x = self.position_embedding(x)
        if self.class_token is not None:
            x = self.class_token(x)
        x = self.embedding_dropout(x)
        for block in self.encoder_blocks:
            x = block(x)
        x = self.encoder_norm(x)
        if pool_type == "map":
            x = self.map_head(x)
        elif pool_type == "gap":
            x = ops.mean(x, axis=1)
        elif pool_type in ("0", "tok"):
            x = x[:, 0]
        super().__init__(
            inputs=images,
            outputs=x,
            name=name or "sovit_backbone",
            dtype=dtype,
            **kwargs,
        )
        keep_dtype_policy(self, dtype)

        # === Config ===
        self.shape_spec = spec
        self.image_shape = image_shape
        self.pool_type = pool_type
        self.posemb = posemb
        self.dropout_rate = dropout_rate
        self.stochastic_depth_rate = stochastic_depth_rate
        self.approximate_gelu = approximate_gelu
        self.remat = remat
        self.strict_image_size = strict_image_size

    @classmethod
    def from_preset(
        cls,
        preset,
        checkpoint=None,
        load_weights=True,
        image_shape=None,
        dtype=None,
        approximate_gelu=None,
    ):
        """Builds the backbone of a public checkpoint (no download).

        `preset` names an entry of `keras_sovit.models.SOVIT_PRESETS`
        (e.g. `"siglip_so400m_patch14_384"`); `checkpoint` is the path of
        a file of that preset you fetched yourself, in any of its formats
        (big_vision `.npz`, timm or HF transformers weights), told apart
        automatically. A classifier's head is dropped. `image_shape`
        defaults to the preset's resolution; another one resamples the
        position embedding. `load_weights=False` gives random weights.
        `approximate_gelu=None` uses the preset's GELU for that format.
        """
        from keras_sovit.checkpoints.presets import load_preset

        return load_preset(
            preset,
            checkpoint=checkpoint,
            load_weights=load_weights,
            image_shape=image_shape,
            num_classes=0,
            dtype=dtype,
            approximate_gelu=approximate_gelu,
        )

    def get_config(self):
        return {
            "shape": self.shape_spec.to_dict(),
            "image_shape": self.image_shape,
            "pool_type": self.pool_type,
            "posemb": self.posemb,
            "dropout_rate": self.dropout_rate,
            "stochastic_depth_rate": self.stochastic_depth_rate,
            "approximate_gelu": self.approximate_gelu,
            "remat": self.remat,
            "strict_image_size": self.strict_image_size,
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**with_dtype_policy(config))


def with_dtype_policy(config):
    """A copy of a model config whose serialized `dtype` is a policy again."""
    config = dict(config)
    if isinstance(config.get("dtype"), dict):
        config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
    return config


def keep_dtype_policy(model, dtype):
    """Sets a functional model's policy to the `dtype` its layers use.

    Functional models ignore the `dtype` argument; without this the model
    would report and serialize the global policy instead.
    """
    if dtype is not None:
        model.dtype_policy = keras.dtype_policies.get(dtype)


def _block_rate(rate, index, depth):
    return rate * index / (depth - 1) if depth > 1 else rate
