import json
import math
import warnings

import numpy as np
import pytest

from keras_sovit.scaling.paper.joint import JointLaw
from keras_sovit.scaling.paper.joint import on_search_bound
from keras_sovit.scaling.paper.joint import optimal_shape
from keras_sovit.scaling.paper.plan import PAPER_GRID_SWEEP
from keras_sovit.scaling.paper.plan import PAPER_STAR_CENTER
from keras_sovit.scaling.paper.plan import PAPER_STAR_GRIDS
from keras_sovit.scaling.paper.plan import Rounding
from keras_sovit.scaling.paper.plan import grid_sweep_plan
from keras_sovit.scaling.paper.plan import star_sweep_plan
from keras_sovit.scaling.truths.laws import PAPER_LIKE_LAW
from keras_sovit.scaling.truths.laws import DataLimitedLaw
from keras_sovit.scaling.truths.laws import simulate
from keras_sovit.shapes import ShapeSpec

DATA_LIMITED = DataLimitedLaw(
    alpha={"width": 30.0, "depth": 1.5, "mlp_dim": 20.0},
    a={"width": 0.6, "depth": 0.5, "mlp_dim": 0.5},
    B=400.0,
    c=0.35,
    eps=0.1,
)
TEMPLATE = ShapeSpec(608, 10, 928, 16, 14)
GRID_BUDGET = 600e6 * TEMPLATE.gflops(224)


def _plan():
    star = star_sweep_plan(
        PAPER_STAR_CENTER, PAPER_STAR_GRIDS, [64e6, 128e6, 256e6],
        budget_unit="examples",
    )
    grid = grid_sweep_plan(PAPER_GRID_SWEEP, GRID_BUDGET, TEMPLATE)
    return star + [(s, t * f) for s, t in grid for f in (0.25, 1.0)]


@pytest.fixture(scope="module")
def fitted():
    plan = _plan()
    return {
        name: JointLaw(n_starts=4).fit(simulate(truth, plan, noise=0.0))
        for name, truth in (
            ("paper", PAPER_LIKE_LAW), ("data_limited", DATA_LIMITED)
        )
    }


