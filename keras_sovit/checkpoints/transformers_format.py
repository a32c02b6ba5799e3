"""HF transformers SigLIP vision towers: `load_transformers`."""

import os

from keras_sovit.checkpoints._arrays import read_json
from keras_sovit.checkpoints._arrays import read_state_dict
from keras_sovit.checkpoints._layout import BLOCK
from keras_sovit.checkpoints._layout import build_model

_STEM = "embeddings.patch_embedding.weight"
# HF `hidden_act` values a SoViT runs: tanh-approximate or exact GELU.
_ACTIVATIONS = {
    "gelu_pytorch_tanh": True,
    "gelu_new": True,
    "gelu": False,
}
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _config_dict(config):
    """A plain dict of the vision config (object, dict, or json path)."""
    if config is None:
        return {}
    if isinstance(config, (str, os.PathLike)):
        path = os.fspath(config)
        if os.path.isdir(path):
            path = os.path.join(path, "config.json")
        config = read_json(path, "config")
    elif hasattr(config, "to_dict"):
        config = config.to_dict()
    if not isinstance(config, dict):
        raise ValueError(
            "`config` must be a SiglipVisionConfig, a dict or a path to "
            f"config.json. Received: config={config!r}"
        )
    if isinstance(config.get("vision_config"), dict):
        config = config["vision_config"]
    return config


def _find_prefix(state):
    """'' for a SiglipVisionModel, 'vision_model.' for the two-tower one."""
    found = sorted(k[: -len(_STEM)] for k in state if k.endswith(_STEM))
    found = [p for p in found if p in ("", "vision_model.")]
    if len(found) != 1:
        raise ValueError(
            "Cannot find the SigLIP vision tower: expected one key "
            f"{_STEM!r}, optionally under 'vision_model.'. Found prefixes "
            f"{found}."
        )
    return found[0]


def _linear(state, name, prefix, out):
    out[f"{prefix}kernel"] = state.pop(f"{name}.weight").T
    out[f"{prefix}bias"] = state.pop(f"{name}.bias")


def _layer_norm(state, name, prefix, out):
    out[f"{prefix}scale"] = state.pop(f"{name}.weight")
    out[f"{prefix}bias"] = state.pop(f"{name}.bias")


def _mlp(state, name, prefix, out):
    _linear(state, f"{name}.fc1", f"{prefix}Dense_0/", out)
    _linear(state, f"{name}.fc2", f"{prefix}Dense_1/", out)


def transformers_to_big_vision(state):
    """HF SigLIP vision state dict -> canonical arrays, and whether the
    classifier of `SiglipForImageClassification` was present."""
    prefix = _find_prefix(state)
    tower = {
        k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)
    }
    tower.pop("embeddings.position_ids", None)  # A buffer in old files.
    classifier = prefix == "vision_model." and "classifier.weight" in state
    try:
        out = _convert(tower)
    except KeyError as error:
        raise ValueError(
            f"The transformers state dict lacks {prefix}{error.args[0]}, "
            "which a SoViT needs."
        ) from None
    if classifier:
        # SiglipForImageClassification averages the tokens and ignores the
        # vision tower's MAP head.
        for key in [k for k in out if k.startswith("MAPHead_0/")]:
            del out[key]
        out["head/kernel"] = state["classifier.weight"].T
        out["head/bias"] = state["classifier.bias"]
    if tower:
        raise ValueError(
            "The transformers state dict holds weights a SoViT has no "
            f"place for: {sorted(prefix + k for k in tower)[:10]}."
        )
    return out, classifier


def _convert(state):
    out = {}
    weight = state.pop("embeddings.patch_embedding.weight")
    out["embedding/kernel"] = weight.transpose(2, 3, 1, 0)
    out["embedding/bias"] = state.pop("embeddings.patch_embedding.bias")
    posemb = state.pop("embeddings.position_embedding.weight")
    out["pos_embedding"] = posemb[None]
    depth = 0
    while f"encoder.layers.{depth}.layer_norm1.weight" in state:
        name = f"encoder.layers.{depth}"
        prefix = BLOCK.format(depth)
        attention = f"{prefix}MultiHeadDotProductAttention_0/"
        _layer_norm(state, f"{name}.layer_norm1", f"{prefix}LayerNorm_0/", out)
        for hf, bv in (("q", "query"), ("k", "key"), ("v", "value"),
                       ("out", "out")):  # fmt: skip
            _linear(state, f"{name}.self_attn.{hf}_proj",
                    f"{attention}{bv}/", out)  # fmt: skip
        _layer_norm(state, f"{name}.layer_norm2", f"{prefix}LayerNorm_1/", out)
        _mlp(state, f"{name}.mlp", f"{prefix}MlpBlock_0/", out)
        depth += 1
    _layer_norm(state, "post_layernorm", "Transformer/encoder_norm/", out)
    if "head.probe" in state:
        out["MAPHead_0/probe"] = state.pop("head.probe")
        attention = "MAPHead_0/MultiHeadDotProductAttention_0/"
        # torch nn.MultiheadAttention: in_proj = [q; k; v], (out, in).
        fused = state.pop("head.attention.in_proj_weight")
        fused_bias = state.pop("head.attention.in_proj_bias")
        width = fused.shape[1]
        for i, bv in enumerate(("query", "key", "value")):
            rows = slice(i * width, (i + 1) * width)
            out[f"{attention}{bv}/kernel"] = fused[rows].T
            out[f"{attention}{bv}/bias"] = fused_bias[rows]
        _linear(state, "head.attention.out_proj", f"{attention}out/", out)
        _layer_norm(state, "head.layernorm", "MAPHead_0/LayerNorm_0/", out)
        _mlp(state, "head.mlp", "MAPHead_0/MlpBlock_0/", out)
    return out


