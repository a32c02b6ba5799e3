import numpy as np
import pytest

from keras_sovit.scaling.paper.plan import PAPER_STAR_CENTER
from keras_sovit.scaling.truths.laws import EQ2_STAR_TRUTH
from keras_sovit.scaling.truths.laws import PAPER_LIKE_LAW
from keras_sovit.scaling.truths.laws import DataLimitedLaw
from keras_sovit.scaling.truths.laws import DecomposableLaw
from keras_sovit.scaling.truths.laws import eq2_loss
from keras_sovit.scaling.truths.laws import gflops_array
from keras_sovit.scaling.truths.laws import simulate
from keras_sovit.scaling.truths.laws import simulate_star
from keras_sovit.shapes import ShapeSpec

CENTER = PAPER_STAR_CENTER


def _small_law():
    return DecomposableLaw(
        alpha={"width": 2.0, "depth": 1.0, "mlp_dim": 3.0},
        a={"width": 0.5, "depth": 0.4, "mlp_dim": 0.3},
        beta={"width": 0.1, "depth": 0.2, "mlp_dim": 0.05},
        b={"width": 1.0, "depth": 0.8, "mlp_dim": 0.7},
        xi=1.5,
        eps=0.05,
        c=0.6,
    )


def test_gflops_array_matches_shapespec():
    shapes = [ShapeSpec(608, 10, 928, 16, 14), ShapeSpec(64, 2, 96, 4, 4)]
    for shape, size in zip(shapes, (224, 32)):
        got = gflops_array(
            shape.width, shape.depth, shape.mlp_dim, shape.patch_size, size
        )
        assert got == pytest.approx(shape.gflops(size), rel=1e-12)


def test_decomposable_loss_is_eq3():
    law = _small_law()
    shape = ShapeSpec(64, 4, 128, 4, 4)
    t = 1e4
    x = {"width": 64, "depth": 4, "mlp_dim": 128}
    expected = sum(law.alpha[d] * x[d] ** -law.a[d] for d in x)
    expected += (sum(law.beta[d] * x[d] ** law.b[d] for d in x) + 1.5) * (
        t**-0.6
    )
    expected += 0.05
    assert law.loss(shape, t) == pytest.approx(expected, rel=1e-12)


def test_star_params_reproduce_the_star_sweep():
    law = _small_law()
    center = ShapeSpec(256, 12, 512, 4, 4)
    star = law.star_params(center)
    for dim, values in (("depth", [2, 4, 8]), ("mlp_dim", [64, 128])):
        for value in values:
            for t in (1e3, 1e5):
                shape = center.replace(**{dim: value})
                assert eq2_loss(star[dim], value, t) == pytest.approx(
                    law.loss(shape, t), rel=1e-12
                )
        assert star[dim]["s"] == pytest.approx(
            0.6 / (law.a[dim] + law.b[dim])
        )


def test_paper_like_law_exponents_and_levels():
    s = PAPER_LIKE_LAW.star_exponents()
    assert s == pytest.approx({"width": 0.22, "depth": 0.45, "mlp_dim": 0.6})
    assert PAPER_LIKE_LAW.c == 0.65
    for t in (5e10, 2e11):
        for dim, value in (("width", 608), ("mlp_dim", 3072)):
            y = PAPER_LIKE_LAW.loss(CENTER.replace(**{dim: value}), t)
            assert 0.1 < y < 0.6


def test_true_optimum_beats_neighbours_and_follows_eq4():
    law = PAPER_LIKE_LAW
    t = 1e11
    best = law.true_optimum(t, CENTER)
    assert best.width % 16 == 0 and best.num_heads == 16
    f_best = law.loss(best, t)
    for dim, step in (("width", 16), ("depth", 1), ("mlp_dim", 1)):
        for sign in (-1, 1):
            value = getattr(best, dim) + sign * step
            assert law.loss(best.replace(**{dim: value}), t) >= f_best
    # Decomposable truth: each coordinate solves its own Eq. (4) with the
    # sum of the other compute terms irrelevant to its stationarity.
    for dim in ("depth", "mlp_dim"):
        a, b = law.a[dim], law.b[dim]
        x_star = (law.alpha[dim] * a * t**law.c / (law.beta[dim] * b)) ** (
            1 / (a + b)
        )
        assert getattr(best, dim) == pytest.approx(x_star, rel=0.05)


