"""load_timm against the real timm (torch, CPU), random weights, offline."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from timm.models.vision_transformer import VisionTransformer  # noqa: E402

from keras_sovit.checkpoints import load_timm  # noqa: E402
from keras_sovit.models import SoViTBackbone  # noqa: E402
from keras_sovit.models import SoViTClassifier  # noqa: E402
from tests.checkpoints.reference import assert_relative_close  # noqa: E402
from tests.checkpoints.reference import forward  # noqa: E402

BASE = {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 4,
        "mlp_ratio": 1.5}  # fmt: skip


def _timm_model(img_size=(32, 32), seed=0, **kwargs):
    torch.manual_seed(seed)
    model = VisionTransformer(img_size=img_size, **{**BASE, **kwargs}).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.2)
    return model


def _images(img_size, seed=1):
    rng = np.random.default_rng(seed)
    nchw = rng.uniform(-1, 1, size=(2, 3) + tuple(img_size))
    return torch.from_numpy(nchw.astype("float32"))


def _nhwc(x):
    return x.permute(0, 2, 3, 1).numpy()


def _keras(model, x):
    return forward(model, _nhwc(x))


@pytest.mark.parametrize(
    "kwargs, pool_type, img_size",
    [
        # The SigLIP layout: MAP head, no class token, exact GELU.
        ({"global_pool": "map", "class_token": False, "num_classes": 5},
         "map", (32, 32)),
        # timm's So400m/16 style: tanh GELU, non-square images.
        ({"global_pool": "map", "class_token": False, "num_classes": 0,
          "act_layer": "gelu_tanh"}, "map", (24, 40)),
        # The SigLIP gap variants (norm before pooling, no fc_norm).
        ({"global_pool": "avg", "class_token": False, "fc_norm": False,
          "num_classes": 3}, "gap", (32, 24)),
        # A class token without its own position (big_vision's "tok").
        ({"global_pool": "token", "class_token": True,
          "no_embed_class": True, "num_classes": 4}, "tok", (32, 32)),
    ],
)  # fmt: skip
def test_outputs_equal_timm(kwargs, pool_type, img_size):
    model = _timm_model(img_size, **kwargs)
    approximate = kwargs.get("act_layer") == "gelu_tanh"
    x = _images(img_size)
    with torch.no_grad():
        expected = model(x).numpy()
    loaded = load_timm(
        model.state_dict(),
        num_heads=4,
        image_shape=tuple(img_size) + (3,),
        pool_type=None if pool_type in ("map", "tok") else pool_type,
        approximate_gelu=approximate,
    )
    classes = kwargs["num_classes"]
    assert type(loaded) is (SoViTClassifier if classes else SoViTBackbone)
    backbone = getattr(loaded, "backbone", loaded)
    assert backbone.pool_type == pool_type
    assert loaded.count_params() == sum(p.numel() for p in model.parameters())
    assert_relative_close(_keras(loaded, x), expected, rtol=1e-5)


def test_tokens_equal_forward_features():
    model = _timm_model(global_pool="", class_token=False, num_classes=0)
    x = _images((32, 32))
    with torch.no_grad():
        expected = model.forward_features(x).numpy()
    loaded = load_timm(model.state_dict(), num_heads=4, pool_type="none")
    assert_relative_close(_keras(loaded, x), expected, rtol=1e-5)


def test_gelu_choice_matters():
    model = _timm_model(global_pool="map", class_token=False, num_classes=0)
    x = _images((32, 32))
    with torch.no_grad():
        expected = model(x).numpy()
    tanh = load_timm(model.state_dict(), num_heads=4, approximate_gelu=True)
    error = np.abs(_keras(tanh, x) - expected).max() / np.abs(expected).max()
    # tanh GELU on an erf-GELU model misses the 1e-5 agreement above.
    assert error > 2e-5


def test_reads_safetensors_and_pth_files(tmp_path):
    from safetensors.torch import save_file

    model = _timm_model(global_pool="map", class_token=False, num_classes=2)
    x = _images((32, 32))
    with torch.no_grad():
        expected = model(x).numpy()
    state = model.state_dict()
    save_file(state, str(tmp_path / "model.safetensors"))
    torch.save(state, str(tmp_path / "model.pth"))
    for name in ("model.safetensors", "model.pth"):
        loaded = load_timm(str(tmp_path / name), num_heads=4)
        assert_relative_close(_keras(loaded, x), expected, rtol=1e-5)


def test_resamples_pos_embed_like_big_vision():
    from keras_sovit.checkpoints import resample_position_embedding

    model = _timm_model(global_pool="map", class_token=False, num_classes=0)
    loaded = load_timm(model.state_dict(), num_heads=4, image_shape=(48, 48, 3))
    import keras

    table = keras.ops.convert_to_numpy(
        loaded.get_layer("pos_embedding").pos_embedding
    )
    expected = resample_position_embedding(model.pos_embed.detach().numpy(), 6)
    np.testing.assert_array_equal(table, expected)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"class_token": True, "global_pool": "token"},
         "class token with its own position"),
        ({"class_token": False, "reg_tokens": 2, "global_pool": "avg",
          "fc_norm": False, "no_embed_class": True}, "register tokens"),
        ({"class_token": False, "global_pool": "avg"}, "fc_norm"),
        ({"class_token": False, "global_pool": "map", "pre_norm": True},
         "pre-norm"),
        ({"class_token": False, "global_pool": "map", "qk_norm": True},
         "qk-norm"),
        ({"class_token": False, "global_pool": "map", "init_values": 1e-5},
         "layer scale"),
        ({"class_token": False, "global_pool": "map", "qkv_bias": False},
         "attention without biases"),
        ({"class_token": False, "global_pool": "map", "proj_bias": False},
         "attention without biases"),
    ],
)  # fmt: skip
def test_unrepresentable_settings_are_refused(kwargs, message):
    model = _timm_model(num_classes=0, **kwargs)
    with pytest.raises(ValueError, match=message):
        load_timm(model.state_dict(), num_heads=4)


def test_num_heads_needed_for_unknown_shapes():
    model = _timm_model(global_pool="map", class_token=False, num_classes=0)
    with pytest.raises(ValueError, match="num_heads"):
        load_timm(model.state_dict())
    with pytest.raises(ValueError, match="state_dict_or_path"):
        load_timm("model.ckpt")
