import inspect
import re

import numpy as np
import pytest

from keras_sovit.scaling.truths import suite as truths
from keras_sovit.scaling.truths.suite import GRID_ANCHOR
from keras_sovit.scaling.truths.suite import SOVIT_ANCHOR
from keras_sovit.scaling.truths.suite import SUITE
from keras_sovit.scaling.truths.suite import Observer
from keras_sovit.scaling.truths.suite import regret
from keras_sovit.shapes import ShapeSpec

TEMPLATE = GRID_ANCHOR[0]
OFF_MENU = [n for n, (_, role) in SUITE.items() if role != "in-menu"]


def test_truths_count_flops_and_weights_as_shapespec():
    law = truths.ASPECT_RATIO_LAW
    rng = np.random.default_rng(0)
    w = 16 * rng.integers(1, 200, 20)
    d = rng.integers(1, 80, 20)
    m = 16 * rng.integers(1, 800, 20)
    flops, params = law._counts(w.astype(float), d.astype(float),
                                m.astype(float))
    for i in range(20):
        shape = ShapeSpec(int(w[i]), int(d[i]), int(m[i]), 16, 14)
        assert flops[i] == pytest.approx(shape.gflops(224), rel=1e-12)
        assert params[i] == pytest.approx(shape.num_params(224), rel=1e-12)


def _brute_force(law, t, box):
    axes = [np.arange(lo, hi + 1, step) for lo, hi, step in box]
    grid = np.meshgrid(*axes, indexing="ij")
    values = law.loss_array(*grid, t, 14)
    index = np.unravel_index(np.argmin(values), values.shape)
    return tuple(int(g[index]) for g in grid)


@pytest.mark.parametrize("name", list(SUITE))
def test_true_optimum_is_the_lattice_optimum(name):
    """Exhaustive search of a box that holds the optimum in its interior."""
    law = SUITE[name][0]
    t = 2e9
    best = law.true_optimum(t, TEMPLATE, mlp_multiple=16)
    box = [
        (max(16, best.width - 160), best.width + 160, 16),
        (max(1, best.depth - 4), best.depth + 4, 1),
        (max(16, best.mlp_dim - 480), best.mlp_dim + 480, 16),
    ]
    brute = _brute_force(law, t, box)
    assert brute == (best.width, best.depth, best.mlp_dim)
    for value, (lo, hi, _) in zip(brute, box):
        assert lo < value < hi or value == lo == box[0][2]


@pytest.mark.parametrize("name", ["aspect-ratio", "mlp-ratio", "saturating",
                                  "broken-data", "kaplan"])
def test_optima_pass_near_the_paper_anchors(name):
    law = SUITE[name][0]
    for shape, t in (GRID_ANCHOR, SOVIT_ANCHOR):
        best = law.true_optimum(t, TEMPLATE, mlp_multiple=16)
        for dim in ("width", "depth", "mlp_dim"):
            ratio = getattr(best, dim) / getattr(shape, dim)
            assert 0.85 < ratio < 1.2, (name, dim, ratio)


def test_wide_shallow_law_is_far_from_the_paper():
    best = truths.WIDE_SHALLOW_LAW.true_optimum(
        SOVIT_ANCHOR[1], TEMPLATE, mlp_multiple=16
    )
    assert best.depth < 16 and best.width > 1500
    assert regret(truths.WIDE_SHALLOW_LAW, *SOVIT_ANCHOR) > 0.05


@pytest.mark.parametrize("name", OFF_MENU)
def test_far_shapes_are_clearly_worse(name):
    law = SUITE[name][0]
    t = SOVIT_ANCHOR[1]
    optimum = law.true_optimum(t, TEMPLATE, mlp_multiple=16)
    vit_b = ShapeSpec(768, 12, 3072, 16, 14)
    assert regret(law, vit_b, t, optimum) > 0.05
    assert regret(law, TEMPLATE, t, optimum) > 0.2
    assert 0.1 < law.loss(optimum, t) < 0.3


def _mixed_difference(law, pair, t):
    """Relative mixed second difference of the loss in two dimensions."""
    base = {"width": 608, "depth": 10, "mlp_dim": 928}

    def f(scale_a, scale_b):
        x = dict(base)
        x[pair[0]] *= scale_a
        x[pair[1]] *= scale_b
        return law.loss_array(x["width"], x["depth"], x["mlp_dim"], t, 14)

    return (f(2, 2) - f(2, 1) - f(1, 2) + f(1, 1)) / f(1, 1)


def test_off_menu_capacities_are_not_separable():
    """With unlimited compute the in-menu truths are sums of per-dimension
    terms (a zero mixed difference); every off-menu truth is not."""
    t = 1e40
    pairs = (("width", "depth"), ("width", "mlp_dim"))
    for name, (law, role) in SUITE.items():
        mixed = max(abs(_mixed_difference(law, p, t)) for p in pairs)
        if role == "in-menu":
            assert mixed < 1e-12, name
        else:
            assert mixed > 0.01, (name, mixed)


def test_observer_noise_uncooled_and_cost():
    law = truths.ASPECT_RATIO_LAW
    shape, t = SOVIT_ANCHOR
    exact = law.loss(shape, t)
    observe = Observer(law, noise=0.03, seed=0, uncooled=0.05)
    values = np.array([observe(shape, t, charge=0.0) for _ in range(400)])
    assert observe.spent == 0.0
    assert np.std(values / exact - 1) == pytest.approx(0.03, rel=0.15)
    assert np.mean(values) == pytest.approx(exact, rel=0.01)
    quiet = Observer(law, noise=0.0, uncooled=0.05)
    assert quiet(shape, t, cooled=False) == pytest.approx(1.05 * exact)
    assert quiet.spent == t
    with pytest.raises(ValueError, match="noise"):
        Observer(law, noise=-1.0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="beta"):
        truths.AspectRatioLaw(0.1, 0.1, 0.4, 0.2, -0.3, 0.3, 1.5, 0.0, 0.2,
                              2.4, 0.0)
    with pytest.raises(ValueError, match="patch_size"):
        truths.ASPECT_RATIO_LAW.loss(ShapeSpec(608, 10, 928, 16, 16), 1e9)


def test_docstring_examples_run():
    objects = [
        truths.AspectRatioLaw, truths.MLPRatioLaw, truths.SaturatingLaw,
        truths.BrokenDataLaw, truths.KaplanLaw, truths.Observer,
    ]
    for obj in objects:
        blocks = re.findall(r"```python\n(.*?)```", inspect.getdoc(obj), re.S)
        assert blocks, obj
        for block in blocks:
            exec(block, {})