def test_true_optimum_respects_bounds():
    best = PAPER_LIKE_LAW.true_optimum(
        1e13, CENTER, bounds={"depth": (4, 32)}, mlp_multiple=64
    )
    assert best.depth == 32 and best.mlp_dim % 64 == 0
    with pytest.raises(ValueError, match="bounds"):
        PAPER_LIKE_LAW.true_optimum(1e11, CENTER, bounds={"depth": (5, 2)})
    with pytest.raises(ValueError, match="target_compute"):
        PAPER_LIKE_LAW.true_optimum(-1.0, CENTER)


def test_data_limited_law_uses_examples_seen():
    law = DataLimitedLaw(
        alpha={"width": 30.0, "depth": 1.5, "mlp_dim": 20.0},
        a={"width": 0.6, "depth": 0.5, "mlp_dim": 0.5},
        B=400.0,
        c=0.35,
        eps=0.1,
    )
    shape = ShapeSpec(768, 12, 3072, 12, 16)
    t = 1e10
    examples = t / shape.gflops(224)
    expected = 30 * 768**-0.6 + 1.5 * 12**-0.5 + 20 * 3072**-0.5
    expected += 400 * examples**-0.35 + 0.1
    assert law.loss(shape, t) == pytest.approx(expected, rel=1e-12)
    best = law.true_optimum(t, shape)
    assert law.loss(best, t) <= law.loss(shape, t)


def test_simulate_noise_and_reproducibility():
    plan = [(CENTER.replace(depth=d), 1e11) for d in (8, 12, 16, 24)]
    exact = simulate(PAPER_LIKE_LAW, plan, noise=0.0)
    for row, (shape, t) in zip(exact, plan):
        assert row["metric_value"] == PAPER_LIKE_LAW.loss(shape, t)
        assert row["examples_seen"] == pytest.approx(t / shape.gflops(224))
    noisy = simulate(PAPER_LIKE_LAW, plan, noise=0.01, seed=3, phase="star")
    again = simulate(PAPER_LIKE_LAW, plan, noise=0.01, seed=3, phase="star")
    assert list(noisy) == list(again)
    z = np.random.default_rng(3).standard_normal(len(plan))
    for row, clean, zi in zip(noisy, exact, z):
        assert row["metric_value"] == pytest.approx(
            clean["metric_value"] * (1 + 0.01 * zi), rel=1e-12
        )
        assert row["phase"] == "star"
    with pytest.raises(ValueError, match="noise"):
        simulate(PAPER_LIKE_LAW, plan, noise=-0.1)


def test_simulate_star_layout():
    results = simulate_star(noise=0.0)
    assert len(results) == 54
    rows = results.filter(width=608)
    assert len(rows) == 3
    for row in rows:
        assert row["depth"] == 40 and row["mlp_dim"] == 6144
        assert row["metric_value"] == pytest.approx(
            eq2_loss(EQ2_STAR_TRUTH["width"], 608, row["compute_gflops"])
        )


def test_bad_law_arguments():
    with pytest.raises(ValueError, match="alpha"):
        DecomposableLaw({"width": 1.0}, {}, {}, {}, 1.0, 0.1, 0.6)
    with pytest.raises(ValueError, match="c"):
        DataLimitedLaw(
            {"width": 1.0, "depth": 1.0, "mlp_dim": 1.0},
            {"width": 1.0, "depth": 1.0, "mlp_dim": 1.0},
            B=1.0, c=-1.0, eps=0.1,
        )


def test_docstring_examples_run():
    import inspect
    import re

    import keras_sovit
    from keras_sovit import scaling

    objects = [
        scaling.SweepResults, scaling.ShapeLaw, scaling.StarSweepFit,
        scaling.fit_star_sweep, scaling.DecomposableLaw,
        scaling.DataLimitedLaw, scaling.simulate, scaling.simulate_star,
    ]
    for obj in objects:
        blocks = re.findall(r"```python\n(.*?)```", inspect.getdoc(obj), re.S)
        assert blocks, obj
        for block in blocks:
            exec(block.replace("/tmp/", _tmp_prefix()), {
                "keras_sovit": keras_sovit})


def _tmp_prefix():
    import tempfile

    return tempfile.mkdtemp() + "/"
