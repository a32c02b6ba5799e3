"""timm Vision Transformer state dicts: `load_timm`."""

import math
import re

from keras_sovit.checkpoints._arrays import read_state_dict
from keras_sovit.checkpoints._layout import BLOCK
from keras_sovit.checkpoints._layout import build_model

# timm keys that mean a setting a SoViT cannot represent, and its name.
_UNSUPPORTED = (
    (r"^reg_token$", "register tokens (reg_tokens > 0)"),
    (r"^fc_norm\.", "fc_norm (a LayerNorm after pooling)"),
    (r"^norm_pre\.", "pre-norm (pre_norm=True, a LayerNorm before the blocks)"),
    (r"\.(q_norm|k_norm)\.", "qk-norm (qk_norm=True)"),
    (r"\.ls[12]\.", "layer scale (init_values)"),
    (r"\.attn\.norm\.", "a norm inside attention (scale_attn_norm=True)"),
    (r"\.mlp\.norm\.", "a norm inside the MLP (scale_mlp_norm=True)"),
    (r"^patch_embed\.norm\.", "a patch-embedding norm (embed_norm_layer)"),
    (r"\.(q_bias|v_bias)$", "attention without a key bias (BEiT-style)"),
    (r"^attn_pool\.pos_embed$", "a MAP head with its own position embedding"),
)


def _linear(state, name, kernel_key, bias_key, out):
    """An (out, in) torch Linear as a big_vision (in, out) Dense."""
    out[kernel_key] = state.pop(f"{name}.weight").T
    out[bias_key] = state.pop(f"{name}.bias")


def _layer_norm(state, name, prefix, out):
    out[f"{prefix}scale"] = state.pop(f"{name}.weight")
    out[f"{prefix}bias"] = state.pop(f"{name}.bias")


def _mlp(state, name, prefix, out):
    _linear(state, f"{name}.fc1", f"{prefix}Dense_0/kernel",
            f"{prefix}Dense_0/bias", out)  # fmt: skip
    _linear(state, f"{name}.fc2", f"{prefix}Dense_1/kernel",
            f"{prefix}Dense_1/bias", out)  # fmt: skip


def _check_supported(state):
    for pattern, setting in _UNSUPPORTED:
        hits = sorted(k for k in state if re.search(pattern, k))
        if hits:
            raise ValueError(
                f"A SoViT cannot represent {setting}: the state dict has "
                f"{hits[:3]}."
            )
    for key in state:
        match = re.match(r"^(blocks\.\d+\.attn|attn_pool)\.", key)
        if match and key.endswith(".weight"):
            layer = key[: -len(".weight")]
            if layer.endswith(("norm",)) or ".mlp." in layer:
                continue
            if f"{layer}.bias" not in state:
                raise ValueError(
                    "A SoViT cannot represent attention without biases "
                    f"(qkv_bias=False or proj_bias=False): {layer!r} has "
                    "no bias."
                )
    for required, setting in (
        ("patch_embed.proj.bias", "a patch embedding without bias"),
        ("norm.weight", "no final LayerNorm (final_norm=False)"),
        ("pos_embed", "no learned position embedding (pos_embed='none')"),
    ):
        if required not in state:
            raise ValueError(
                f"A SoViT cannot represent {setting}: the state dict has "
                f"no {required!r}."
            )


def _split_heads(fused, parts):
    """Splits a fused (parts * D, ...) torch weight into `parts` pieces."""
    size = fused.shape[0] // parts
    return [fused[i * size : (i + 1) * size] for i in range(parts)]


def timm_to_big_vision(state, image_shape=None):
    """timm ViT state dict -> canonical big_vision arrays."""
    state = dict(state)
    _check_supported(state)
    try:
        return _convert(state, image_shape)
    except KeyError as error:
        raise ValueError(
            f"The timm state dict lacks {error.args[0]!r}, which a SoViT needs."
        ) from None


