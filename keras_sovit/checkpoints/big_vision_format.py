"""big_vision `.npz` checkpoints: `load_big_vision` and `save_big_vision`."""

import os
import re
import warnings

import numpy as np

from keras_sovit.checkpoints._arrays import float32_to_bfloat16_bits
from keras_sovit.checkpoints._arrays import read_state_dict
from keras_sovit.checkpoints._layout import BLOCK
from keras_sovit.checkpoints._layout import build_model
from keras_sovit.checkpoints._layout import model_arrays

# Where the image tower sits in big_vision files: a plain ViT, a training
# checkpoint's `params`, and the image tower of a two-tower (SigLIP, LiT)
# model, with or without `params/` (HF-hosted copies drop it).
PREFIXES = ("", "params/", "img/", "params/img/")
SCANNED = "Transformer/encoderblock/"
_STEM = "embedding/kernel"


def _image_tower(flat, prefix):
    """The keys of the image tower, prefix removed."""
    if prefix is None:
        found = [p for p in PREFIXES if f"{p}{_STEM}" in flat]
        if len(found) != 1:
            raise ValueError(
                "Cannot tell where the image tower is: expected exactly one "
                f"of {[p + _STEM for p in PREFIXES]}, found "
                f"{[p + _STEM for p in found]}; pass prefix. Received: "
                "prefix=None"
            )
        prefix = found[0]
    elif f"{prefix}{_STEM}" not in flat:
        raise ValueError(
            f"The checkpoint has no {prefix + _STEM!r}. Received: "
            f"prefix={prefix!r}"
        )
    return {
        k[len(prefix) :]: v for k, v in flat.items() if k.startswith(prefix)
    }


def _unscan(arrays):
    """Splits big_vision's scanned blocks (leading depth axis) apart."""
    scanned = {k: v for k, v in arrays.items() if k.startswith(SCANNED)}
    if not scanned:
        return arrays
    if any(re.match(r"^Transformer/encoderblock_\d+/", k) for k in arrays):
        raise ValueError(
            "The checkpoint mixes scanned (Transformer/encoderblock/) and "
            "unscanned (Transformer/encoderblock_i/) blocks."
        )
    depths = {v.shape[0] for v in scanned.values()}
    if len(depths) != 1:
        raise ValueError(
            "Scanned blocks must share their leading depth axis; found "
            f"sizes {sorted(depths)}."
        )
    out = {k: v for k, v in arrays.items() if k not in scanned}
    for key, value in scanned.items():
        name = key[len(SCANNED) :]
        for i in range(value.shape[0]):
            out[BLOCK.format(i) + name] = value[i]
    return out


def _scan(arrays, depth):
    out = {
        k: v
        for k, v in arrays.items()
        if not k.startswith("Transformer/encoderblock_")
    }
    first = BLOCK.format(0)
    for key in arrays:
        if key.startswith(first):
            name = key[len(first) :]
            out[SCANNED + name] = np.stack(
                [arrays[BLOCK.format(i) + name] for i in range(depth)]
            )
    return out


def load_big_vision(
    path_or_arrays,
    image_shape=None,
    pool_type=None,
    num_classes=None,
    dtype=None,
    prefix=None,
    num_heads=None,
    approximate_gelu=True,
):
    """Loads a big_vision ViT / SigLIP image tower into a SoViT model.

    Reads the `.npz` files big_vision writes (and the public SigLIP / SoViT
    checkpoints): flat keys joined by `/`, the image tower at the top or
    under `params/`, `img/` or `params/img/` (other towers are ignored),
    blocks either one per key (`Transformer/encoderblock_{i}/...`) or in
    the `scan` layout (`Transformer/encoderblock/...` with a leading depth
    axis), and bfloat16 arrays stored as raw 2-byte values, which are
    widened to float32 exactly. The shape is read from the weights (heads
    from the attention kernels), the pooling from the head that is present
    (`MAPHead_0` is `"map"`, `cls` is `"tok"`; otherwise `"gap"` unless
    `pool_type` says `"0"` or `"none"`).

    When `image_shape` gives another patch grid than the checkpoint's
    position embedding, the embedding is resampled as big_vision does
    (`keras_sovit.checkpoints.resample_position_embedding`).

    Args:
        path_or_arrays: path to an `.npz` file, or a dict of arrays (flat
            `/`-joined keys or nested dicts).
        image_shape: tuple `(height, width, channels)` or `None` (the
            checkpoint's square grid). Defaults to `None`.
        pool_type: str or `None`. See above. Defaults to `None`.
        num_classes: int or `None`. `None` keeps the checkpoint's head (a
            `SoViTClassifier`) or returns a backbone when there is none;
            `0` always returns the backbone; another count builds a fresh
            zero-initialised head of that size. Defaults to `None`.
        dtype: dtype or policy of the model, e.g. `"mixed_bfloat16"`.
            Defaults to `None`.
        prefix: str or `None`. Where the image tower is, e.g.
            `"params/img/"`; `None` finds it. Defaults to `None`.
        num_heads: int or `None`. Checked against the kernels. Defaults to
            `None`.
        approximate_gelu: bool. big_vision uses tanh GELU. Defaults to
            `True`.

    Returns:
        A `keras_sovit.models.SoViTClassifier` or `SoViTBackbone`.

    Example:

    ```python
    import numpy as np
    shape = keras_sovit.ShapeSpec(32, 1, 64, 4, patch_size=8)
    backbone = keras_sovit.models.SoViTBackbone(shape, image_shape=(32, 32, 3))
    keras_sovit.checkpoints.save_big_vision(backbone, "tiny.npz")
    at_48px = keras_sovit.checkpoints.load_big_vision(
        "tiny.npz", image_shape=(48, 48, 3)
    )  # 6 x 6 grid, position embedding resampled from 4 x 4
    ```
    """
    flat = read_state_dict(path_or_arrays, "path_or_arrays")
    arrays = _unscan(_image_tower(flat, prefix))
    return build_model(
        arrays,
        source="big_vision",
        num_heads=num_heads,
        image_shape=image_shape,
        pool_type=pool_type,
        num_classes=num_classes,
        dtype=dtype,
        approximate_gelu=approximate_gelu,
    )


