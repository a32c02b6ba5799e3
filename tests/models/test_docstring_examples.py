import re
import textwrap

import pytest

import keras_sovit
from keras_sovit import layers
from keras_sovit import models

PUBLIC = [
    layers.PatchEmbedding,
    layers.PositionEmbedding,
    layers.SinCos2DPositionEmbedding,
    layers.EncoderBlock,
    layers.MAPHead,
    models.SoViTBackbone,
    models.SoViTClassifier,
]


@pytest.mark.parametrize("cls", PUBLIC, ids=lambda c: c.__name__)
def test_docstring_example_runs(cls):
    doc = cls.__doc__
    assert "Example:" in doc and "Args:" in doc
    blocks = re.findall(r"```python\n(.*?)```", doc, re.S)
    assert blocks
    for block in blocks:
        assert "keras_sovit." in block
        exec(textwrap.dedent(block), {"keras_sovit": keras_sovit})
