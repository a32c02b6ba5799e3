import math

import numpy as np
import pytest

from keras_sovit.scaling.paper.plan import PAPER_EXPONENTS
from keras_sovit.scaling.paper.plan import PAPER_GRID_OPTIMUM
from keras_sovit.scaling.paper.plan import PAPER_GRID_SWEEP
from keras_sovit.scaling.paper.plan import PAPER_STAR_CENTER
from keras_sovit.scaling.paper.plan import PAPER_STAR_GRIDS
from keras_sovit.scaling.paper.plan import GridBoundaryError
from keras_sovit.scaling.paper.plan import Rounding
from keras_sovit.scaling.paper.plan import grid_sweep_plan
from keras_sovit.scaling.paper.plan import scale_shape
from keras_sovit.scaling.paper.plan import select_grid_optimum
from keras_sovit.scaling.paper.plan import star_sweep_plan
from keras_sovit.shapes import ShapeSpec


def test_paper_constants():
    assert PAPER_STAR_CENTER.to_dict() == dict(
        width=1968, depth=40, mlp_dim=6144, num_heads=16, patch_size=14
    )
    assert [len(v) for v in PAPER_STAR_GRIDS.values()] == [6, 6, 6]
    assert [len(v) for v in PAPER_GRID_SWEEP.values()] == [4, 4, 4]
    assert PAPER_GRID_OPTIMUM == (608, 10, 928)
    for dim, values in PAPER_GRID_SWEEP.items():
        i = list(PAPER_GRID_SWEEP).index(dim)
        # The paper's x^(0) is interior to its grid.
        assert values[0] < PAPER_GRID_OPTIMUM[i] < values[-1]


def test_star_sweep_plan_paper():
    examples = [64e6, 128e6, 256e6]
    plan = star_sweep_plan(
        PAPER_STAR_CENTER, PAPER_STAR_GRIDS, examples, budget_unit="examples"
    )
    # 54 swept runs + the held-out centre at each of the 3 budgets.
    assert len(plan) == 57
    centre_runs = [c for s, c in plan if s == PAPER_STAR_CENTER]
    assert len(centre_runs) == 3
    for shape, compute in plan:
        changed = [
            d for d in ("width", "depth", "mlp_dim")
            if getattr(shape, d) != getattr(PAPER_STAR_CENTER, d)
        ]
        assert len(changed) <= 1
        assert shape.num_heads == 16 and shape.patch_size == 14
        ratio = compute / shape.gflops(224)
        assert min(abs(ratio - e) / e for e in examples) < 1e-9
    widths = sorted({s.width for s, _ in plan if s.width != 1968})
    assert widths == list(PAPER_STAR_GRIDS["width"])


def test_star_sweep_plan_gflops_budgets():
    center = ShapeSpec(64, 4, 256, 4, 4)
    plan = star_sweep_plan(center, {"depth": [1, 2]}, [10.0, 20.0])
    assert plan == [
        (center.replace(depth=1), 10.0),
        (center.replace(depth=1), 20.0),
        (center.replace(depth=2), 10.0),
        (center.replace(depth=2), 20.0),
        (center, 10.0),
        (center, 20.0),
    ]


@pytest.mark.parametrize(
    "grids, budgets, match",
    [
        ({"width": [32, 64]}, [1.0], "width.*64"),
        ({"depth": [5]}, [1.0], "depth.*5"),
        ({"width": [30]}, [1.0], "num_heads"),
        ({"height": [3]}, [1.0], "height"),
        ({"width": [32]}, [0.0], "budgets"),
        ({"width": [32]}, [], "budgets"),
        ({"width": [-32]}, [1.0], "-32"),
    ],
)
def test_star_sweep_plan_rejects(grids, budgets, match):
    center = ShapeSpec(64, 4, 256, 4, 4)
    with pytest.raises(ValueError, match=match):
        star_sweep_plan(center, grids, budgets)