def _convert(state, image_shape):
    out = {}
    weight = state.pop("patch_embed.proj.weight")  # (D, C, p, p)
    if weight.ndim != 4 or weight.shape[2] != weight.shape[3]:
        raise ValueError(
            "A SoViT needs square patches; patch_embed.proj.weight has "
            f"shape {weight.shape}."
        )
    out["embedding/kernel"] = weight.transpose(2, 3, 1, 0)
    out["embedding/bias"] = state.pop("patch_embed.proj.bias")
    posemb = state.pop("pos_embed")
    if "cls_token" in state:
        cls = state.pop("cls_token")
        if _has_prefix_position(posemb.shape[1], image_shape, weight.shape[2]):
            raise ValueError(
                "A SoViT cannot represent a class token with its own "
                "position embedding (timm's no_embed_class=False, the "
                f"default): pos_embed has {posemb.shape[1]} positions, one "
                "more than the patch grid."
            )
        out["cls"] = cls
    out["pos_embedding"] = posemb
    _convert_blocks(state, out)
    _layer_norm(state, "norm", "Transformer/encoder_norm/", out)
    if "attn_pool.latent" in state:
        _convert_map_head(state, out)
    if "head.weight" in state:
        _linear(state, "head", "head/kernel", "head/bias", out)
    if state:
        raise ValueError(
            "The timm state dict holds weights a SoViT has no place for: "
            f"{sorted(state)[:10]}."
        )
    return out


def _convert_blocks(state, out):
    """The encoder blocks (timm's fused qkv split per projection)."""
    depth = 0
    while f"blocks.{depth}.norm1.weight" in state:
        prefix = BLOCK.format(depth)
        name = f"blocks.{depth}"
        _layer_norm(state, f"{name}.norm1", f"{prefix}LayerNorm_0/", out)
        attention = f"{prefix}MultiHeadDotProductAttention_0/"
        qkv = _split_heads(state.pop(f"{name}.attn.qkv.weight"), 3)
        qkv_bias = _split_heads(state.pop(f"{name}.attn.qkv.bias"), 3)
        for proj, w, b in zip(("query", "key", "value"), qkv, qkv_bias):
            out[f"{attention}{proj}/kernel"] = w.T
            out[f"{attention}{proj}/bias"] = b
        _linear(state, f"{name}.attn.proj", f"{attention}out/kernel",
                f"{attention}out/bias", out)  # fmt: skip
        _layer_norm(state, f"{name}.norm2", f"{prefix}LayerNorm_1/", out)
        _mlp(state, f"{name}.mlp", f"{prefix}MlpBlock_0/", out)
        depth += 1


def _convert_map_head(state, out):
    """timm's attention-pool head (q apart, k and v fused) as MAPHead_0."""
    latent = state.pop("attn_pool.latent")
    if latent.shape[1] != 1:
        raise ValueError(
            "A SoViT cannot represent a MAP head with "
            f"{latent.shape[1]} latent tokens (latent_len > 1)."
        )
    out["MAPHead_0/probe"] = latent
    attention = "MAPHead_0/MultiHeadDotProductAttention_0/"
    _linear(state, "attn_pool.q", f"{attention}query/kernel",
            f"{attention}query/bias", out)  # fmt: skip
    kv = _split_heads(state.pop("attn_pool.kv.weight"), 2)
    kv_bias = _split_heads(state.pop("attn_pool.kv.bias"), 2)
    for proj, w, b in zip(("key", "value"), kv, kv_bias):
        out[f"{attention}{proj}/kernel"] = w.T
        out[f"{attention}{proj}/bias"] = b
    _linear(state, "attn_pool.proj", f"{attention}out/kernel",
            f"{attention}out/bias", out)  # fmt: skip
    _layer_norm(state, "attn_pool.norm", "MAPHead_0/LayerNorm_0/", out)
    _mlp(state, "attn_pool.mlp", "MAPHead_0/MlpBlock_0/", out)
    hidden = out["MAPHead_0/MlpBlock_0/Dense_0/kernel"].shape[1]
    blocks = out[f"{BLOCK.format(0)}MlpBlock_0/Dense_0/kernel"].shape[1]
    if hidden != blocks:
        raise ValueError(
            "A SoViT cannot represent a MAP head whose MLP "
            f"({hidden}) is not as wide as the blocks' ({blocks})."
        )


