import re
import textwrap

import pytest

import keras_sovit
from keras_sovit import checkpoints

PUBLIC = [
    checkpoints.load_big_vision,
    checkpoints.save_big_vision,
    checkpoints.load_timm,
    checkpoints.load_transformers,
    checkpoints.resample_position_embedding,
]


@pytest.mark.parametrize("fn", PUBLIC, ids=lambda f: f.__name__)
def test_docstring_example_runs(fn, tmp_path, monkeypatch):
    doc = fn.__doc__
    assert "Example:" in doc and "Args:" in doc and "Returns:" in doc
    blocks = re.findall(r"```python\n(.*?)```", doc, re.S)
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        assert "keras_sovit." in block
        exec(textwrap.dedent(block), {"keras_sovit": keras_sovit})
