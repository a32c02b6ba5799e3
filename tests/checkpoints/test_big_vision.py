import keras
import ml_dtypes
import numpy as np
import pytest

import keras_sovit
from keras_sovit.checkpoints import load_big_vision
from keras_sovit.checkpoints import resample_position_embedding
from keras_sovit.checkpoints import save_big_vision
from keras_sovit.models import SoViTBackbone
from keras_sovit.models import SoViTClassifier
from tests.checkpoints.reference import assert_relative_close
from tests.checkpoints.reference import forward
from tests.checkpoints.reference import random_vit_arrays
from tests.checkpoints.reference import vit_forward

SHAPE = keras_sovit.ShapeSpec(32, 2, 48, 4, patch_size=8)


def _images(shape=(2, 32, 32, 3), seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, size=shape).astype("float32")


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _write(tmp_path, arrays, name="ckpt.npz"):
    path = str(tmp_path / name)
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    "pool_type, num_classes, rep_size, grid",
    [
        ("map", 0, None, (4, 4)),
        ("gap", 5, 16, (3, 4)),
        ("tok", 3, None, (4, 4)),
        ("0", 0, None, (3, 4)),
    ],
)
def test_npz_matches_independent_numpy_vit(
    tmp_path, pool_type, num_classes, rep_size, grid
):
    arrays = random_vit_arrays(
        pool_type=pool_type,
        num_classes=num_classes,
        rep_size=rep_size,
        grid=grid,
    )
    image_shape = (grid[0] * 8, grid[1] * 8, 3)
    pool = pool_type if pool_type == "0" else None
    model = load_big_vision(
        _write(tmp_path, arrays), image_shape=image_shape, pool_type=pool
    )
    expected_cls = SoViTClassifier if num_classes else SoViTBackbone
    assert type(model) is expected_cls
    backbone = getattr(model, "backbone", model)
    assert backbone.shape_spec == SHAPE
    assert backbone.pool_type == pool_type
    x = _images((2,) + image_shape)
    assert_relative_close(forward(model, x), vit_forward(arrays, x, pool_type))
    if rep_size:
        assert model.rep_size == rep_size


def test_heads_come_from_the_attention_kernels(tmp_path):
    for heads in (2, 8):
        arrays = random_vit_arrays(heads=heads, depth=1)
        model = load_big_vision(arrays)
        assert model.shape_spec.num_heads == heads
        x = _images()
        assert_relative_close(forward(model, x), vit_forward(arrays, x, "map"))
    with pytest.raises(ValueError, match="num_heads"):
        load_big_vision(random_vit_arrays(heads=2), num_heads=4)


def _scanned(arrays, depth=2):
    out = {}
    for key, value in arrays.items():
        if key.startswith("Transformer/encoderblock_0/"):
            name = key[len("Transformer/encoderblock_0/") :]
            out[f"Transformer/encoderblock/{name}"] = np.stack(
                [
                    arrays[f"Transformer/encoderblock_{i}/{name}"]
                    for i in range(depth)
                ]  # fmt: skip
            )
        elif not key.startswith("Transformer/encoderblock_"):
            out[key] = value
    return out


def test_scan_layout(tmp_path):
    arrays = random_vit_arrays(num_classes=4)
    scanned = _scanned(arrays)
    assert scanned[
        "Transformer/encoderblock/MlpBlock_0/Dense_0/kernel"
    ].shape == (2, 32, 48)
    model = load_big_vision(_write(tmp_path, scanned))
    x = _images()
    assert_relative_close(forward(model, x), vit_forward(arrays, x, "map"))
    mixed = dict(scanned, **{
        "Transformer/encoderblock_0/LayerNorm_0/scale": np.ones(32),
    })  # fmt: skip
    with pytest.raises(ValueError, match="scanned"):
        load_big_vision(mixed)


