"""Reading and writing flat weight dicts (private).

No framework import: torch is imported only to read a `.pth` / `.bin`
file, and tensors handed in are converted by duck typing.
"""

import json
import os

import numpy as np


def to_numpy(value):
    """A NumPy array from a NumPy, torch, Keras or ml_dtypes value.

    bfloat16 values (torch or ml_dtypes) and raw bfloat16 bits (the `V2`
    or `uint16` arrays that `np.savez` writes for JAX bfloat16 arrays)
    become float32, exactly.
    """
    if hasattr(value, "detach"):  # A torch tensor.
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        value = value.numpy()
    elif not isinstance(value, np.ndarray):
        value = np.asarray(value)
    if value.dtype.kind == "V" and value.dtype.itemsize == 2:
        return bfloat16_bits_to_float32(value)
    if value.dtype == np.uint16:
        return bfloat16_bits_to_float32(value)
    if value.dtype.name == "bfloat16":
        return value.astype(np.float32)
    return value


def bfloat16_bits_to_float32(bits):
    """float32 values of raw bfloat16 bits (the top half of a float32)."""
    bits = np.ascontiguousarray(bits).view(np.uint16).astype(np.uint32)
    return (bits << 16).view(np.float32)


def float32_to_bfloat16_bits(values):
    """Raw bfloat16 bits (`V2`) of float32 values, rounded to nearest even.

    This is how `np.savez` stores a JAX bfloat16 array: two bytes of void
    per value, read back by `bfloat16_bits_to_float32`.
    """
    values = np.ascontiguousarray(values, dtype=np.float32)
    bits = values.view(np.uint32).astype(np.uint64)
    rounding = 0x7FFF + ((bits >> 16) & 1)
    rounded = ((bits + rounding) >> 16).astype(np.uint16)
    nan = np.isnan(values)
    rounded[nan] = 0x7FC0
    return rounded.view("V2")


def flatten(tree, prefix=""):
    """A flat `{"a/b/c": array}` dict from nested dicts (or a flat one)."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, prefix=f"{name}/"))
        else:
            flat[name] = value
    return flat


def read_state_dict(source, name):
    """A `{key: array}` dict from a mapping or a weights file.

    Files: `.npz` (NumPy), `.safetensors` (read without torch) and `.pth`,
    `.pt`, `.bin` (torch, `weights_only=True`).
    """
    if isinstance(source, dict):
        return {k: to_numpy(v) for k, v in flatten(source).items()}
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError(
            f"`{name}` must be a dict of arrays or a path to a weights "
            f"file. Received: {name}={source!r}"
        )
    path = os.fspath(source)
    if not os.path.isfile(path):
        raise ValueError(f"`{name}` is not a file. Received: {name}={source!r}")
    for suffixes, kind, reader in _READERS:
        if path.endswith(suffixes):
            try:
                return {k: to_numpy(v) for k, v in reader(path).items()}
            except Exception as error:  # the library's own, from deep down
                raise ValueError(
                    f"`{name}` could not be read as a {kind} file "
                    f"(truncated or not that format?): "
                    f"{type(error).__name__}: {error}. "
                    f"Received: {name}={path!r}"
                ) from error
    raise ValueError(
        f"`{name}` must end with .npz, .safetensors, .pth, .pt or .bin. "
        f"Received: {name}={source!r}"
    )


def _read_npz(path):
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _read_safetensors(path):
    from safetensors.numpy import load_file

    try:
        return load_file(path)
    except TypeError:  # bfloat16 tensors need the torch reader.
        from safetensors.torch import load_file as load_torch

        return load_torch(path)


def _read_torch(path):
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise TypeError(f"holds a {type(state).__name__}, not a state dict")
    return state


_READERS = (
    (".npz", "NumPy .npz", _read_npz),
    (".safetensors", "safetensors", _read_safetensors),
    ((".pth", ".pt", ".bin"), "torch state-dict", _read_torch),
)


def read_json(path, name):
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"`{name}` is not valid JSON ({error}). "
                f"Received: {name}={path!r}"
            ) from None
