"""The competitors' models that more than one benchmark builds.

Imports keras and keras-hub only when called, so a benchmark chooses its
backend first.
"""


def keras_hub_siglip(shape, image_size, num_classes, dtype=None):
    """keras-hub's `SigLIPVisionEncoder` of `shape` + a zero linear head.

    The same architecture as `SoViTBackbone` with a MAP head (pre-LN
    blocks, tanh-GELU, MAP pooling); keras-hub is a benchmark-only
    dependency (`pip install keras-hub==0.32.0`).
    """
    import keras
    import keras_hub

    encoder = keras_hub.models.SigLIPVisionEncoder(
        patch_size=shape.patch_size,
        hidden_dim=shape.width,
        num_layers=shape.depth,
        num_heads=shape.num_heads,
        intermediate_dim=shape.mlp_dim,
        intermediate_activation="gelu_approximate",
        image_shape=(image_size, image_size, 3),
        dtype=dtype,
    )
    images = keras.Input((image_size, image_size, 3))
    logits = keras.layers.Dense(
        num_classes, kernel_initializer="zeros", dtype=dtype, name="head"
    )(encoder(images))
    return keras.Model(images, logits, name="siglip_classifier")