def _settings(config):
    """`approximate_gelu`, `num_heads` and the image size of a config."""
    act = config.get("hidden_act", "gelu_pytorch_tanh")
    if act not in _ACTIVATIONS:
        raise ValueError(
            f"A SoViT runs GELU only ({sorted(_ACTIVATIONS)}). Received: "
            f"hidden_act={act!r}"
        )
    eps = config.get("layer_norm_eps", 1e-6)
    if eps != 1e-6:
        raise ValueError(
            "A SoViT uses LayerNorm epsilon 1e-6 (big_vision). Received: "
            f"layer_norm_eps={eps!r}"
        )
    return _ACTIVATIONS[act], config.get("num_attention_heads")


def load_transformers(
    state_dict_or_path,
    config=None,
    image_shape=None,
    pool_type=None,
    num_heads=None,
    dtype=None,
):
    """Loads an HF transformers SigLIP vision tower into a SoViT model.

    Reads the weights of `SiglipVisionModel` (keys `embeddings.*`,
    `encoder.layers.{i}.*`, `post_layernorm.*`, `head.*`), of the vision
    tower of a two-tower `SiglipModel` (the same under `vision_model.`;
    the text tower is ignored) and of `SiglipForImageClassification`
    (`vision_model.*` and a `classifier`, which averages the tokens: a
    `SoViTClassifier` with `pool_type="gap"`). The blocks' separate
    `q_proj` / `k_proj` / `v_proj` / `out_proj` and the pooling head's
    fused `in_proj_weight` ([q; k; v], torch's `nn.MultiheadAttention`)
    are converted to big_vision's layout; `post_layernorm` is the final
    LayerNorm. `hidden_act="gelu_pytorch_tanh"` (SigLIP) gives tanh GELU,
    `"gelu"` exact GELU; other activations and a `layer_norm_eps` other
    than 1e-6 raise a `ValueError`.

    Args:
        state_dict_or_path: a state dict, a `.safetensors` / `.bin` file,
            or a directory written by `save_pretrained` (its `config.json`
            is then read too).
        config: a `SiglipVisionConfig` (or `SiglipConfig`), its dict, a
            path to `config.json`, or `None`. It gives the heads and the
            activation; without it the heads come from `num_heads` or the
            variant table, and tanh GELU is assumed. Defaults to `None`.
        image_shape: tuple `(height, width, channels)` or `None` (the
            checkpoint's square grid); another grid resamples the position
            embedding as big_vision does. Defaults to `None`.
        pool_type: str or `None`. `"map"` when the tower has its head,
            `"gap"` for the classifier, else `"none"` (the tokens, HF's
            `last_hidden_state`) unless given. Defaults to `None`.
        num_heads: int or `None`. Used when `config` is `None`. Defaults
            to `None`.
        dtype: dtype or policy of the model. Defaults to `None`.

    Returns:
        A `keras_sovit.models.SoViTBackbone`, whose output is HF's
        `pooler_output` (`"map"`) or `last_hidden_state` (`"none"`), or a
        `SoViTClassifier` for `SiglipForImageClassification` weights.

    Example:

    ```python no-run
    # A directory written by SiglipVisionModel.save_pretrained(...):
    backbone = keras_sovit.checkpoints.load_transformers("siglip_dir")
    ```
    """
    path = state_dict_or_path
    if isinstance(path, (str, os.PathLike)) and os.path.isdir(path):
        if config is None and os.path.isfile(os.path.join(path, "config.json")):
            config = os.path.join(path, "config.json")
        files = [
            os.path.join(path, f)
            for f in _WEIGHT_FILES
            if os.path.isfile(os.path.join(path, f))
        ]
        if not files:
            raise ValueError(
                f"The directory has none of {list(_WEIGHT_FILES)}. "
                f"Received: state_dict_or_path={state_dict_or_path!r}"
            )
        path = files[0]
    state = read_state_dict(path, "state_dict_or_path")
    approximate_gelu, config_heads = _settings(_config_dict(config))
    if num_heads is not None and config_heads not in (None, num_heads):
        raise ValueError(
            f"`num_heads` disagrees with the config's {config_heads} "
            f"heads. Received: num_heads={num_heads!r}"
        )
    arrays, classifier = transformers_to_big_vision(state)
    default_pool = "gap" if classifier else "none"
    return build_model(
        arrays,
        source="transformers",
        num_heads=num_heads or config_heads,
        image_shape=image_shape,
        pool_type=pool_type,
        dtype=dtype,
        approximate_gelu=approximate_gelu,
        default_pool_type=default_pool,
    )
