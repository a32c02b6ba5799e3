"""Public SoViT-shaped checkpoints, as data (nothing is downloaded).

Each preset names one published set of weights: its shape, patch size,
training resolution, pooling, class count, and where the files live with
the file name to expect in each format (`"big_vision"` `.npz`,
`"transformers"` `model.safetensors`, `"timm"` `model.safetensors`). Fetch
a file yourself (e.g. `gsutil cp` or `huggingface-cli download`) and pass
its path to `SoViTBackbone.from_preset(name, checkpoint=path)` or
`SoViTClassifier.from_preset(...)`. Images are expected in [-1, 1] (mean
and std 0.5), as `keras_sovit.data.input_pipeline` makes them.

`approximate_gelu` records, per format, the GELU of the network that
produced the outputs that format is compared with: SigLIP was trained in
big_vision with tanh GELU, while timm's `vit_so400m_patch14_siglip_*`
definitions run exact GELU (2.6e-4 relative difference at full size).

timm's So150m models are "shape optimized, but different than the paper":
896 wide with 14 heads (`vit_so150m_*`) or 832 wide with layer scale
(`vit_so150m2_*`), and all use register tokens, which a SoViT cannot
represent; they are listed with `unsupported` set so that loading them
fails with the reason. big_vision and HF publish no So150m.
"""

_SO400M = {"width": 1152, "depth": 27, "mlp_dim": 4304, "num_heads": 16}
_TIMM_SO150M = {"width": 896, "depth": 18, "mlp_dim": 2304, "num_heads": 14}
_TIMM_SO150M2 = {"width": 832, "depth": 21, "mlp_dim": 2176, "num_heads": 13}
_BV = "gs://big_vision/"
_HF = "https://huggingface.co/"
_TANH = {"big_vision": True, "transformers": True, "timm": True}
_TIMM_ERF = {"big_vision": True, "transformers": True, "timm": False}


def _siglip(description, patch, size, npz, hf=None, timm=None, gelu=_TANH):
    files = {"big_vision": npz}
    if hf:
        files["transformers"] = f"{_HF}{hf}/model.safetensors"
    if timm:
        files["timm"] = f"{_HF}timm/{timm}/model.safetensors"
    return {
        "description": description,
        "shape": dict(_SO400M, patch_size=patch),
        "image_size": size,
        "pool_type": "map",
        "num_classes": 0,
        "files": files,
        "approximate_gelu": gelu,
    }


def _timm(description, shape, patch, size, timm, pool, classes, reason):
    return {
        "description": description,
        "shape": dict(shape, patch_size=patch),
        "image_size": size,
        "pool_type": pool,
        "num_classes": classes,
        "files": {"timm": f"{_HF}timm/{timm}/model.safetensors"},
        "approximate_gelu": {"timm": False},
        "unsupported": reason,
    }


