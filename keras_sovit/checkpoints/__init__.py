"""Pretrained weights in and out: big_vision, timm and HF transformers.

Nothing here touches the network: every loader reads a file or a dict of
arrays you already have. All formats are converted to big_vision's names
and shapes, which the SoViT layers mirror one to one; settings a SoViT
cannot represent raise a `ValueError` that names them.
"""

from keras_sovit.checkpoints.big_vision_format import load_big_vision
from keras_sovit.checkpoints.big_vision_format import save_big_vision
from keras_sovit.checkpoints.resample import resample_position_embedding
from keras_sovit.checkpoints.timm_format import load_timm
from keras_sovit.checkpoints.transformers_format import load_transformers

__all__ = [
    "load_big_vision",
    "load_timm",
    "load_transformers",
    "resample_position_embedding",
    "save_big_vision",
]
