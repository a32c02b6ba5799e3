"""The canonical weight layout and model building (private).

Every loader turns its format into one flat dict in big_vision's own names
and shapes (unscanned, no prefix): `embedding/kernel` (p, p, C, D),
`pos_embedding` (1, N, D), `cls`, `Transformer/encoderblock_{i}/...`,
`Transformer/encoder_norm/{scale,bias}`, `MAPHead_0/...`, `pre_logits/...`
and `head/...`. This module maps that dict onto the variables of a
`SoViTBackbone` / `SoViTClassifier`, infers the shape from it and builds
the model.
"""

import math
import re

import keras
import numpy as np

from keras_sovit._validation import check_choice
from keras_sovit._validation import check_image_shape
from keras_sovit._validation import check_non_negative_int
from keras_sovit.checkpoints.resample import resample_position_embedding
from keras_sovit.shapes import VARIANTS
from keras_sovit.shapes import ShapeSpec

BLOCK = "Transformer/encoderblock_{}/"
_BLOCK_PATTERN = re.compile(r"^Transformer/encoderblock_(\d+)/")
_PROJECTIONS = ("query", "key", "value", "out")
POOL_TYPES = ("map", "gap", "0", "tok", "none")


def _layer_norm(prefix, layer):
    return {f"{prefix}scale": layer.gamma, f"{prefix}bias": layer.beta}


def _dense(prefix, layer):
    return {f"{prefix}kernel": layer.kernel, f"{prefix}bias": layer.bias}


def _attention(prefix, layer):
    variables = {}
    for name in _PROJECTIONS:
        variables[f"{prefix}{name}/kernel"] = getattr(layer, f"{name}_kernel")
        variables[f"{prefix}{name}/bias"] = getattr(layer, f"{name}_bias")
    return variables


def _mlp(prefix, layer):
    return {
        **_dense(f"{prefix}Dense_0/", layer.dense_0),
        **_dense(f"{prefix}Dense_1/", layer.dense_1),
    }


def model_variables(model):
    """`{big_vision key: keras.Variable}` for a SoViT backbone/classifier."""
    from keras_sovit.models import SoViTBackbone
    from keras_sovit.models import SoViTClassifier

    if isinstance(model, SoViTClassifier):
        variables = model_variables(model.backbone)
        if model.pre_logits is not None:
            variables.update(_dense("pre_logits/", model.pre_logits))
        variables.update(_dense("head/", model.head))
        return variables
    if not isinstance(model, SoViTBackbone):
        raise ValueError(
            "`model` must be a keras_sovit SoViTBackbone or "
            f"SoViTClassifier. Received: model={model!r}"
        )
    variables = _dense("embedding/", model.patch_embedding)
    if model.posemb == "learn":
        variables["pos_embedding"] = model.position_embedding.pos_embedding
    if model.class_token is not None:
        variables["cls"] = model.class_token.cls
    for i, block in enumerate(model.encoder_blocks):
        prefix = BLOCK.format(i)
        variables.update(
            _layer_norm(f"{prefix}LayerNorm_0/", block.layer_norm_0)
        )
        variables.update(
            _attention(
                f"{prefix}MultiHeadDotProductAttention_0/", block.attention
            )
        )
        variables.update(
            _layer_norm(f"{prefix}LayerNorm_1/", block.layer_norm_1)
        )
        variables.update(_mlp(f"{prefix}MlpBlock_0/", block.mlp))
    variables.update(
        _layer_norm("Transformer/encoder_norm/", model.encoder_norm)
    )
    if model.map_head is not None:
        head = model.map_head
        variables["MAPHead_0/probe"] = head.probe
        variables.update(
            _attention(
                "MAPHead_0/MultiHeadDotProductAttention_0/", head.attention
            )
        )
        variables.update(_layer_norm("MAPHead_0/LayerNorm_0/", head.layer_norm))
        variables.update(_mlp("MAPHead_0/MlpBlock_0/", head.mlp))
    return variables


def model_arrays(model):
    """The model's weights as float32 NumPy arrays in the canonical layout."""
    arrays = {}
    for key, variable in model_variables(model).items():
        value = keras.ops.convert_to_numpy(
            keras.ops.cast(variable.value, "float32")
        )
        arrays[key] = np.asarray(value, dtype=np.float32)
    return arrays


def assign_arrays(model, arrays, fresh=()):
    """Assigns canonical arrays to the model.

    Every variable must have an array, except those named in `fresh`,
    which keep their initial values.
    """
    variables = {
        k: v for k, v in model_variables(model).items() if k not in fresh
    }
    missing = sorted(set(variables) - set(arrays))
    if missing:
        raise ValueError(f"The checkpoint lacks weights {missing}.")
    for key, variable in variables.items():
        value = np.asarray(arrays[key])
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(
                f"Checkpoint weight {key!r} has shape {value.shape}; the "
                f"model expects {tuple(variable.shape)}."
            )
        tensor = keras.ops.convert_to_tensor(value.astype(np.float32))
        variable.assign(keras.ops.cast(tensor, variable.dtype))