def test_grid_sweep_plan():
    template = ShapeSpec(608, 10, 928, 16, 14)
    plan = grid_sweep_plan(
        PAPER_GRID_SWEEP, 600e6, template, budget_unit="examples"
    )
    assert len(plan) == 64
    assert len({s for s, _ in plan}) == 64
    for shape, compute in plan:
        assert math.isclose(compute, 600e6 * shape.gflops(224))
    plan = grid_sweep_plan({"width": [32, 48]}, 5.0, ShapeSpec(64, 2, 64, 4, 4))
    assert plan == [
        (ShapeSpec(32, 2, 64, 4, 4), 5.0),
        (ShapeSpec(48, 2, 64, 4, 4), 5.0),
    ]
    with pytest.raises(ValueError, match="budget"):
        grid_sweep_plan({"width": [32]}, -1.0, template)
    with pytest.raises(ValueError, match="template"):
        grid_sweep_plan({"width": [32]}, 1.0, (32, 2, 64))
    with pytest.raises(ValueError, match="budget_unit"):
        grid_sweep_plan({"width": [32]}, 1.0, template, budget_unit="steps")


def _grid_rows(loss, widths=(32, 48, 64), depths=(2, 3, 4),
               computes=(1e2, 2e2, 4e2, 8e2)):
    rows = []
    for w in widths:
        for d in depths:
            shape = ShapeSpec(w, d, 128, 4, 4)
            for t in computes:
                rows.append({
                    **shape.to_dict(), "compute_gflops": t,
                    "examples_seen": None, "metric_name": "err",
                    "metric_value": loss(w, d, t),
                })
    return rows


def test_select_grid_optimum_least_compute():
    # Small compute favours width 32; from t=400 on width 48 wins.
    def loss(w, d, t):
        best_w = 32 if t < 300 else 48
        return 1.0 + abs(w - best_w) / 100 + abs(d - 3) / 50 + 1 / t

    x0, t0 = select_grid_optimum(_grid_rows(loss))
    assert (x0.width, x0.depth, x0.mlp_dim) == (48, 3, 128)
    assert t0 == pytest.approx(400.0)


def test_select_grid_optimum_optimal_throughout():
    def loss(w, d, t):
        return 1.0 + abs(w - 48) / 100 + abs(d - 3) / 50 + 1 / t

    x0, t0 = select_grid_optimum(_grid_rows(loss))
    assert (x0.width, x0.depth) == (48, 3)
    assert t0 == pytest.approx(100.0)


def test_select_grid_optimum_interpolates_unaligned_checkpoints():
    rows = _grid_rows(lambda w, d, t: 1 + abs(w - 48) / 100 + abs(d - 3) / 50)
    for r in rows:  # shift each shape's checkpoints slightly
        if r["width"] == 48 and r["depth"] == 3:
            r["compute_gflops"] *= 1.3
    x0, t0 = select_grid_optimum(rows)
    assert (x0.width, x0.depth) == (48, 3)
    # Levels outside the common range [130, 800] are ignored.
    assert t0 == pytest.approx(130.0)


def test_select_grid_optimum_ignores_levels_one_shape_reaches():
    # A long-trained bad shape would win alone at t=3200; it must not.
    rows = _grid_rows(lambda w, d, t: 1 + abs(w - 48) / 100 + abs(d - 3) / 50)
    rows.append({**ShapeSpec(64, 4, 128, 4, 4).to_dict(),
                 "compute_gflops": 3200.0, "metric_name": "err",
                 "metric_value": 0.5})
    x0, t0 = select_grid_optimum(rows)
    assert (x0.width, x0.depth, t0) == (48, 3, 100.0)
    rows = _grid_rows(lambda w, d, t: 1.0, computes=(1.0, 2.0))
    rows += _grid_rows(lambda w, d, t: 1.0, widths=(80,),
                       computes=(10.0, 20.0))
    with pytest.raises(ValueError, match="share no compute range"):
        select_grid_optimum(rows)


