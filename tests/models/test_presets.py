import os

import keras
import numpy as np
import pytest

import keras_sovit
from keras_sovit.checkpoints import save_big_vision
from keras_sovit.models import SOVIT_PRESETS
from keras_sovit.models import SoViTBackbone
from keras_sovit.models import SoViTClassifier
from keras_sovit.shapes import VARIANTS

TINY = keras_sovit.ShapeSpec(32, 2, 48, 4, patch_size=8)


def test_table_is_plain_data_with_the_public_checkpoints():
    assert SoViTBackbone.presets is SOVIT_PRESETS
    assert SoViTClassifier.presets is SOVIT_PRESETS
    so400m = dict(zip(("width", "depth", "mlp_dim", "num_heads"),
                      VARIANTS["So400m"]))  # fmt: skip
    for name, preset in SOVIT_PRESETS.items():
        assert set(preset) >= {"description", "shape", "image_size",
                               "pool_type", "num_classes", "files",
                               "approximate_gelu"}, name  # fmt: skip
        assert set(preset["approximate_gelu"]) == set(preset["files"]), name
        for url in preset["files"].values():
            assert url.startswith(("gs://big_vision/", "https://huggingface"))
        spec = keras_sovit.ShapeSpec.from_dict(preset["shape"])
        if "so400m" in name:
            assert {k: preset["shape"][k] for k in so400m} == so400m, name
            assert not preset.get("unsupported")
        else:
            assert (
                "so150m" in name
                and "register tokens" in (preset["unsupported"])
            )
        assert spec.num_patches(preset["image_size"]) > 0
    bv = SOVIT_PRESETS["siglip_so400m_patch14_224"]["files"]["big_vision"]
    assert os.path.basename(bv) == "webli_en_so400m_224_57633886.npz"
    p384 = SOVIT_PRESETS["siglip_so400m_patch14_384"]
    assert (
        keras_sovit.ShapeSpec.from_dict(p384["shape"]).num_patches(
            p384["image_size"]
        )
        == 729
    )
    assert SOVIT_PRESETS["sovit_so400m_patch14_378_in1k"]["num_classes"] == (
        1000
    )


@pytest.fixture
def tiny_preset(monkeypatch):
    """A preset entry of a tiny shape, so that loading runs in a second."""
    entry = {
        "description": "test",
        "shape": TINY.to_dict(),
        "image_size": 32,
        "pool_type": "map",
        "num_classes": 0,
        "files": {
            "big_vision": "gs://big_vision/test/tiny.npz",
            "timm": "https://huggingface.co/timm/tiny/model.safetensors",
            "transformers": "https://huggingface.co/t/tiny/model.safetensors",
        },
        "approximate_gelu": {
            "big_vision": True,
            "timm": False,
            "transformers": True,
        },  # fmt: skip
    }
    monkeypatch.setitem(SOVIT_PRESETS, "tiny", entry)
    return entry


def _images(size=32):
    rng = np.random.default_rng(0)
    return rng.uniform(-1, 1, size=(2, size, size, 3)).astype("float32")


def _randomize(model):
    rng = np.random.default_rng(1)
    for w in model.weights:
        w.assign(rng.normal(scale=0.2, size=w.shape).astype("float32"))
    return model


def test_from_preset_big_vision_file(tiny_preset, tmp_path):
    source = _randomize(SoViTBackbone(TINY, image_shape=(32, 32, 3)))
    path = save_big_vision(source, str(tmp_path / "tiny.npz"))
    backbone = SoViTBackbone.from_preset("tiny", checkpoint=path)
    x = _images()
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(backbone(x)),
        keras.ops.convert_to_numpy(source(x)),
    )
    classifier = SoViTClassifier.from_preset(
        "tiny", checkpoint=path, num_classes=3, image_shape=(48, 48, 3)
    )
    assert classifier.num_classes == 3
    assert classifier.backbone.image_shape == (48, 48, 3)
    with pytest.raises(ValueError, match="num_classes"):
        SoViTClassifier.from_preset("tiny", checkpoint=path)
    with pytest.warns(UserWarning, match="tiny.npz"):
        other = save_big_vision(source, str(tmp_path / "renamed.npz"))
        SoViTBackbone.from_preset("tiny", checkpoint=other)


def test_from_preset_timm_and_transformers_files(tiny_preset, tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("timm")
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import save_file
    from timm.models.vision_transformer import VisionTransformer

    x = _images()
    nchw = torch.from_numpy(x).permute(0, 3, 1, 2)
    timm_model = VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4,
        mlp_ratio=1.5, class_token=False, global_pool="map", num_classes=0,
    ).eval()  # fmt: skip
    path = str(tmp_path / "model.safetensors")
    save_file(timm_model.state_dict(), path)
    backbone = SoViTBackbone.from_preset("tiny", checkpoint=path)
    assert backbone.approximate_gelu is False  # the preset's timm GELU
    with torch.no_grad():
        expected = timm_model(nchw).numpy()
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(backbone(x)), expected, atol=1e-5
    )

    config = transformers.SiglipVisionConfig(
        hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, image_size=32, patch_size=8,
    )  # fmt: skip
    hf_model = transformers.SiglipVisionModel(config).eval()
    hf_model.save_pretrained(str(tmp_path / "hf"))
    backbone = SoViTBackbone.from_preset("tiny", checkpoint=tmp_path / "hf")
    with torch.no_grad():
        expected = hf_model(pixel_values=nchw).pooler_output.numpy()
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(backbone(x)), expected, atol=1e-5
    )


def test_random_weights_without_a_file(tiny_preset):
    backbone = SoViTBackbone.from_preset("tiny", load_weights=False)
    assert backbone.shape_spec == TINY and backbone.pool_type == "map"
    classifier = SoViTClassifier.from_preset(
        "tiny", load_weights=False, num_classes=4
    )
    assert classifier.num_classes == 4


def test_refusals(tiny_preset, tmp_path):
    with pytest.raises(ValueError, match="gs://big_vision/test/tiny.npz"):
        SoViTBackbone.from_preset("tiny")
    with pytest.raises(ValueError, match="preset"):
        SoViTBackbone.from_preset("so400m")
    with pytest.raises(ValueError, match="register tokens"):
        SoViTBackbone.from_preset(
            "timm_so150m_patch16_reg4_gap_256_in1k", load_weights=False
        )
    other = SoViTBackbone(TINY.replace(depth=1), image_shape=(32, 32, 3))
    path = save_big_vision(other, str(tmp_path / "tiny.npz"))
    with pytest.raises(ValueError, match="not preset 'tiny'"):
        SoViTBackbone.from_preset("tiny", checkpoint=path)
