"""Every `Example:` block of the training and evaluation APIs runs."""

import re

import keras
import numpy as np
import pytest

import keras_sovit
from keras_sovit import evaluation
from keras_sovit import training

PUBLIC = [getattr(training, n) for n in training.__all__] + [
    getattr(evaluation, n) for n in evaluation.__all__
]
DOCUMENTED = [obj for obj in PUBLIC if callable(obj)]


def example_blocks(obj):
    blocks = re.findall(r"```python\n(.*?)```", obj.__doc__ or "", re.S)
    return [
        "\n".join(line[4:] for line in block.splitlines()) for block in blocks
    ]


@pytest.mark.parametrize("obj", DOCUMENTED, ids=lambda o: o.__name__)
def test_docstring_example_runs(obj):
    blocks = example_blocks(obj)
    assert blocks, f"{obj.__name__} has no Example block"
    for code in blocks:
        exec(code, {"keras": keras, "keras_sovit": keras_sovit, "np": np})
