"""An independent NumPy ViT over big_vision-named arrays (float64).

Written from big_vision's `vit.py` semantics with the helpers of
`tests/testing.py`, so loader tests check key mapping and numerics against
something that never touches keras_sovit.
"""

import numpy as np

from tests.testing import np_attention
from tests.testing import np_layer_norm
from tests.testing import np_mlp

PROJECTIONS = ("query", "key", "value", "out")


def random_vit_arrays(
    width=32,
    depth=2,
    mlp_dim=48,
    heads=4,
    patch=8,
    grid=(4, 4),
    pool_type="map",
    num_classes=0,
    rep_size=None,
    seed=0,
):
    """Random big_vision ViT parameters, keyed as in its `.npz` files."""
    rng = np.random.default_rng(seed)
    hd = width // heads

    def normal(*shape, scale=0.2):
        return rng.normal(scale=scale, size=shape).astype("float32")

    def attention(prefix, arrays):
        for name in ("query", "key", "value"):
            arrays[f"{prefix}{name}/kernel"] = normal(width, heads, hd)
            arrays[f"{prefix}{name}/bias"] = normal(heads, hd)
        arrays[f"{prefix}out/kernel"] = normal(heads, hd, width)
        arrays[f"{prefix}out/bias"] = normal(width)

    def layer_norm(prefix, arrays):
        arrays[f"{prefix}scale"] = 1 + normal(width)
        arrays[f"{prefix}bias"] = normal(width)

    def mlp(prefix, arrays):
        arrays[f"{prefix}Dense_0/kernel"] = normal(width, mlp_dim)
        arrays[f"{prefix}Dense_0/bias"] = normal(mlp_dim)
        arrays[f"{prefix}Dense_1/kernel"] = normal(mlp_dim, width)
        arrays[f"{prefix}Dense_1/bias"] = normal(width)

    arrays = {
        "embedding/kernel": normal(patch, patch, 3, width, scale=0.05),
        "embedding/bias": normal(width),
        "pos_embedding": normal(1, grid[0] * grid[1], width),
    }
    if pool_type == "tok":
        arrays["cls"] = normal(1, 1, width)
    for i in range(depth):
        prefix = f"Transformer/encoderblock_{i}/"
        layer_norm(f"{prefix}LayerNorm_0/", arrays)
        attention(f"{prefix}MultiHeadDotProductAttention_0/", arrays)
        layer_norm(f"{prefix}LayerNorm_1/", arrays)
        mlp(f"{prefix}MlpBlock_0/", arrays)
    layer_norm("Transformer/encoder_norm/", arrays)
    if pool_type == "map":
        arrays["MAPHead_0/probe"] = normal(1, 1, width)
        attention("MAPHead_0/MultiHeadDotProductAttention_0/", arrays)
        layer_norm("MAPHead_0/LayerNorm_0/", arrays)
        mlp("MAPHead_0/MlpBlock_0/", arrays)
    features = width
    if rep_size:
        arrays["pre_logits/kernel"] = normal(width, rep_size)
        arrays["pre_logits/bias"] = normal(rep_size)
        features = rep_size
    if num_classes:
        arrays["head/kernel"] = normal(features, num_classes)
        arrays["head/bias"] = normal(num_classes)
    return arrays


def _attention_weights(arrays, prefix):
    return {
        f"{name}_{part}": arrays[f"{prefix}{name}/{part}"].astype("float64")
        for name in PROJECTIONS
        for part in ("kernel", "bias")
    }


def _ln(arrays, prefix, x):
    return np_layer_norm(x, arrays[f"{prefix}scale"], arrays[f"{prefix}bias"])


def _mlp(arrays, prefix, x, approximate):
    return np_mlp(
        x,
        arrays[f"{prefix}Dense_0/kernel"],
        arrays[f"{prefix}Dense_0/bias"],
        arrays[f"{prefix}Dense_1/kernel"],
        arrays[f"{prefix}Dense_1/bias"],
        approximate=approximate,
    )


def vit_forward(arrays, images, pool_type, approximate=True):
    """big_vision's ViT forward pass on NHWC images, in float64."""
    a = {k: np.asarray(v, dtype="float64") for k, v in arrays.items()}
    kernel = a["embedding/kernel"]
    p = kernel.shape[0]
    x = images.astype("float64")
    gh, gw = x.shape[1] // p, x.shape[2] // p
    tokens = np.zeros((x.shape[0], gh * gw, kernel.shape[-1]))
    for i in range(gh):
        for j in range(gw):
            patch = x[:, i * p : (i + 1) * p, j * p : (j + 1) * p]
            tokens[:, i * gw + j] = np.tensordot(patch, kernel, axes=3)
    x = tokens + a["embedding/bias"]
    if "pos_embedding" in a:
        x = x + a["pos_embedding"]
    if pool_type == "tok":
        cls = np.broadcast_to(a["cls"], (x.shape[0], 1, x.shape[2]))
        x = np.concatenate([cls, x], axis=1)
    i = 0
    while f"Transformer/encoderblock_{i}/LayerNorm_0/scale" in a:
        prefix = f"Transformer/encoderblock_{i}/"
        y = _ln(a, f"{prefix}LayerNorm_0/", x)
        weights = _attention_weights(
            a, f"{prefix}MultiHeadDotProductAttention_0/"
        )
        x = x + np_attention(y, y, weights)
        y = _ln(a, f"{prefix}LayerNorm_1/", x)
        x = x + _mlp(a, f"{prefix}MlpBlock_0/", y, approximate)
        i += 1
    x = _ln(a, "Transformer/encoder_norm/", x)
    if pool_type == "map":
        probe = np.broadcast_to(
            a["MAPHead_0/probe"], (x.shape[0], 1, x.shape[2])
        )
        weights = _attention_weights(
            a, "MAPHead_0/MultiHeadDotProductAttention_0/"
        )
        y = np_attention(probe, x, weights)
        z = _ln(a, "MAPHead_0/LayerNorm_0/", y)
        x = (y + _mlp(a, "MAPHead_0/MlpBlock_0/", z, approximate))[:, 0]
    elif pool_type == "gap":
        x = x.mean(axis=1)
    elif pool_type in ("0", "tok"):
        x = x[:, 0]
    if "pre_logits/kernel" in a:
        x = np.tanh(x @ a["pre_logits/kernel"] + a["pre_logits/bias"])
    if "head/kernel" in a:
        x = x @ a["head/kernel"] + a["head/bias"]
    return x


def forward(model, x):
    """The model's outputs as float32 NumPy, one compiled `predict` call.

    `predict` traces the whole forward pass once, which on JAX is much
    faster than calling the model eagerly op by op.
    """
    out = model.predict(x, batch_size=len(x), verbose=0)
    return np.asarray(out).astype("float32")


def assert_relative_close(actual, expected, rtol=1e-5):
    """max |actual - expected| <= rtol * max |expected|."""
    actual = np.asarray(actual, dtype="float64")
    expected = np.asarray(expected, dtype="float64")
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    error = np.max(np.abs(actual - expected)) / np.max(np.abs(expected))
    assert error <= rtol, f"relative error {error:.3g} > {rtol}"
    return error