@pytest.mark.parametrize("prefix", ["params/img/", "img/", "params/"])
def test_prefixes_of_two_tower_and_training_checkpoints(tmp_path, prefix):
    arrays = random_vit_arrays(depth=1)
    stored = {f"{prefix}{k}": v for k, v in arrays.items()}
    # A text tower and other entries beside the image tower are ignored.
    stored["params/txt/Embed_0/embedding"] = np.zeros((10, 32), "float32")
    stored["params/t"] = np.zeros((1,), "float32")
    if prefix == "params/":
        del stored["params/txt/Embed_0/embedding"], stored["params/t"]
    stored["txt/Encoder_0/encoder_norm/scale"] = np.ones(32, "float32")
    model = load_big_vision(_write(tmp_path, stored))
    x = _images()
    assert_relative_close(forward(model, x), vit_forward(arrays, x, "map"))
    same = load_big_vision(stored, prefix=prefix)
    np.testing.assert_array_equal(forward(same, x), forward(model, x))


def test_ambiguous_or_missing_prefix():
    arrays = random_vit_arrays(depth=1)
    both = dict(arrays, **{f"img/{k}": v for k, v in arrays.items()})
    with pytest.raises(ValueError, match="prefix"):
        load_big_vision(both)
    with pytest.raises(ValueError, match="prefix"):
        load_big_vision(arrays, prefix="img/")
    with pytest.raises(ValueError, match="prefix"):
        load_big_vision({"txt/x": np.zeros(3)})


def test_raw_bfloat16_storage(tmp_path):
    arrays = random_vit_arrays(depth=1, num_classes=3)
    # np.savez of JAX/ml_dtypes bfloat16 arrays, as big_vision writes them.
    stored = {k: v.astype(ml_dtypes.bfloat16) for k, v in arrays.items()}
    path = _write(tmp_path, stored)
    with np.load(path) as data:
        raw = data["embedding/kernel"]
        assert raw.dtype.kind == "V" and raw.dtype.itemsize == 2
    model = load_big_vision(path)
    rounded = {k: v.astype(np.float32) for k, v in stored.items()}
    kernel = _np(model.backbone.get_layer("embedding").kernel)
    np.testing.assert_array_equal(kernel, rounded["embedding/kernel"])
    assert not np.array_equal(kernel, arrays["embedding/kernel"])
    x = _images()
    assert_relative_close(forward(model, x), vit_forward(rounded, x, "map"))
    # uint16 bits (another way raw bfloat16 is kept) read the same.
    bits = {k: v.view(np.uint16) for k, v in stored.items()}
    same = load_big_vision(bits)
    np.testing.assert_array_equal(forward(same, x), forward(model, x))


def _randomize(model, seed=0):
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        value = rng.normal(scale=0.2, size=weight.shape)
        weight.assign(value.astype("float32"))


@pytest.mark.parametrize(
    "pool_type, posemb, num_classes, rep_size",
    [
        ("map", "learn", 4, 8),
        ("tok", "learn", 0, None),
        ("gap", "sincos2d", 3, None),
        ("none", "learn", 0, None),
    ],
)
def test_save_load_round_trip_is_exact(
    tmp_path, pool_type, posemb, num_classes, rep_size
):
    image_shape = (24, 32, 3)
    model = SoViTBackbone(
        SHAPE, image_shape=image_shape, pool_type=pool_type, posemb=posemb
    )
    if num_classes:
        model = SoViTClassifier(model, num_classes, rep_size=rep_size)
    _randomize(model)
    path = save_big_vision(model, str(tmp_path / "m"))
    assert path.endswith("m.npz")
    pool = pool_type if pool_type in ("0", "none", "gap") else None
    loaded = load_big_vision(path, image_shape=image_shape, pool_type=pool)
    assert type(loaded) is type(model)
    assert loaded.get_config() == model.get_config()
    x = _images((2,) + image_shape)
    np.testing.assert_array_equal(forward(loaded, x), forward(model, x))


def test_saved_keys_are_big_vision_names(tmp_path):
    model = SoViTClassifier(SoViTBackbone(SHAPE, image_shape=(32, 32, 3)), 3)
    path = save_big_vision(model, str(tmp_path / "m.npz"))
    expected = random_vit_arrays(num_classes=3)
    with np.load(path) as data:
        assert set(data.files) == set(expected)
        for key in data.files:
            assert data[key].shape == expected[key].shape, key
            assert data[key].dtype == np.float32