def save_big_vision(model, path, prefix="", scan=False, bfloat16=False):
    """Writes a SoViT model as a big_vision `.npz` checkpoint.

    The inverse of `load_big_vision`: `load_big_vision(path)` rebuilds the
    same model with identical outputs. Keys are big_vision's parameter
    names (`embedding/kernel`, `pos_embedding`,
    `Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel`,
    ..., `head/kernel`), so big_vision's own `load` reads the file too.
    big_vision always uses tanh GELU: saving a model with
    `approximate_gelu=False` warns. The file records a `"map"` or `"tok"`
    pooling by its weights; `"gap"` is what a file without either means,
    so saving `pool_type="0"` or `"none"` warns: pass that `pool_type` to
    `load_big_vision`.

    Args:
        model: `keras_sovit.models.SoViTBackbone` or `SoViTClassifier`.
        path: str. File to write (NumPy adds `.npz` when missing).
        prefix: str. Prepended to every key, e.g. `"params/img/"` for the
            layout of a two-tower checkpoint. Defaults to `""`.
        scan: bool. Stack the blocks along a leading depth axis as
            big_vision's `scan=True` models do. Defaults to `False`.
        bfloat16: bool. Store raw bfloat16 values (2 bytes each, rounded
            to nearest even) instead of float32. Defaults to `False`.

    Returns:
        The path written.

    Example:

    ```python
    model = keras_sovit.models.SoViTClassifier.from_variant(
        "mu/4", num_classes=3, image_shape=(16, 16, 3)
    )
    keras_sovit.checkpoints.save_big_vision(model, "mu.npz", scan=True)
    ```
    """
    if not isinstance(prefix, str) or (prefix and not prefix.endswith("/")):
        raise ValueError(
            "`prefix` must be a string ending with '/' (or empty). "
            f"Received: prefix={prefix!r}"
        )
    for name, value in (("scan", scan), ("bfloat16", bfloat16)):
        if not isinstance(value, bool):
            raise ValueError(
                f"`{name}` must be a bool. Received: {name}={value!r}"
            )
    arrays = model_arrays(model)
    backbone = getattr(model, "backbone", model)
    if not backbone.approximate_gelu:
        warnings.warn(
            "big_vision models use tanh-approximate GELU; this model uses "
            "exact GELU (approximate_gelu=False). Load the file with "
            "load_big_vision(..., approximate_gelu=False) to get the same "
            "outputs.",
            stacklevel=2,
        )
    if backbone.pool_type in ("0", "none"):
        # Only "map" and "tok" leave weights that name them; the loader
        # reads every other file as "gap".
        warnings.warn(
            f"A big_vision file cannot record pool_type="
            f"{backbone.pool_type!r} (it has no weights); load it with "
            f"load_big_vision(..., pool_type={backbone.pool_type!r}) to get "
            "the same outputs.",
            stacklevel=2,
        )
    if scan:
        arrays = _scan(arrays, backbone.shape_spec.depth)
    if bfloat16:
        arrays = {k: float32_to_bfloat16_bits(v) for k, v in arrays.items()}
    arrays = {f"{prefix}{k}": v for k, v in arrays.items()}
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path = f"{path}.npz"
    # Written beside the target, then renamed: a save that fails half-way
    # leaves no partial file (and an existing file as it was).
    partial = f"{path}.{os.getpid()}.partial"
    try:
        with open(partial, "wb") as f:
            np.savez(f, **arrays)
        os.replace(partial, path)
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise
    return path