def _has_prefix_position(tokens, image_shape, patch_size):
    """Whether a posemb of `tokens` positions includes the class token's."""
    if image_shape is not None:
        grid = (image_shape[0] // patch_size) * (image_shape[1] // patch_size)
        if tokens in (grid, grid + 1):
            return tokens == grid + 1
    square = math.isqrt(tokens) ** 2 == tokens
    return not square and math.isqrt(tokens - 1) ** 2 == tokens - 1


def load_timm(
    state_dict_or_path,
    num_heads=None,
    image_shape=None,
    pool_type=None,
    num_classes=None,
    approximate_gelu=False,
    dtype=None,
):
    """Loads a timm `VisionTransformer` state dict into a SoViT model.

    Reads the weights of timm's ViTs of the big_vision / SigLIP family
    (for example `vit_so400m_patch14_siglip_224` or `..._gap_384`, or
    `VisionTransformer(class_token=False, global_pool="map", ...)`): the
    patch stem, `pos_embed`, blocks with a fused `attn.qkv` in torch's
    (out, in) layout, the final `norm`, the MAP head `attn_pool` (`latent`,
    a separate `q`, a fused `kv`, `proj`, `norm`, `mlp`) and the classifier
    `head`. A class token is accepted only when it has no position of its
    own (`no_embed_class=True`); it gives `pool_type="tok"`. Settings a
    SoViT cannot represent raise a `ValueError` that names them: a class
    token with its own position embedding, `fc_norm`, pre-norm, qk-norm,
    layer scale, register tokens, attention without biases.

    GELU: timm's ViTs, the `vit_so400m_patch14_siglip_*` models included,
    use PyTorch's exact erf GELU unless built with `act_layer="gelu_tanh"`
    (as `vit_so400m_patch16_siglip_*` are); the state dict does not say
    which, so `approximate_gelu` does (`False` by default, the exact form).

    Args:
        state_dict_or_path: a state dict (torch tensors or arrays), or a
            path to a `.safetensors` or `.pth` / `.pt` / `.bin` file.
        num_heads: int or `None`. Fused q/k/v kernels do not record the
            heads; `None` takes them from the variant with this width,
            depth and MLP size (16 for So400m) or raises. Defaults to
            `None`.
        image_shape: tuple `(height, width, channels)` or `None` (the
            square grid of `pos_embed`); another grid resamples the
            position embedding as big_vision does. Defaults to `None`.
        pool_type: str or `None`: `"map"` with `attn_pool`, `"tok"` with
            a class token, else `"gap"` (timm's `global_pool="avg"`) unless
            given (`"none"` is timm's `global_pool=""`, the tokens of
            `forward_features`). Defaults to `None`.
        num_classes: int or `None`, as in `load_big_vision`. Defaults to
            `None`.
        approximate_gelu: bool. See above. Defaults to `False`.
        dtype: dtype or policy of the model. Defaults to `None`.

    Returns:
        A `keras_sovit.models.SoViTClassifier` (with a head) or
        `SoViTBackbone`.

    Example:

    ```python
    import numpy as np
    rng = np.random.default_rng(0)
    d, p, n = 32, 8, 16  # width, patch, 4 x 4 tokens at 32 px
    state = {
        "patch_embed.proj.weight": rng.normal(size=(d, 3, p, p)),
        "patch_embed.proj.bias": np.zeros(d),
        "pos_embed": rng.normal(size=(1, n, d)),
        "blocks.0.norm1.weight": np.ones(d),
        "blocks.0.norm1.bias": np.zeros(d),
        "blocks.0.attn.qkv.weight": rng.normal(size=(3 * d, d)) / 8,
        "blocks.0.attn.qkv.bias": np.zeros(3 * d),
        "blocks.0.attn.proj.weight": rng.normal(size=(d, d)) / 8,
        "blocks.0.attn.proj.bias": np.zeros(d),
        "blocks.0.norm2.weight": np.ones(d),
        "blocks.0.norm2.bias": np.zeros(d),
        "blocks.0.mlp.fc1.weight": rng.normal(size=(64, d)) / 8,
        "blocks.0.mlp.fc1.bias": np.zeros(64),
        "blocks.0.mlp.fc2.weight": rng.normal(size=(d, 64)) / 8,
        "blocks.0.mlp.fc2.bias": np.zeros(d),
        "norm.weight": np.ones(d),
        "norm.bias": np.zeros(d),
    }
    backbone = keras_sovit.checkpoints.load_timm(state, num_heads=4)
    ```
    """
    state = read_state_dict(state_dict_or_path, "state_dict_or_path")
    arrays = timm_to_big_vision(state, image_shape=image_shape)
    return build_model(
        arrays,
        source="timm",
        num_heads=num_heads,
        image_shape=image_shape,
        pool_type=pool_type,
        num_classes=num_classes,
        dtype=dtype,
        approximate_gelu=approximate_gelu,
    )