def test_save_scan_prefix_and_bfloat16(tmp_path):
    model = SoViTClassifier(SoViTBackbone(SHAPE, image_shape=(32, 32, 3)), 3)
    _randomize(model, seed=3)
    path = save_big_vision(
        model,
        str(tmp_path / "m.npz"),
        prefix="params/img/",
        scan=True,
        bfloat16=True,
    )
    with np.load(path) as data:
        scanned = data["params/img/Transformer/encoderblock/LayerNorm_0/scale"]
        assert scanned.shape == (2, 32)
        assert scanned.dtype.itemsize == 2
        assert (
            "params/img/Transformer/encoderblock_0/LayerNorm_0/scale"
            not in (data.files)
        )
    loaded = load_big_vision(path)
    for saved, original in zip(loaded.weights, model.weights):
        # Rounded to bfloat16 (nearest even), as ml_dtypes does.
        expected = _np(original).astype(ml_dtypes.bfloat16).astype("float32")
        np.testing.assert_array_equal(_np(saved), expected)


def test_posemb_resampled_to_a_new_resolution(tmp_path):
    arrays = random_vit_arrays(num_classes=0)
    model = load_big_vision(arrays, image_shape=(48, 40, 3))
    table = _np(model.get_layer("pos_embedding").pos_embedding)
    assert table.shape == (1, 6 * 5, 32)
    np.testing.assert_array_equal(
        table,
        resample_position_embedding(arrays["pos_embedding"], (6, 5)),
    )
    # Corner positions keep their values under big_vision's zoom.
    old = arrays["pos_embedding"].reshape(4, 4, 32)
    new = table.reshape(6, 5, 32)
    np.testing.assert_allclose(new[0, 0], old[0, 0], rtol=1e-6)
    np.testing.assert_allclose(new[-1, -1], old[-1, -1], rtol=1e-6)
    # 50 px at patch 8 drops 2 pixels and is the same 6 x 6 grid as 48 px.
    with pytest.warns(UserWarning, match="drops"):
        odd = load_big_vision(arrays, image_shape=(50, 50, 3))
    even = load_big_vision(arrays, image_shape=(48, 48, 3))
    x = _images((2, 50, 50, 3))
    np.testing.assert_array_equal(forward(odd, x), forward(even, x[:, :48, :48]))


def test_num_classes_keeps_drops_or_replaces_the_head():
    arrays = random_vit_arrays(num_classes=5, rep_size=8)
    kept = load_big_vision(arrays)
    assert kept.num_classes == 5 and kept.rep_size == 8
    backbone = load_big_vision(arrays, num_classes=0)
    assert type(backbone) is SoViTBackbone
    x = _images()
    np.testing.assert_allclose(
        forward(backbone, x), forward(kept.backbone, x), rtol=1e-6, atol=1e-6
    )
    fresh = load_big_vision(arrays, num_classes=7)
    assert fresh.num_classes == 7 and fresh.rep_size == 8
    assert not np.any(_np(fresh.get_layer("head").kernel))
    np.testing.assert_array_equal(
        _np(fresh.get_layer("pre_logits").kernel), arrays["pre_logits/kernel"]
    )
    headless = random_vit_arrays()
    assert load_big_vision(headless, num_classes=2).num_classes == 2


def test_mixed_bfloat16_loading():
    arrays = random_vit_arrays(num_classes=3)
    full = load_big_vision(arrays)
    mixed = load_big_vision(arrays, dtype="mixed_bfloat16")
    assert mixed.dtype_policy.name == "mixed_bfloat16"
    assert mixed.backbone.get_layer("encoderblock_0").compute_dtype == (
        "bfloat16"
    )
    for a, b in zip(mixed.weights, full.weights):
        assert a.dtype == "float32"
        np.testing.assert_array_equal(_np(a), _np(b))
    x = _images()
    assert_relative_close(forward(mixed, x), forward(full, x), rtol=5e-2)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"Transformer/encoderblock_0/ls1/scale": np.ones(32)},
         "no place for"),
        ({"Transformer/encoderblock_3/LayerNorm_0/scale": np.ones(32)},
         "numbered"),
        ({"embedding/kernel": np.zeros((8, 4, 3, 32))}, "square patches"),
    ],
)  # fmt: skip
def test_unplaceable_weights_raise(change, message):
    arrays = dict(random_vit_arrays(), **change)
    with pytest.raises(ValueError, match=message):
        load_big_vision(arrays)


