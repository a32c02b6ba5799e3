import pytest

import keras_sovit
from keras_sovit import ShapeSpec
from keras_sovit.shapes import VARIANTS

SO400M = ShapeSpec.from_variant("So400m/14")


def _within(value, target, rel=0.005):
    return abs(value - target) <= rel * target


@pytest.mark.parametrize(
    "image_size, paper_gflops, strict",
    [(224, 221, True), (384, 672, False), (518, 1374, False)]
    + [(384, 672, None), (518, 1374, None)],
)
def test_so400m_table1_gflops(image_size, paper_gflops, strict):
    # Table 1 of the paper: fine-tuned on ImageNet (1000 classes).
    kwargs = {} if strict is None else {"strict": strict}
    for num_classes in (0, 1000):
        gflops = SO400M.gflops(image_size, num_classes=num_classes, **kwargs)
        assert _within(gflops, paper_gflops), (num_classes, gflops)


@pytest.mark.parametrize(
    "variant, image_size, paper_gflops",
    [("L/16", 384, 383), ("g/14", 518, 3208), ("G/14", 518, 5668)],
)
def test_table1_gflops_other_models(variant, image_size, paper_gflops):
    shape = ShapeSpec.from_variant(variant)
    gflops = shape.gflops(image_size, strict=False)
    assert _within(gflops, paper_gflops), gflops


def test_so400m_params():
    assert SO400M.num_params(224) == 427_680_704
    assert _within(SO400M.num_params(224), 428e6, rel=0.005)
    assert (SO400M.width, SO400M.depth, SO400M.mlp_dim) == (1152, 27, 4304)


def test_gflops_counts_attention_and_heads_by_hand():
    # width 64, depth 2, mlp 128, patch 4, 32 px: 64 tokens.
    shape = ShapeSpec(64, 2, 128, 4, 4)
    n, d, m = 64, 64, 128
    stem = n * 4 * 4 * 3 * d
    block = 4 * n * d * d + 2 * n * d * m + 2 * n * n * d
    map_head = 2 * n * d * d + 2 * d * d + 2 * n * d + 2 * d * m
    expected = 2 * (stem + 2 * block + map_head + d * 10) / 1e9
    assert shape.gflops(32, num_classes=10) == pytest.approx(expected)
    gap = 2 * (stem + 2 * block) / 1e9
    assert shape.gflops(32, pool_type="gap") == pytest.approx(gap)


def test_num_params_by_hand():
    shape = ShapeSpec(64, 2, 128, 4, 4)
    d, m = 64, 128
    block = 4 * d + 4 * (d * d + d) + 2 * d * m + m + d
    stem = 4 * 4 * 3 * d + d
    base = stem + 2 * block + 2 * d
    assert shape.num_params(32, pool_type="gap") == base + 64 * d
    assert shape.num_params(32, pool_type="gap", posemb="sincos2d") == base
    assert shape.num_params(32, pool_type="tok") == base + 64 * d + d
    assert shape.num_params(32, pool_type="map") == (
        base + 64 * d + d + block - 2 * d
    )
    assert shape.num_params(
        32, pool_type="gap", num_classes=10, rep_size=16
    ) == (base + 64 * d + d * 16 + 16 + 16 * 10 + 10)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_variant_parses(name):
    shape = ShapeSpec.from_variant(f"{name}/14")
    width, depth, mlp_dim, num_heads = VARIANTS[name]
    assert shape.to_dict() == {
        "width": width,
        "depth": depth,
        "mlp_dim": mlp_dim,
        "num_heads": num_heads,
        "patch_size": 14,
    }
    assert keras_sovit.VARIANTS is VARIANTS


def test_variant_table_entries():
    assert VARIANTS["So150m"] == (880, 18, 2320, 16)
    assert VARIANTS["B"] == (768, 12, 3072, 12)
    assert set(VARIANTS) >= {
        "mu", "Ti", "S", "M", "B", "L", "So400m", "H", "g", "g-opt", "G",
        "G-opt", "e", "So150m",
    }  # fmt: skip


