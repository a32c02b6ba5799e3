"""The bad inputs of issue "Every public call checks its values": each is
refused at construction with a ValueError naming the argument (or the
checkpoint key), where before it built silently or failed deep inside."""

import math

import keras
import numpy as np
import pytest

import keras_sovit
from keras_sovit import training
from keras_sovit.layers import EncoderBlock
from keras_sovit.layers import MAPHead
from keras_sovit.models import SoViTBackbone
from keras_sovit.models import SoViTClassifier

SHAPE = keras_sovit.ShapeSpec(32, 2, 64, 4, patch_size=8)


@pytest.mark.parametrize("base_lr", [math.nan, math.inf, -0.1, "0.1"])
def test_schedule_learning_rate(base_lr):
    with pytest.raises(ValueError, match="base_lr"):
        training.RsqrtSchedule(base_lr, 10, 10, 10, 100)


@pytest.mark.parametrize(
    "overrides, name",
    [
        ({"base_lr": -0.03}, "base_lr"),
        ({"base_lr": math.nan}, "base_lr"),
        ({"momentum": 1.5}, "momentum"),
        ({"layer_decay": 0.0}, "layer_decay"),
        ({"layer_decay": 1.5}, "layer_decay"),
    ],
)
def test_fine_tuning_recipe_values(overrides, name):
    with pytest.raises(ValueError, match=name):
        training.fine_tuning_recipe(100, **overrides)


@pytest.mark.parametrize("decay", [-0.5, 0.0, 1.5, math.nan])
def test_layer_decay_multipliers_share_the_recipes_rule(decay):
    backbone = SoViTBackbone(SHAPE, image_shape=(16, 16, 3))
    with pytest.raises(ValueError, match="layer_decay"):
        training.layer_decay_multipliers(backbone, decay)
    # The rule's own edge is accepted: 1.0 leaves every multiplier at 1.
    assert {m for _, m in training.layer_decay_multipliers(backbone, 1.0)} \
        == {1.0}


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"momentum": 1.5}, "momentum"),
        ({"momentum": -0.1}, "momentum"),
        ({"epsilon": 0.0}, "epsilon"),
        ({"beta2_cap": 1.5}, "beta2_cap"),
        ({"decay_rate": math.nan}, "decay_rate"),
        ({"min_dim_size_to_factor": 0}, "min_dim_size_to_factor"),
        ({"clipping_threshold": -1.0}, "clipping_threshold"),
    ],
)
def test_adafactor_values(kwargs, name):
    with pytest.raises(ValueError, match=name):
        training.BigVisionAdafactor(learning_rate=1e-3, **kwargs)
    training.BigVisionAdafactor(learning_rate=1e-3, momentum=None)


@pytest.mark.parametrize("epsilon", [-1.0, 0.0, math.nan])
def test_layer_norm_epsilon(epsilon):
    with pytest.raises(ValueError, match="layer_norm_epsilon"):
        EncoderBlock(4, 64, layer_norm_epsilon=epsilon)
    with pytest.raises(ValueError, match="layer_norm_epsilon"):
        MAPHead(4, 64, layer_norm_epsilon=epsilon)


@pytest.mark.parametrize("bias", [math.nan, math.inf, "0"])
def test_head_bias_init(bias):
    backbone = SoViTBackbone(SHAPE, image_shape=(16, 16, 3))
    with pytest.raises(ValueError, match="head_bias_init"):
        SoViTClassifier(backbone, 3, head_bias_init=bias)


def test_hypermodel_image_shape():
    from keras_sovit.tuner import SoViTHyperModel

    for bad in (16, (16, 16), (16, 16, 0), (16.0, 16, 3)):
        with pytest.raises(ValueError, match="image_shape"):
            SoViTHyperModel(4, bad)


def test_checkpoint_missing_the_first_blocks_mlp_names_the_key():
    model = SoViTBackbone(SHAPE, image_shape=(16, 16, 3))
    arrays = {
        k: keras.ops.convert_to_numpy(v.value) for k, v in
        keras_sovit.checkpoints._layout.model_variables(model).items()
    }  # fmt: skip
    key = "Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel"
    del arrays[key]
    with pytest.raises(ValueError, match=key.replace("/", "/") + r".*\(32,"):
        keras_sovit.checkpoints.load_big_vision(
            {k: np.asarray(v) for k, v in arrays.items()}
        )