def block_count(arrays):
    """Number of encoder blocks: encoderblock_0 .. _{n-1}, contiguous."""
    indices = set()
    for key in arrays:
        match = _BLOCK_PATTERN.match(key)
        if match:
            indices.add(int(match[1]))
    if not indices or indices != set(range(len(indices))):
        raise ValueError(
            "The checkpoint's encoder blocks must be numbered 0 .. depth-1. "
            f"Found: {sorted(indices)}"
        )
    return len(indices)


def heads_from_table(width, depth, mlp_dim, num_heads, source):
    """`num_heads`, or the head count of the variant with this shape."""
    if num_heads is not None:
        return num_heads
    for w, d, m, h in VARIANTS.values():
        if (w, d, m) == (width, depth, mlp_dim):
            return h
    raise ValueError(
        f"`num_heads` cannot be read from a {source} checkpoint whose "
        f"shape (width={width}, depth={depth}, mlp_dim={mlp_dim}) is not "
        "a known variant; pass num_heads. Received: num_heads=None"
    )


def _is_square(n):
    return math.isqrt(n) ** 2 == n


def checkpoint_grid(tokens, image_shape, patch_size):
    """The (rows, columns) grid of a posemb with `tokens` positions.

    The grid of `image_shape` when it has as many cells, else the square
    grid (big_vision's assumption when resampling).
    """
    if image_shape is not None:
        grid = (image_shape[0] // patch_size, image_shape[1] // patch_size)
        if grid[0] * grid[1] == tokens:
            return grid
    if not _is_square(tokens):
        raise ValueError(
            f"The checkpoint's position embedding has {tokens} positions, "
            "not a square grid; pass the image_shape it was trained at. "
            f"Received: image_shape={image_shape!r}"
        )
    side = math.isqrt(tokens)
    return side, side


def build_model(
    arrays,
    *,
    source,
    num_heads=None,
    image_shape=None,
    pool_type=None,
    num_classes=None,
    dtype=None,
    approximate_gelu=True,
    default_pool_type="gap",
    resample_order=1,
):
    """Builds and fills a SoViT model from canonical arrays.

    Returns a `SoViTClassifier` when the arrays hold a head (or
    `num_classes` > 0 asks for one) and `num_classes != 0`, else a
    `SoViTBackbone`. Raises a `ValueError` for weights it cannot place.
    """
    from keras_sovit.models import SoViTBackbone
    from keras_sovit.models import SoViTClassifier

    arrays = dict(arrays)
    spec, channels = _infer_spec(arrays, num_heads, source)
    for key, value in list(arrays.items()):
        arrays[key] = _heads_layout(key, value, spec)
    pool_type = _pool_type(arrays, pool_type, default_pool_type)
    posemb = "learn" if "pos_embedding" in arrays else "sincos2d"
    image_shape = _image_shape(arrays, image_shape, spec.patch_size,
                               channels, resample_order)
    num_classes, file_classes, rep_size = _head(arrays, num_classes)
    model = SoViTBackbone(
        spec,
        image_shape=image_shape,
        pool_type=pool_type,
        posemb=posemb,
        approximate_gelu=approximate_gelu,
        dtype=dtype,
    )
    if num_classes:
        model = SoViTClassifier(
            model, num_classes, rep_size=rep_size, dtype=dtype
        )
    unused = sorted(set(arrays) - set(model_variables(model)))
    if unused:
        raise ValueError(
            f"The {source} checkpoint holds weights that a SoViT model "
            f"has no place for: {unused}."
        )
    fresh = ("head/kernel", "head/bias") if num_classes != file_classes else ()
    assign_arrays(model, arrays, fresh=fresh)
    return model


def _required(arrays, key, shape, source):
    """`arrays[key]`, or a `ValueError` naming the key and its shape."""
    if key not in arrays:
        raise ValueError(
            f"The {source} checkpoint lacks weight {key!r} (expected shape "
            f"{shape}); found keys such as {sorted(arrays)[:5]}."
        )
    return arrays[key]


def _infer_spec(arrays, num_heads, source):
    """The checkpoint's `ShapeSpec` and input channels, from its kernels
    (heads from the attention kernels, else `num_heads` or the table)."""
    if "embedding/kernel" not in arrays:
        raise ValueError(
            f"The {source} checkpoint has no patch embedding kernel; found "
            f"keys such as {sorted(arrays)[:5]}."
        )
    kernel = arrays["embedding/kernel"]
    if kernel.ndim != 4 or kernel.shape[0] != kernel.shape[1]:
        raise ValueError(
            "The patch embedding kernel must be (p, p, channels, width) "
            f"with square patches. Found shape {kernel.shape}."
        )
    patch_size, _, channels, width = kernel.shape
    depth = block_count(arrays)
    prefix = BLOCK.format(0)
    mlp_dim = _required(
        arrays, f"{prefix}MlpBlock_0/Dense_0/kernel",
        f"({width}, mlp_dim)", source,
    ).shape[1]  # fmt: skip
    query = _required(
        arrays, f"{prefix}MultiHeadDotProductAttention_0/query/kernel",
        f"({width}, heads, {width} / heads) or ({width}, {width})", source,
    )  # fmt: skip
    if query.ndim == 3:
        if num_heads is not None and num_heads != query.shape[1]:
            raise ValueError(
                f"`num_heads` disagrees with the checkpoint's attention "
                f"kernels of shape {query.shape} ({query.shape[1]} heads). "
                f"Received: num_heads={num_heads!r}"
            )
        num_heads = query.shape[1]
    num_heads = heads_from_table(width, depth, mlp_dim, num_heads, source)
    return ShapeSpec(width, depth, mlp_dim, num_heads, patch_size), channels


def _pool_type(arrays, pool_type, default_pool_type):
    """`pool_type`, checked against the pooling head the file holds."""
    file_pool = None
    if "MAPHead_0/probe" in arrays:
        file_pool = "map"
    elif "cls" in arrays:
        file_pool = "tok"
    if pool_type is None:
        pool_type = file_pool or default_pool_type
    check_choice("pool_type", pool_type, POOL_TYPES)
    if file_pool is not None and pool_type != file_pool:
        raise ValueError(
            f"The checkpoint has a {file_pool!r} pooling head; `pool_type` "
            f"must be {file_pool!r}. Received: pool_type={pool_type!r}"
        )
    if file_pool is None and pool_type in ("map", "tok"):
        raise ValueError(
            f"The checkpoint has no weights for pool_type={pool_type!r} "
            "(no MAPHead_0 / cls). Received: pool_type="
            f"{pool_type!r}"
        )
    return pool_type


def _image_shape(arrays, image_shape, patch_size, channels, order):
    """The model's image shape (the checkpoint's grid when `None`); the
    learned position embedding is resampled in place to its grid."""

    if image_shape is not None:
        image_shape = check_image_shape(image_shape)
        if image_shape[2] != channels:
            raise ValueError(
                f"`image_shape` has {image_shape[2]} channels; the "
                f"checkpoint's stem takes {channels}. Received: "
                f"image_shape={image_shape!r}"
            )
    if "pos_embedding" not in arrays:
        if image_shape is None:
            raise ValueError(
                "A checkpoint without a learned position embedding "
                "(sincos2d) does not record its image size; pass "
                "image_shape. Received: image_shape=None"
            )
        return image_shape
    table = arrays["pos_embedding"]
    old_grid = checkpoint_grid(table.shape[1], image_shape, patch_size)
    if image_shape is None:
        image_shape = (old_grid[0] * patch_size, old_grid[1] * patch_size,
                       channels)
    new_grid = (image_shape[0] // patch_size, image_shape[1] // patch_size)
    if new_grid != old_grid:
        arrays["pos_embedding"] = resample_position_embedding(
            table, new_grid, old_grid=old_grid, order=order
        )
    return image_shape


def _head(arrays, num_classes):
    """`(num_classes, file_classes, rep_size)`; a head the model will not
    keep (another class count, or none) is dropped from `arrays`."""
    rep_size = None
    if "pre_logits/kernel" in arrays:
        rep_size = int(arrays["pre_logits/kernel"].shape[1])
    file_classes = 0
    if "head/kernel" in arrays:
        file_classes = int(arrays["head/kernel"].shape[1])
    if num_classes is None:
        num_classes = file_classes
    num_classes = check_non_negative_int("num_classes", num_classes)
    if num_classes != file_classes:
        # A new head (zero kernel): the checkpoint's is dropped.
        arrays.pop("head/kernel", None)
        arrays.pop("head/bias", None)
    if not num_classes:
        arrays.pop("pre_logits/kernel", None)
        arrays.pop("pre_logits/bias", None)
        rep_size = None
    return num_classes, file_classes, rep_size


def _heads_layout(key, value, spec):
    """Attention kernels in big_vision's per-head shapes.

    Converters from fused or (out, in) layouts produce flat (D, D) kernels
    and (D,) biases; big_vision's are (D, H, D/H), (H, D/H) and out
    (H, D/H, D).
    """
    if "MultiHeadDotProductAttention_0/" not in key:
        return value
    heads, head_dim, width = spec.num_heads, spec.head_dim, spec.width
    name = key.rsplit("/", 2)[-2:]
    if name[0] == "out":
        target = (heads, head_dim, width) if name[1] == "kernel" else (width,)
    else:
        target = (
            (width, heads, head_dim)
            if name[1] == "kernel"
            else (
                heads,
                head_dim,
            )
        )
    if value.size != math.prod(target):
        raise ValueError(
            f"Checkpoint weight {key!r} has shape {value.shape}, which does "
            f"not fit width {width} and {heads} heads."
        )
    return value.reshape(target)