def _gflops(w, d, m, patch=14, image=224):
    """Independent forward GFLOPs with a MAP head (SPEC §3.2)."""
    n = (image // patch) ** 2
    macs = n * patch * patch * 3 * w
    macs = macs + d * (4 * n * w * w + 2 * n * w * m + 2 * n * n * w)
    macs = macs + 2 * n * w * w + 2 * w * w + 2 * n * w + 2 * w * m
    return 2.0 * macs / 1e9


def test_independent_gflops_matches_shapespec():
    for shape in (TEMPLATE, PAPER_STAR_CENTER, ShapeSpec(1152, 27, 4304, 16)):
        assert math.isclose(
            _gflops(shape.width, shape.depth, shape.mlp_dim, shape.patch_size),
            shape.gflops(224),
            rel_tol=1e-12,
        )


def test_chooser_picks_the_true_form(fitted):
    assert fitted["data_limited"].form_ == "data_limited"
    assert fitted["paper"].form_ == "decomposable"
    errors = fitted["data_limited"].holdout_error_
    assert errors["data_limited"] < 1e-6 < errors["decomposable"]
    errors = fitted["paper"].holdout_error_
    assert errors["decomposable"] < 1e-6 < errors["data_limited"]


def test_data_limited_parameters_recovered(fitted):
    params = fitted["data_limited"].params_
    for dim in ("width", "depth", "mlp_dim"):
        assert params["a"][dim] == pytest.approx(DATA_LIMITED.a[dim], 1e-4)
        assert params["alpha"][dim] == pytest.approx(
            DATA_LIMITED.alpha[dim], 1e-3
        )
    assert params["c"] == pytest.approx(0.35, 1e-4)
    assert params["B"] == pytest.approx(400.0, 1e-3)
    assert params["eps"] == pytest.approx(0.1, 1e-3)


def test_predict_extrapolates_noise_free(fitted):
    shapes = [ShapeSpec(1632, 38, 6976, 16, 14), ShapeSpec(800, 12, 2000, 16,
                                                            14)]
    computes = np.array([100 * GRID_BUDGET, 3 * GRID_BUDGET])
    for name, truth in (("paper", PAPER_LIKE_LAW),
                        ("data_limited", DATA_LIMITED)):
        pred = fitted[name].predict(shapes, computes)
        true = [truth.loss(s, t) for s, t in zip(shapes, computes)]
        np.testing.assert_allclose(pred, true, rtol=1e-3)
        single = fitted[name].predict(shapes[0], computes[0])
        assert isinstance(single, float)
        assert single == pytest.approx(true[0], rel=1e-3)


@pytest.mark.parametrize("name", ["paper", "data_limited"])
@pytest.mark.parametrize("factor", [10, 100])
def test_optimal_shape_near_zero_regret(fitted, name, factor):
    truth = {"paper": PAPER_LIKE_LAW, "data_limited": DATA_LIMITED}[name]
    target = factor * GRID_BUDGET
    best = truth.true_optimum(target, TEMPLATE)
    proposal = optimal_shape(fitted[name], target, template=TEMPLATE)
    regret = truth.loss(proposal, target) / truth.loss(best, target) - 1
    assert regret < 0.01
    assert proposal.width % 16 == 0 and proposal.mlp_dim % 16 == 0
    assert (proposal.num_heads, proposal.patch_size) == (16, 14)


def _manual_law(**params):
    template = ShapeSpec(64, 1, 16, 4, 16).to_dict()
    return JointLaw.from_dict({
        "form": "data_limited", "image_size": 224, "pool_type": "map",
        "form_": "data_limited", "template_": template,
        "params_": {
            "alpha": {"width": 3.0, "depth": 0.5, "mlp_dim": 3.0},
            "a": {"width": 0.5, "depth": 0.7, "mlp_dim": 0.5},
            "B": 20.0, "c": 0.5, "eps": 0.1, **params,
        },
    })


def test_optimal_shape_equals_brute_force_on_lattice():
    law = _manual_law()
    target = 1e6
    box = {"width": (256, 1024), "depth": (2, 24), "mlp_dim": (256, 4096)}
    proposal = optimal_shape(law, target, constraints=box)
    w, d, m = np.meshgrid(
        np.arange(256, 1025, 16.0), np.arange(2, 25.0),
        np.arange(256, 4097, 16.0), indexing="ij",
    )
    p = law.params_
    loss = (
        p["eps"] + 3.0 * w**-0.5 + 0.5 * d**-0.7 + 3.0 * m**-0.5
        + 20.0 * (target / _gflops(w, d, m, patch=16)) ** -0.5
    )
    i = np.unravel_index(np.argmin(loss), loss.shape)
    expected = (int(w[i]), int(d[i]), int(m[i]))
    assert 256 < expected[0] < 1024 and 2 < expected[1] < 24
    assert (proposal.width, proposal.depth, proposal.mlp_dim) == expected
    assert law.predict(proposal, target) == pytest.approx(loss[i], 1e-12)


def test_optimal_shape_constraints_and_rounding():
    law = _manual_law()
    free = optimal_shape(law, 1e6)
    limit = free.num_params() // 2
    capped = optimal_shape(law, 1e6, constraints={"max_params": limit})
    assert capped.num_params() <= limit
    assert law.predict(capped, 1e6) > law.predict(free, 1e6)
    shape = optimal_shape(
        law, 1e6, rounding=Rounding(head_dim=64, mlp_multiple=128)
    )
    assert shape.width % shape.num_heads == 0 and shape.mlp_dim % 128 == 0
    assert shape.num_heads == max(1, math.floor(shape.width / 64 + 0.5))
    with pytest.warns(RuntimeWarning, match="width"):
        edge = optimal_shape(law, 1e6, constraints={"width": (64, 128)})
    assert edge.width == 128


def test_to_dict_round_trip(fitted):
    law = fitted["paper"]
    state = json.loads(json.dumps(law.to_dict()))
    again = JointLaw.from_dict(state)
    shape = ShapeSpec(1008, 14, 1808, 16, 14)
    assert again.form_ == law.form_
    assert again.predict(shape, 1e11) == law.predict(shape, 1e11)
    assert again.get_params() == law.get_params()
    assert again.holdout_error_ == law.holdout_error_
    manual = _manual_law()
    assert JointLaw.from_dict(manual.to_dict()).predict(shape, 1e6) == (
        manual.predict(shape, 1e6)
    )
    with pytest.raises(ValueError, match="form_"):
        JointLaw.from_dict({"form": "auto"})


def test_fit_is_deterministic_and_refit_equal():
    plan = grid_sweep_plan(PAPER_GRID_SWEEP, GRID_BUDGET, TEMPLATE)
    plan = [(s, t * f) for s, t in plan for f in (0.25, 0.5, 1.0)]
    results = simulate(DATA_LIMITED, plan, noise=0.01, seed=3)
    law = JointLaw(form="data_limited", n_starts=2).fit(results)
    first = dict(law.params_)
    assert law.fit(results).params_ == first
    assert law.holdout_error_ == {}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(form="chinchilla"), "form"),
        (dict(pool_type="avg"), "pool_type"),
        (dict(n_starts=0), "n_starts"),
    ],
)
def test_fit_rejects_bad_params(kwargs, match):
    results = simulate(DATA_LIMITED, _plan()[:30], noise=0.0)
    with pytest.raises(ValueError, match=match):
        JointLaw(**kwargs).fit(results)