SOVIT_PRESETS = {
    "siglip_so400m_patch14_224": _siglip(
        "SigLIP So400m/14 image tower (SoViT-400m/14), WebLI, 224 px. "
        "The big_vision file is in the scan layout.",
        14,
        224,
        f"{_BV}siglip/webli_en_so400m_224_57633886.npz",
        hf="google/siglip-so400m-patch14-224",
        timm="vit_so400m_patch14_siglip_224.webli",
        gelu=_TIMM_ERF,
    ),
    "siglip_so400m_patch14_384": _siglip(
        "SigLIP So400m/14 image tower, WebLI, 384 px (27 x 27 tokens; "
        "timm's copy is `_378`, the same grid).",
        14,
        384,
        f"{_BV}siglip/webli_en_so400m_384_58765454.npz",
        hf="google/siglip-so400m-patch14-384",
        timm="vit_so400m_patch14_siglip_378.webli",
        gelu=_TIMM_ERF,
    ),
    "siglip_so400m_patch16_256_i18n": _siglip(
        "SigLIP So400m/16 multilingual image tower, WebLI, 256 px.",
        16,
        256,
        f"{_BV}siglip/webli_i18n_so400m_16_256_78061115.npz",
        hf="google/siglip-so400m-patch16-256-i18n",
        timm="vit_so400m_patch16_siglip_256.webli_i18n",
    ),
    "siglip2_so400m_patch14_224": _siglip(
        "SigLIP 2 So400m/14 image tower (fixed resolution), 224 px.",
        14,
        224,
        f"{_BV}siglip2/siglip2_so400m14_224.npz",
        hf="google/siglip2-so400m-patch14-224",
        timm="vit_so400m_patch14_siglip_224.v2_webli",
        gelu=_TIMM_ERF,
    ),
    "siglip2_so400m_patch14_384": _siglip(
        "SigLIP 2 So400m/14 image tower (fixed resolution), 384 px.",
        14,
        384,
        f"{_BV}siglip2/siglip2_so400m14_384.npz",
        hf="google/siglip2-so400m-patch14-384",
        timm="vit_so400m_patch14_siglip_378.v2_webli",
        gelu=_TIMM_ERF,
    ),
    "siglip2_so400m_patch16_256": _siglip(
        "SigLIP 2 So400m/16 image tower (fixed resolution), 256 px.",
        16,
        256,
        f"{_BV}siglip2/siglip2_so400m16_256.npz",
        hf="google/siglip2-so400m-patch16-256",
        timm="vit_so400m_patch16_siglip_256.v2_webli",
    ),
    "siglip2_so400m_patch16_384": _siglip(
        "SigLIP 2 So400m/16 image tower (fixed resolution), 384 px.",
        16,
        384,
        f"{_BV}siglip2/siglip2_so400m16_384.npz",
        hf="google/siglip2-so400m-patch16-384",
        timm="vit_so400m_patch16_siglip_384.v2_webli",
    ),
    "siglip2_so400m_patch16_512": _siglip(
        "SigLIP 2 So400m/16 image tower (fixed resolution), 512 px.",
        16,
        512,
        f"{_BV}siglip2/siglip2_so400m16_512.npz",
        hf="google/siglip2-so400m-patch16-512",
        timm="vit_so400m_patch16_siglip_512.v2_webli",
    ),
    "sovit_so400m_patch14_378_in1k": _timm(
        "SigLIP So400m/14 fine-tuned on ImageNet-1k by timm, MAP head, "
        "378 px, 1000 classes (exact GELU).",
        _SO400M,
        14,
        378,
        "vit_so400m_patch14_siglip_378.webli_ft_in1k",
        "map",
        1000,
        None,
    ),
    "sovit_so400m_patch14_gap_378_in1k": _timm(
        "SigLIP So400m/14 fine-tuned on ImageNet-1k by timm, global "
        "average pooling, 378 px, 1000 classes (exact GELU).",
        _SO400M,
        14,
        378,
        "vit_so400m_patch14_siglip_gap_378.webli_ft_in1k",
        "gap",
        1000,
        None,
    ),
    "timm_so150m_patch16_reg4_gap_256_in1k": _timm(
        "timm's So150m (896 wide, 14 heads) with 4 register tokens, "
        "ImageNet-12k then 1k, 256 px.",
        _TIMM_SO150M,
        16,
        256,
        "vit_so150m_patch16_reg4_gap_256.sbb_e250_in12k_ft_in1k",
        "gap",
        1000,
        "register tokens (reg_tokens=4)",
    ),
    "timm_so150m_patch16_reg4_gap_384_in1k": _timm(
        "timm's So150m (896 wide, 14 heads) with 4 register tokens, "
        "ImageNet-12k then 1k, 384 px.",
        _TIMM_SO150M,
        16,
        384,
        "vit_so150m_patch16_reg4_gap_384.sbb_e250_in12k_ft_in1k",
        "gap",
        1000,
        "register tokens (reg_tokens=4)",
    ),
    "timm_so150m2_patch16_reg1_gap_384_in1k": _timm(
        "timm's So150m v2 (832 wide, 21 deep, 13 heads), ImageNet-12k "
        "then 1k, 384 px.",
        _TIMM_SO150M2,
        16,
        384,
        "vit_so150m2_patch16_reg1_gap_384.sbb_e200_in12k_ft_in1k",
        "gap",
        1000,
        "register tokens (reg_tokens=1), layer scale (init_values), "
        "attention without biases (qkv_bias=False) and fc_norm",
    ),
}