def test_bad_settings_raise():
    arrays = random_vit_arrays()
    with pytest.raises(ValueError, match="pool_type"):
        load_big_vision(arrays, pool_type="gap")
    with pytest.raises(ValueError, match="pool_type"):
        load_big_vision(random_vit_arrays(pool_type="gap"), pool_type="tok")
    missing = dict(arrays)
    del missing["MAPHead_0/LayerNorm_0/bias"]
    with pytest.raises(ValueError, match="lacks"):
        load_big_vision(missing)
    no_posemb = dict(random_vit_arrays(pool_type="gap"))
    del no_posemb["pos_embedding"]
    with pytest.raises(ValueError, match="image_shape"):
        load_big_vision(no_posemb)
    model = load_big_vision(no_posemb, image_shape=(32, 32, 3))
    assert model.posemb == "sincos2d"
    with pytest.raises(ValueError, match="image_shape"):
        load_big_vision(random_vit_arrays(grid=(3, 4)))
    with pytest.raises(ValueError, match="channels"):
        load_big_vision(arrays, image_shape=(32, 32, 1))
    with pytest.raises(ValueError, match="path_or_arrays"):
        load_big_vision("missing.npz")
    with pytest.raises(ValueError, match="model"):
        save_big_vision(keras.Sequential([keras.layers.Dense(2)]), "x.npz")
    with pytest.raises(ValueError, match="prefix"):
        save_big_vision(model, "x.npz", prefix="img")


def test_saving_exact_gelu_warns(tmp_path):
    model = SoViTBackbone(
        SHAPE, image_shape=(32, 32, 3), approximate_gelu=False
    )
    with pytest.warns(UserWarning, match="approximate_gelu=False"):
        path = save_big_vision(model, str(tmp_path / "erf.npz"))
    loaded = load_big_vision(path, approximate_gelu=False)
    x = _images()
    np.testing.assert_array_equal(forward(loaded, x), forward(model, x))


@pytest.mark.parametrize("pool_type", ["0", "none"])
def test_saving_a_pooling_the_file_cannot_record_warns(tmp_path, pool_type):
    model = SoViTBackbone(SHAPE, image_shape=(32, 32, 3), pool_type=pool_type)
    _randomize(model)
    with pytest.warns(UserWarning, match=f"pool_type='{pool_type}'"):
        path = save_big_vision(model, str(tmp_path / "p.npz"))
    # The file alone reads as "gap"; with the pool_type the warning names,
    # the outputs are identical again.
    assert load_big_vision(path).pool_type == "gap"
    loaded = load_big_vision(path, pool_type=pool_type)
    x = _images()
    np.testing.assert_array_equal(forward(loaded, x), forward(model, x))


def test_a_save_that_fails_half_way_leaves_no_file(tmp_path, monkeypatch):
    from keras_sovit.checkpoints import big_vision_format

    model = SoViTBackbone(SHAPE, image_shape=(32, 32, 3))
    path = tmp_path / "m.npz"
    path.write_bytes(b"the previous checkpoint")

    def failing_savez(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(big_vision_format.np, "savez", failing_savez)
    with pytest.raises(OSError, match="disk full"):
        save_big_vision(model, str(path))
    assert path.read_bytes() == b"the previous checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]
    monkeypatch.undo()
    save_big_vision(model, str(path))
    loaded = load_big_vision(str(path))
    np.testing.assert_array_equal(
        forward(loaded, _images()), forward(model, _images())
    )
