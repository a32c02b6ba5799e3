
import keras

from keras_sovit._validation import check_number
from keras_sovit._validation import check_positive_int
from keras_sovit.models.sovit_backbone import FunctionalModel
from keras_sovit.models.sovit_backbone import SoViTBackbone
from keras_sovit.models.sovit_backbone import keep_dtype_policy
from keras_sovit.models.sovit_backbone import with_dtype_policy
from keras_sovit.shapes import ShapeSpec


@keras.saving.register_keras_serializable(package="keras_sovit")
class SoViTClassifier(FunctionalModel):
    """An image classifier: a pooled `SoViTBackbone` plus a linear head.

    The head is a `Dense(num_classes)` layer named `"head"` with a
    zero-initialised kernel (big_vision's `head_zeroinit`) and a constant
    bias `head_bias_init`. The paper's recipes use `-10.0` for sigmoid
    pretraining (`train_vit_g.py`) and `-6.9` (about log(1/1000)) for
    ImageNet fine-tuning (`vit_i1k.py`). An optional `rep_size` inserts
    big_vision's tanh `pre_logits` Dense. The model outputs logits.

    Args:
        backbone: `keras_sovit.models.SoViTBackbone` with a pooled output
            (any `pool_type` but `"none"`).
        num_classes: int. Number of classes.
        head_bias_init: float. Initial value of every head bias.
            Defaults to `0.0`.
        rep_size: int or None. Width of the tanh pre-logits layer; `None`
            leaves it out. Defaults to `None`.
        name: str. Model name. Defaults to `None`.
        dtype: dtype or `keras.DTypePolicy` of the head layers. Defaults to
            `None` (the backbone's policy).

    Example:

    ```python
    import numpy as np
    shape = keras_sovit.ShapeSpec(
        width=64, depth=2, mlp_dim=128, num_heads=4, patch_size=4
    )
    backbone = keras_sovit.models.SoViTBackbone(shape, image_shape=(32, 32, 3))
    model = keras_sovit.models.SoViTClassifier(
        backbone, num_classes=10, head_bias_init=-6.9
    )
    logits = model(np.zeros((2, 32, 32, 3), "float32"))  # (2, 10)

    # From a big_vision variant name ("So400m/14" is the paper's
    # SoViT-400m/14; "mu/4" is tiny):
    tiny = keras_sovit.models.SoViTClassifier.from_variant(
        "mu/4", num_classes=10, image_shape=(32, 32, 3), pool_type="gap"
    )
    ```
    """

    def __init__(
        self,
        backbone,
        num_classes,
        head_bias_init=0.0,
        rep_size=None,
        name=None,
        dtype=None,
        **kwargs,
    ):
        # Long on purpose, as the backbone's: validation, layers, the
        # functional graph and the config, in the order Keras needs them.
        if not isinstance(backbone, SoViTBackbone):
            raise ValueError(
                "`backbone` must be a keras_sovit.models.SoViTBackbone. "
                f"Received: backbone={backbone!r}"
            )
        if backbone.pool_type == "none":
            raise ValueError(
                "`backbone` must pool its tokens; pool_type='none' has no "
                f"pooled output. Received: backbone.pool_type="
                f"{backbone.pool_type!r}"
            )
        check_positive_int("num_classes", num_classes)
        check_number("head_bias_init", head_bias_init)
        if rep_size is not None:
            check_positive_int("rep_size", rep_size)
        dtype = dtype or backbone.dtype_policy

        # === Layers ===
        self.backbone = backbone
        self.pre_logits = None
        if rep_size:
            self.pre_logits = keras.layers.Dense(
                rep_size,
                activation="tanh",
                kernel_initializer="lecun_normal",
                dtype=dtype,
                name="pre_logits",
            )
        self.head = keras.layers.Dense(
            num_classes,
            kernel_initializer="zeros",
            bias_initializer=keras.initializers.Constant(head_bias_init),
            dtype=dtype,
            name="head",
        )

        # === Functional Model ===
        images = keras.Input(shape=backbone.image_shape, name="images")
        x = self.backbone(images)
        if self.pre_logits is not None:
            x = self.pre_logits(x)
        logits = self.head(x)
        super().__init__(
            inputs=images,
            outputs=logits,
            name=name or "sovit_classifier",
            dtype=dtype,
            **kwargs,
        )
        keep_dtype_policy(self, dtype)

        # === Config ===
        self.num_classes = num_classes
        self.head_bias_init = head_bias_init
        self.rep_size = rep_size

    @classmethod
    def from_variant(
        cls,
        variant,
        num_classes,
        image_shape=(224, 224, 3),
        head_bias_init=0.0,
        rep_size=None,
        **backbone_kwargs,
    ):
        """Builds a classifier for a big_vision variant such as "So400m/14".

        Extra keyword arguments (`pool_type`, `posemb`, `dropout_rate`,
        `stochastic_depth_rate`, `remat`, `dtype`) go to `SoViTBackbone`.
        """
        backbone = SoViTBackbone(
            ShapeSpec.from_variant(variant),
            image_shape=image_shape,
            **backbone_kwargs,
        )
        return cls(
            backbone,
            num_classes,
            head_bias_init=head_bias_init,
            rep_size=rep_size,
            dtype=backbone_kwargs.get("dtype"),
        )

    @classmethod
    def from_preset(
        cls,
        preset,
        checkpoint=None,
        num_classes=None,
        load_weights=True,
        image_shape=None,
        dtype=None,
        approximate_gelu=None,
    ):
        """Builds a classifier from a public checkpoint (no download).

        As `SoViTBackbone.from_preset`. `num_classes=None` keeps the
        checkpoint's head (the `*_in1k` presets have 1000 classes); another
        count, or a checkpoint without a head, gets a fresh zero-initialised
        head of that size.
        """
        from keras_sovit.checkpoints.presets import load_preset

        model = load_preset(
            preset,
            checkpoint=checkpoint,
            load_weights=load_weights,
            image_shape=image_shape,
            num_classes=num_classes,
            dtype=dtype,
            approximate_gelu=approximate_gelu,
        )
        if not isinstance(model, cls):
            raise ValueError(
                f"Preset {preset!r} has no classification head; pass "
                "num_classes. Received: num_classes=None"
            )
        return model

    def get_config(self):
        return {
            "backbone": keras.layers.serialize(self.backbone),
            "num_classes": self.num_classes,
            "head_bias_init": self.head_bias_init,
            "rep_size": self.rep_size,
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
        }

    @classmethod
    def from_config(cls, config):
        config = with_dtype_policy(config)
        if isinstance(config["backbone"], dict):
            config["backbone"] = keras.layers.deserialize(config["backbone"])
        return cls(**config)
