"""load_transformers against the real HF SigLIP, random weights, offline."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import keras  # noqa: E402

from keras_sovit.checkpoints import load_transformers  # noqa: E402
from keras_sovit.models import SoViTBackbone  # noqa: E402
from keras_sovit.models import SoViTClassifier  # noqa: E402
from tests.checkpoints.reference import assert_relative_close  # noqa: E402
from tests.checkpoints.reference import forward  # noqa: E402

VISION = {
    "hidden_size": 32,
    "intermediate_size": 48,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": 32,
    "patch_size": 8,
}


def _randomize(model, seed=0):
    torch.manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.2)
    return model.eval()


def _vision_model(**kwargs):
    config = transformers.SiglipVisionConfig(**{**VISION, **kwargs})
    return _randomize(transformers.SiglipVisionModel(config)), config


def _images(size, seed=1):
    rng = np.random.default_rng(seed)
    nchw = rng.uniform(-1, 1, size=(2, 3, size, size)).astype("float32")
    return torch.from_numpy(nchw)


def _keras(model, x):
    return forward(model, x.permute(0, 2, 3, 1).numpy())


@pytest.mark.parametrize(
    "kwargs",
    [
        {},  # SigLIP: MAP head, tanh GELU.
        {"hidden_act": "gelu"},
        {"image_size": 24, "patch_size": 4, "num_attention_heads": 2},
    ],
)
def test_pooled_output_equals_hf(kwargs):
    model, config = _vision_model(**kwargs)
    x = _images(config.image_size)
    with torch.no_grad():
        out = model(pixel_values=x)
    loaded = load_transformers(model.state_dict(), config=config)
    assert type(loaded) is SoViTBackbone
    assert loaded.pool_type == "map"
    assert loaded.approximate_gelu is (config.hidden_act != "gelu")
    assert loaded.shape_spec.num_heads == config.num_attention_heads
    assert loaded.count_params() == sum(p.numel() for p in model.parameters())
    assert_relative_close(_keras(loaded, x), out.pooler_output.numpy())
    tokens = keras.Model(loaded.input, loaded.get_layer("encoder_norm").output)
    assert_relative_close(_keras(tokens, x), out.last_hidden_state.numpy())


def test_tower_without_head_gives_tokens():
    model, config = _vision_model(vision_use_head=False)
    x = _images(32)
    with torch.no_grad():
        expected = model(pixel_values=x).last_hidden_state.numpy()
    loaded = load_transformers(model.state_dict(), config=config)
    assert loaded.pool_type == "none"
    assert_relative_close(_keras(loaded, x), expected)


def test_save_pretrained_directory(tmp_path):
    model, config = _vision_model(hidden_act="gelu")
    model.save_pretrained(str(tmp_path))
    x = _images(32)
    with torch.no_grad():
        expected = model(pixel_values=x).pooler_output.numpy()
    loaded = load_transformers(str(tmp_path))  # config.json read too
    assert loaded.approximate_gelu is False
    assert_relative_close(_keras(loaded, x), expected)


def _two_tower_config(**kwargs):
    text = dict(
        VISION,
        vocab_size=64,
        num_hidden_layers=1,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    del text["image_size"], text["patch_size"]
    return transformers.SiglipConfig(
        vision_config=VISION, text_config=text, **kwargs
    )


def test_vision_tower_of_two_tower_siglip():
    config = _two_tower_config()
    model = _randomize(transformers.SiglipModel(config))
    state = model.state_dict()
    assert any(k.startswith("text_model.") for k in state)
    x = _images(32)
    with torch.no_grad():
        expected = model.vision_model(pixel_values=x).pooler_output.numpy()
    loaded = load_transformers(state, config=config.to_dict())
    assert_relative_close(_keras(loaded, x), expected)


def test_image_classification_model():
    config = _two_tower_config(num_labels=3)
    model = _randomize(transformers.SiglipForImageClassification(config))
    x = _images(32)
    with torch.no_grad():
        expected = model(pixel_values=x).logits.numpy()
    loaded = load_transformers(model.state_dict(), config=config)
    assert type(loaded) is SoViTClassifier
    assert loaded.backbone.pool_type == "gap"
    assert_relative_close(_keras(loaded, x), expected)


def test_resamples_to_another_resolution():
    from keras_sovit.checkpoints import resample_position_embedding

    model, config = _vision_model()
    loaded = load_transformers(
        model.state_dict(), config=config, image_shape=(40, 40, 3)
    )
    table = keras.ops.convert_to_numpy(
        loaded.get_layer("pos_embedding").pos_embedding
    )
    weight = model.state_dict()["embeddings.position_embedding.weight"]
    np.testing.assert_array_equal(
        table, resample_position_embedding(weight.numpy(), 5)[None]
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"layer_norm_eps": 1e-5}, "layer_norm_eps"),
        ({"hidden_act": "relu"}, "hidden_act"),
    ],
)
def test_unrepresentable_settings_are_refused(kwargs, message):
    model, config = _vision_model(**kwargs)
    with pytest.raises(ValueError, match=message):
        load_transformers(model.state_dict(), config=config)


def test_unknown_weights_and_heads():
    model, config = _vision_model()
    state = dict(model.state_dict())
    state["encoder.layers.0.self_attn.q_norm.weight"] = torch.ones(32)
    with pytest.raises(ValueError, match="no place for"):
        load_transformers(state, config=config)
    with pytest.raises(ValueError, match="num_heads"):
        load_transformers(model.state_dict())  # no config, unknown shape
    with pytest.raises(ValueError, match="num_heads"):
        load_transformers(model.state_dict(), config=config, num_heads=2)
    assert (
        load_transformers(model.state_dict(), num_heads=4).shape_spec.num_heads
        == 4
    )