def test_round_trips_and_immutability():
    shape = ShapeSpec(64, 2, 128, 4, 4)
    assert ShapeSpec.from_dict(shape.to_dict()) == shape
    assert hash(shape) == hash(ShapeSpec(64, 2, 128, 4, 4))
    assert shape.replace(depth=3).depth == 3
    assert shape.head_dim == 16
    with pytest.raises(Exception):
        shape.width = 3


@pytest.mark.parametrize("field", ["width", "depth", "mlp_dim", "num_heads",
                                   "patch_size"])  # fmt: skip
@pytest.mark.parametrize("bad", [0, -4, 2.5, 4.0, True, "8", None])
def test_bad_dimensions(field, bad):
    values = {"width": 64, "depth": 2, "mlp_dim": 128, "num_heads": 4,
              "patch_size": 4}  # fmt: skip
    values[field] = bad
    with pytest.raises(ValueError, match=field):
        ShapeSpec(**values)


def test_width_not_divisible_by_heads():
    with pytest.raises(ValueError, match="num_heads"):
        ShapeSpec(64, 2, 128, 6, 4)


@pytest.mark.parametrize("image_size", [30, (32, 30), 2])
def test_image_not_divisible_by_patch_strict(image_size):
    # Since issue 12 non-multiples are counted by default (VALID patchify,
    # leftover pixels dropped); strict=True keeps the old refusal.
    shape = ShapeSpec(64, 2, 128, 4, 4)
    for method in (shape.num_patches, shape.num_params, shape.gflops):
        with pytest.raises(ValueError, match="image_size"):
            method(image_size, strict=True)


@pytest.mark.parametrize("image_size", [2, (32, 3), (3, 32)])
def test_image_smaller_than_a_patch(image_size):
    shape = ShapeSpec(64, 2, 128, 4, 4)
    for method in (shape.num_patches, shape.num_params, shape.gflops):
        with pytest.raises(ValueError, match="image_size"):
            method(image_size)


def test_non_strict_drops_leftover_pixels():
    assert SO400M.num_patches(384, strict=False) == 27 * 27
    assert SO400M.num_patches(384) == 27 * 27
    assert SO400M.num_patches(518) == 37 * 37
    shape = ShapeSpec(64, 2, 128, 4, 4)
    assert shape.num_patches((30, 33)) == 7 * 8
    # Dropped pixels cost nothing: 30 x 33 px counts as 28 x 32 px.
    for method in (shape.num_params, shape.gflops):
        assert method((30, 33)) == method((28, 32))
    assert SO400M.gflops(384) == SO400M.gflops(378)


@pytest.mark.parametrize(
    "image_size", [0, -32, 32.0, True, (32,), (32, 32, 3), "32"]
)
def test_bad_image_size(image_size):
    with pytest.raises(ValueError, match="image_size"):
        ShapeSpec(64, 2, 128, 4, 4).num_patches(image_size)


@pytest.mark.parametrize(
    "variant", ["Q/16", "So400m", "So400m/", "So400m/x", "/14", "s/16", 14]
)
def test_unknown_variant(variant):
    with pytest.raises(ValueError, match="variant"):
        ShapeSpec.from_variant(variant)


def test_sincos2d_needs_width_divisible_by_4():
    shape = ShapeSpec(18, 1, 8, 3, 4)
    with pytest.raises(ValueError, match="width"):
        shape.num_params(32, posemb="sincos2d")
    assert shape.num_params(32, posemb="learn") > 0


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"pool_type": "avg"}, "pool_type"),
        ({"posemb": "rope"}, "posemb"),
        ({"num_classes": -1}, "num_classes"),
        ({"num_classes": 1.5}, "num_classes"),
        ({"channels": 0}, "channels"),
        ({"rep_size": -2}, "rep_size"),
    ],
)
def test_bad_count_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ShapeSpec(64, 2, 128, 4, 4).num_params(32, **kwargs)


def test_missing_dict_fields():
    with pytest.raises(ValueError, match="values"):
        ShapeSpec.from_dict({"width": 64})
