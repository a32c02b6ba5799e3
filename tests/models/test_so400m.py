"""The paper's SoViT-400m/14 at 384 px, built for real (no training).

About 11 s and 3 GB on the TensorFlow pass; built once per `make test`
(the JAX and torch passes skip it: 19 s and 26 s there, same counts).
"""

import gc

import keras
import pytest

import keras_sovit
from keras_sovit.models import SoViTBackbone


def test_so400m_14_at_384_px():
    if keras.backend.backend() != "tensorflow":
        pytest.skip("built once, on the TensorFlow pass")
    spec = keras_sovit.ShapeSpec.from_variant("So400m/14")
    # 384 = 27 * 14 + 6: VALID patchify drops 6 pixels, as big_vision.
    with pytest.warns(UserWarning, match="6 pixel rows and 6 columns"):
        backbone = SoViTBackbone(spec, image_shape=(384, 384, 3))
    tokens = backbone.get_layer("encoder_norm").output
    assert tuple(tokens.shape) == (None, 729, 1152)
    assert spec.num_patches(384) == 729
    assert backbone.count_params() == spec.num_params(384) == 428_225_600
    # Table 1 of the paper: 672 GFLOPs at 384 px (1000-class head).
    gflops = spec.gflops(384, num_classes=1000)
    assert abs(gflops - 672) <= 0.005 * 672, gflops
    del backbone, tokens
    keras.backend.clear_session()
    gc.collect()