@pytest.mark.parametrize(
    "best, match",
    [
        ((64, 3), "extend the `width` grid upward"),
        ((32, 3), "extend the `width` grid downward"),
        ((48, 4), "extend the `depth` grid upward"),
    ],
)
def test_select_grid_optimum_boundary(best, match):
    def loss(w, d, t):
        return 1.0 + abs(w - best[0]) / 100 + abs(d - best[1]) / 50 + 1 / t

    with pytest.raises(GridBoundaryError, match=match) as info:
        select_grid_optimum(_grid_rows(loss))
    assert info.value.dim == match.split("`")[1]
    assert info.value.direction == match.split()[-1]
    assert info.value.extend == {info.value.dim: info.value.direction}


def test_select_grid_optimum_corner_names_every_dimension():
    def loss(w, d, t):
        return 1.0 + abs(w - 64) / 100 + abs(d - 2) / 50

    with pytest.raises(GridBoundaryError) as info:
        select_grid_optimum(_grid_rows(loss))
    assert info.value.extend == {"width": "upward", "depth": "downward"}
    assert "`width` grid upward" in str(info.value)
    assert "`depth` grid downward" in str(info.value)


def test_select_grid_optimum_two_value_dim_not_checked():
    def loss(w, d, t):
        return 1.0 + abs(w - 48) / 100 + abs(d - 2) / 50

    x0, _ = select_grid_optimum(_grid_rows(loss, depths=(2, 3)))
    assert (x0.width, x0.depth) == (48, 2)


def test_select_grid_optimum_bad_inputs():
    with pytest.raises(ValueError, match="no rows"):
        select_grid_optimum([])
    rows = _grid_rows(lambda w, d, t: 1.0)
    rows[0]["compute_gflops"] = -1.0
    with pytest.raises(ValueError, match="compute_gflops"):
        select_grid_optimum(rows)
    rows = _grid_rows(lambda w, d, t: 1.0)
    rows[0]["metric_name"] = "other"
    with pytest.raises(ValueError, match="metric_name"):
        select_grid_optimum(rows)


def test_scale_shape_paper_ten_x():
    base = ShapeSpec.from_variant("So400m/14")
    exact = {
        d: getattr(base, d) * 10 ** (s / 3) for d, s in PAPER_EXPONENTS.items()
    }
    # Unrounded growth per dimension: MLP fastest, then depth, then width.
    growth = {d: exact[d] / getattr(base, d) for d in exact}
    assert growth["mlp_dim"] > growth["depth"] > growth["width"] > 1
    big = scale_shape(base, 2e9, 2e10, PAPER_EXPONENTS)
    ratio = big.num_params() / base.num_params()
    assert 2.35 <= ratio <= 2.5  # the paper says ≈2.5×
    assert abs(big.width - exact["width"]) <= 8
    assert abs(big.depth - exact["depth"]) <= 0.5
    assert abs(big.mlp_dim - exact["mlp_dim"]) <= 8
    assert big.num_heads == 16 and big.patch_size == 14
    assert big.width % 16 == 0 and big.mlp_dim % 16 == 0


def test_scale_shape_weights_and_identity():
    base = ShapeSpec(608, 10, 928, 16, 14)
    assert scale_shape(base, 5.0, 5.0, PAPER_EXPONENTS) == base
    weights = {"width": 0.5, "depth": 0.25, "mlp_dim": 0.25}
    big = scale_shape(base, 1.0, 100.0, PAPER_EXPONENTS, weights=weights)
    assert big.depth == round(10 * 100 ** (0.45 * 0.25))
    assert abs(big.width - 608 * 100 ** (0.22 * 0.5)) <= 8
    # A single dimension uses w = 1: depth grows by τ^s exactly.
    deep = scale_shape(base, 1.0, 16.0, {"depth": 0.5})
    assert deep.replace(depth=10) == base and deep.depth == 40


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(base_compute=0.0), "base_compute"),
        (dict(target_compute=float("nan")), "target_compute"),
        (dict(exponents={"height": 0.1}), "height"),
        (dict(exponents={}), "exponents"),
        (dict(weights={"width": 1.0}), "weights"),
        (dict(weights={"width": 0.5, "depth": 0.5, "mlp_dim": 0.5}), "sum"),
        (dict(rounding="16"), "rounding"),
    ],
)
def test_scale_shape_rejects(kwargs, match):
    args = dict(
        base_shape=ShapeSpec(608, 10, 928, 16, 14), base_compute=1.0,
        target_compute=10.0, exponents=PAPER_EXPONENTS,
    )
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        scale_shape(**args)