def test_fit_rejects_bad_data():
    plan = _plan()
    with pytest.raises(ValueError, match="usable rows"):
        JointLaw().fit(simulate(DATA_LIMITED, plan[:10], noise=0.0))
    rows = list(simulate(DATA_LIMITED, plan[:40], noise=0.0))
    rows[3] = dict(rows[3], metric_value=-0.2)
    with pytest.raises(ValueError, match="metric"):
        JointLaw().fit(rows)
    rows[3] = dict(rows[3], metric_value=0.2, metric_name="other")
    with pytest.raises(ValueError, match="metric_name"):
        JointLaw().fit(rows)


def test_unfitted_and_bad_calls():
    with pytest.raises(ValueError, match="not fitted"):
        JointLaw().predict(TEMPLATE, 1e9)
    law = _manual_law()
    with pytest.raises(ValueError, match="compute_gflops"):
        law.predict(TEMPLATE, -1.0)
    with pytest.raises(ValueError, match="shapes"):
        law.predict([(608, 10, 928)], 1e9)
    with pytest.raises(ValueError, match="target_compute"):
        optimal_shape(law, 0.0)
    with pytest.raises(ValueError, match="joint_law"):
        optimal_shape(PAPER_LIKE_LAW, 1e9)
    with pytest.raises(ValueError, match="height"):
        optimal_shape(law, 1e9, constraints={"height": (1, 2)})
    with pytest.raises(ValueError, match="depth"):
        optimal_shape(law, 1e9, constraints={"depth": (8, 2)})
    with pytest.raises(ValueError, match="No shape"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            optimal_shape(law, 1e9, constraints={"max_params": 10})


def test_on_search_bound_names_the_dims_at_the_default_bounds():
    assert on_search_bound(ShapeSpec(512, 12, 1024, 16, 16)) == []
    assert on_search_bound(
        ShapeSpec(16384, 256, 65536, 16, 4)
    ) == ["width", "depth", "mlp_dim"]
    assert on_search_bound(
        ShapeSpec(512, 12, 1024, 16, 16),
        constraints={"depth": (12, 64)},
    ) == ["depth"]
