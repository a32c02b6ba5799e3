"""Weight files that cannot be read fail with the path in the message."""

import re

import numpy as np
import pytest

from keras_sovit.checkpoints import load_big_vision
from keras_sovit.checkpoints import load_timm


def _write(path):
    arrays = {"a": np.arange(4096, dtype="float32"), "b": np.ones((64, 64))}
    if path.suffix == ".npz":
        np.savez(path, **arrays)
    elif path.suffix == ".safetensors":
        from safetensors.numpy import save_file

        save_file({k: v.astype("float32") for k, v in arrays.items()}, path)
    else:
        import torch

        torch.save({k: torch.from_numpy(v) for k, v in arrays.items()}, path)


@pytest.mark.parametrize("suffix", [".npz", ".safetensors", ".pth"])
@pytest.mark.parametrize("damage", ["truncated", "text"])
def test_unreadable_weight_files_name_the_path(tmp_path, suffix, damage):
    path = tmp_path / f"weights{suffix}"
    if damage == "truncated":
        _write(path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_text("not a weights file\n")
    loader = load_big_vision if suffix == ".npz" else load_timm
    with pytest.raises(ValueError, match=re.escape(repr(str(path)))):
        loader(str(path))