def test_rounding_invariants():
    rng = np.random.default_rng(0)
    for rounding in (
        Rounding(),
        Rounding(num_heads=12),
        Rounding(head_dim=64),
        Rounding(width_multiple=128, mlp_multiple=256, depth_multiple=2),
    ):
        for _ in range(50):
            w, d, m = rng.uniform(40, 3000), rng.uniform(1, 60), rng.uniform(
                40, 9000
            )
            shape = rounding.snap(w, d, m, patch_size=14, default_heads=8)
            assert shape.width % shape.num_heads == 0
            assert shape.width % rounding.width_multiple == 0
            assert shape.mlp_dim % rounding.mlp_multiple == 0
            assert shape.depth % rounding.depth_multiple == 0
            step = math.lcm(rounding.width_multiple, shape.num_heads)
            assert abs(shape.width - w) <= step / 2 or shape.width == step
            if rounding.num_heads:
                assert shape.num_heads == rounding.num_heads
            elif rounding.head_dim:
                assert shape.num_heads == max(1, math.floor(w / 64 + 0.5))
            else:
                assert shape.num_heads == 8


def test_rounding_examples():
    assert Rounding(head_dim=64).snap(1000.0, 20.4, 3000.0, 14) == ShapeSpec(
        1008, 20, 3008, 16, 14
    )
    # 12 heads: width a multiple of lcm(16, 12) = 48.
    assert Rounding(num_heads=12).snap(1000.0, 3.0, 100.0).width == 1008
    assert Rounding(head_dim=64).snap(10.0, 1.0, 3.0).to_dict() == dict(
        width=16, depth=1, mlp_dim=16, num_heads=1, patch_size=16
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(width_multiple=0), "width_multiple"),
        (dict(mlp_multiple=2.5), "mlp_multiple"),
        (dict(num_heads=12, head_dim=64), "at most one"),
        (dict(head_dim=-1), "head_dim"),
    ],
)
def test_rounding_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Rounding(**kwargs)


def test_rounding_needs_heads():
    with pytest.raises(ValueError, match="default_heads"):
        Rounding().snap(100.0, 2.0, 100.0)
    with pytest.raises(ValueError, match="width"):
        Rounding(num_heads=2).snap(-100.0, 2.0, 100.0)


@pytest.mark.parametrize("value", [-0.2, 0.0, float("inf"), float("nan")])
def test_scale_shape_and_the_oracle_share_one_exponent_rule(value):
    # s = c / (a + b) with positive parameters: a scaling exponent is
    # positive and finite, for the planner as for the oracle's settings.
    import keras_sovit
    from keras_sovit.tuner.config import SearchConfig

    exponents = {"width": 0.22, "depth": value, "mlp_dim": 0.6}
    shape = keras_sovit.ShapeSpec(64, 4, 256, 4, patch_size=4)
    with pytest.raises(ValueError, match="exponents"):
        keras_sovit.scaling.scale_shape(shape, 1e9, 1e10, exponents)
    with pytest.raises(ValueError, match="exponents"):
        SearchConfig.create(
            objective="val_loss", target_compute=1e10, image_size=32,
            exponents=exponents, base_shape=shape, base_compute=1e9,
        )
