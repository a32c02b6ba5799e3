"""Keras layers of the SoViT / big_vision ViT, backend-agnostic."""

from keras_sovit.layers.encoder_block import EncoderBlock
from keras_sovit.layers.map_head import MAPHead
from keras_sovit.layers.patch_embedding import PatchEmbedding
from keras_sovit.layers.position_embedding import PositionEmbedding
from keras_sovit.layers.sincos2d_position_embedding import (
    SinCos2DPositionEmbedding,
)

__all__ = [
    "EncoderBlock",
    "MAPHead",
    "PatchEmbedding",
    "PositionEmbedding",
    "SinCos2DPositionEmbedding",
]
