"""Sweep planners, the grid-optimum rule and the paper's joint scaling.

Everything here is plain data in, plain data out: plans are lists of
`(ShapeSpec, compute_gflops)` pairs that any trainer can run, and results
come back as `SweepResults` rows.
"""

import math
import numbers

import numpy as np

from keras_sovit._validation import check_dim_dict
from keras_sovit._validation import check_grids
from keras_sovit._validation import check_positive_number
from keras_sovit.shapes import SCALED_DIMS
from keras_sovit.shapes import Rounding  # noqa: F401 (public here too)
from keras_sovit.shapes import ShapeSpec
from keras_sovit.shapes import check_rounding
from keras_sovit.shapes import check_shape_spec

# App. B.2: the star centre x^(c) (patch 14, 16 heads in all sweeps).
PAPER_STAR_CENTER = ShapeSpec(1968, 40, 6144, 16, 14)

# App. B.2: the star-sweep grids, each swept with the others at the centre.
PAPER_STAR_GRIDS = {
    "width": (608, 768, 928, 1088, 1328, 1648),
    "depth": (8, 10, 12, 16, 20, 24),
    "mlp_dim": (1088, 1360, 1728, 2160, 2592, 3072),
}

# App. B.3: the small grid sweep that locates x^(0).
PAPER_GRID_SWEEP = {
    "width": (416, 512, 608, 768),
    "depth": (6, 8, 10, 12),
    "mlp_dim": (768, 928, 1088, 1360),
}

# §3: x^(0) found by the grid sweep for ImageNet few-shot.
PAPER_GRID_OPTIMUM = (608, 10, 928)
# Its compute, GFLOPs (the grid sweep's budget).
PAPER_GRID_GFLOPS = 9.3e9

# Table/Fig. 5: exponents s_k for INet 10-shot error.
PAPER_EXPONENTS = {"width": 0.22, "depth": 0.45, "mlp_dim": 0.6}

# The paper's procedure as the IsoFLOP search's prior: its grid optimum,
# that optimum's compute and the path exponents s_k / 3 of its published
# rule (`keras_sovit.tuner.defaults.paper_prior` moves it to a target).
PAPER_PRIOR = (
    PAPER_GRID_OPTIMUM,
    PAPER_GRID_GFLOPS,
    tuple(PAPER_EXPONENTS[d] / len(SCALED_DIMS) for d in SCALED_DIMS),
)


def _check_grids(grids, name="grids"):
    return check_grids(name, grids, SCALED_DIMS)


def _check_budgets(budgets):
    if isinstance(budgets, numbers.Real):
        budgets = [budgets]
    budgets = list(budgets)
    if not budgets:
        raise ValueError(
            f"`budgets` must be a non-empty list. Received: budgets={budgets}"
        )
    return [check_positive_number("budgets", b) for b in budgets]


def _check_heads(shape_fields, name):
    """Builds a ShapeSpec, turning a head mismatch into a clear error."""
    width, heads = shape_fields["width"], shape_fields["num_heads"]
    if width % heads:
        raise ValueError(
            f"`{name}` width {width} is not divisible by num_heads={heads}; "
            "use widths that are multiples of the head count."
        )
    return ShapeSpec(**shape_fields)


def _compute(shape, budget, budget_unit, image_size):
    if budget_unit == "gflops":
        return budget
    return budget * shape.gflops(image_size=image_size)


def _check_unit(budget_unit):
    if budget_unit not in ("gflops", "examples"):
        raise ValueError(
            "`budget_unit` must be 'gflops' or 'examples'. "
            f"Received: budget_unit={budget_unit!r}"
        )


def star_sweep_plan(
    center, grids, budgets, budget_unit="gflops", image_size=224
):
    """Plans the paper's star sweep: one dimension varied at a time.

    Starting from a large centre shape x^(c), each dimension `k` in `grids`
    takes each of its values while the other dimensions stay at the centre
    (App. B.2). Every value must lie strictly below the centre's, so the
    other dimensions never become the bottleneck. Each shape is trained at
    each budget. The centre itself is added at every budget: the paper
    holds it out of the fit and uses it for validation (Fig. 4).

    Args:
        center: `ShapeSpec`. The star centre; supplies `num_heads` and
            `patch_size` for every run.
        grids: dict. Maps dimension names (`"width"`, `"depth"`,
            `"mlp_dim"`) to lists of values below the centre.
        budgets: float or list of floats. Training budgets, in GFLOPs or in
            examples (see `budget_unit`).
        budget_unit: str. `"gflops"` (each budget is the compute of every
            run) or `"examples"` (each budget is a number of examples seen,
            as the paper's fixed step counts; compute is then examples ×
            the shape's forward GFLOPs). Defaults to `"gflops"`.
        image_size: int or (height, width). Used for GFLOPs when
            `budget_unit="examples"`. Defaults to `224`.

    Returns:
        A list of `(ShapeSpec, compute_gflops)` pairs, swept dimensions in
        the order of `grids`, then the centre, each at every budget.

    Example:

    ```python
    from keras_sovit.scaling import PAPER_STAR_CENTER, PAPER_STAR_GRIDS
    plan = keras_sovit.scaling.star_sweep_plan(
        PAPER_STAR_CENTER, PAPER_STAR_GRIDS, budgets=[64e6, 128e6, 256e6],
        budget_unit="examples",
    )
    len(plan)  # (3 * 6 + 1) * 3 = 57
    ```
    """
    check_shape_spec("center", center)
    grids = _check_grids(grids)
    budgets = _check_budgets(budgets)
    _check_unit(budget_unit)
    plan = []
    for dim, values in grids.items():
        limit = getattr(center, dim)
        for value in values:
            if value >= limit:
                raise ValueError(
                    f"`grids[{dim!r}]` value {value} must lie strictly below "
                    f"the centre's {dim}={limit} (the star sweep goes "
                    "downward from the centre)."
                )
            fields = center.to_dict()
            fields[dim] = value
            shape = _check_heads(fields, f"grids[{dim!r}]")
            for budget in budgets:
                plan.append(
                    (shape, _compute(shape, budget, budget_unit, image_size))
                )
    for budget in budgets:
        plan.append(
            (center, _compute(center, budget, budget_unit, image_size))
        )
    return plan


def grid_sweep_plan(
    grids, budget, template, budget_unit="gflops", image_size=224
):
    """Plans the paper's small grid sweep: the full product of the grids.

    The grid sweep (App. B.3) trains every combination of a few small
    values per dimension at one budget, recording the metric along the way,
    to find the small compute-optimal shape x^(0).

    Args:
        grids: dict. Maps dimension names to lists of values. Dimensions
            left out take the template's value.
        budget: float. Training budget in GFLOPs or examples.
        template: `ShapeSpec`. Supplies `num_heads`, `patch_size` and any
            dimension not in `grids`.
        budget_unit: str. `"gflops"` or `"examples"`, as in
            `star_sweep_plan`. Defaults to `"gflops"`.
        image_size: int or (height, width). Defaults to `224`.

    Returns:
        A list of `(ShapeSpec, compute_gflops)` pairs in lexicographic order
        of (width, depth, mlp_dim).

    Example:

    ```python
    from keras_sovit.scaling.paper.plan import PAPER_GRID_SWEEP
    template = keras_sovit.ShapeSpec(608, 10, 928, 16, 14)
    plan = keras_sovit.scaling.grid_sweep_plan(
        PAPER_GRID_SWEEP, 600e6, template, budget_unit="examples"
    )
    len(plan)  # 64
    ```
    """
    check_shape_spec("template", template)
    grids = _check_grids(grids)
    budget = check_positive_number("budget", budget)
    _check_unit(budget_unit)
    axes = [grids.get(d, [getattr(template, d)]) for d in SCALED_DIMS]
    plan = []
    for width in axes[0]:
        for depth in axes[1]:
            for mlp_dim in axes[2]:
                fields = template.to_dict()
                fields.update(width=width, depth=depth, mlp_dim=mlp_dim)
                shape = _check_heads(fields, "grids['width']")
                plan.append(
                    (shape, _compute(shape, budget, budget_unit, image_size))
                )
    return plan


def metric_rows(results, metric_name):
    """Rows of one metric; a ValueError if none, or if several are mixed."""
    rows = list(results)
    if metric_name is not None:
        rows = [r for r in rows if r.get("metric_name") == metric_name]
    if not rows:
        raise ValueError(
            "`results` holds no rows"
            + (f" for metric_name={metric_name!r}" if metric_name else "")
            + "."
        )
    names = {r.get("metric_name") for r in rows}
    if len(names) > 1:
        raise ValueError(
            f"`results` mixes metrics {sorted(map(str, names))}; pass "
            "`metric_name` to pick one."
        )
    return rows


def _curves(rows):
    """Maps each shape to its (log compute, metric, compute) rows."""
    curves = {}
    for r in rows:
        t, y = float(r["compute_gflops"]), float(r["metric_value"])
        if not (t > 0 and math.isfinite(t) and math.isfinite(y)):
            raise ValueError(
                "`results` rows need positive compute_gflops and a finite "
                f"metric_value. Received row: {r!r}"
            )
        shape = ShapeSpec.from_dict(r)
        curves.setdefault(shape, []).append((math.log(t), y, t))
    return {s: np.array(sorted(c)) for s, c in curves.items()}


def _compute_levels(curves, rtol):
    """Distinct compute levels that every shape covers.

    Values within `rtol` are merged. Only levels inside the range that all
    shapes' checkpoints span are kept, so no shape wins a level merely by
    being the only one trained that long.
    """
    tol = math.log1p(rtol)
    low = max(c[0, 0] for c in curves.values()) - tol
    high = min(c[-1, 0] for c in curves.values()) + tol
    logs = np.sort(np.concatenate([c[:, 0] for c in curves.values()]))
    logs = logs[(logs >= low) & (logs <= high)]
    if not len(logs):
        raise ValueError(
            "The shapes in `results` share no compute range: record the "
            "metric at common compute checkpoints (e.g. a grid sweep with "
            "one compute budget for every shape)."
        )
    levels = [logs[0]]
    for v in logs[1:]:
        if v - levels[-1] > tol:
            levels.append(v)
    return np.array(levels)


def _checkpoint_value(curves, log_t):
    """The recorded compute closest to `log_t` (exact, not via exp/log)."""
    best = min(
        (abs(math.log(t) - log_t), t)
        for c in curves.values()
        for t in c[:, 2]
    )
    return float(best[1])


def _metric_at(curve, log_t, rtol):
    """Metric of one shape at `log_t` (interpolated in log t), or NaN."""
    lo, hi = curve[0, 0], curve[-1, 0]
    tol = math.log1p(rtol)
    if log_t < lo - tol or log_t > hi + tol:
        return np.nan
    return float(np.interp(log_t, curve[:, 0], curve[:, 1]))


def select_grid_optimum(results, metric_name=None, rtol=0.01):
    """Applies the paper's rule to a grid sweep: returns x^(0) and t^(0).

    `results` holds each grid shape's metric recorded at several compute
    checkpoints during training. At every compute level that all shapes
    reach, the best shape is found (metrics are interpolated linearly in
    log compute between a shape's checkpoints). Following §3 and App.
    B.3, x^(0) is the shape that is optimal at the largest compute level,
    and t^(0) is the least
    compute it is optimal for: the smallest level from which it stays
    optimal up to the largest one (the paper's "optimal from 1 to 2 TFLOPs,
    use 1 TFLOPs", which errs towards larger models when scaling up).

    The optimum must lie strictly inside the grid in every dimension that
    has at least three values; otherwise a `GridBoundaryError` (a
    `ValueError`) says which dimension to extend and in which direction.

    Args:
        results: `SweepResults` or iterable of row dicts with the shape
            fields, `compute_gflops`, `metric_name` and `metric_value`.
        metric_name: str or None. Metric to use; needed only when `results`
            mixes metrics. Defaults to `None`.
        rtol: float. Relative tolerance for treating two compute values as
            the same level. Defaults to `0.01`.

    Returns:
        `(x0, t0)`: a `ShapeSpec` and a float compute in GFLOPs.

    Example:

    ```python
    rows = []
    for width in (64, 96, 128):
        for t, best in ((1e3, 96), (2e3, 96)):
            shape = keras_sovit.ShapeSpec(width, 4, 256, 4, 4)
            rows.append({**shape.to_dict(), "compute_gflops": t,
                         "metric_name": "err",
                         "metric_value": abs(width - best) / 100 + 1 / t})
    x0, t0 = keras_sovit.scaling.select_grid_optimum(rows)
    # x0.width == 96, t0 == 1000.0
    ```
    """
    rtol = check_positive_number("rtol", rtol)
    curves = _curves(metric_rows(results, metric_name))
    shapes = list(curves)
    levels = _compute_levels(curves, rtol)
    best = []
    for log_t in levels:
        values = np.array([_metric_at(curves[s], log_t, rtol) for s in shapes])
        best.append(None if np.all(np.isnan(values)) else
                    shapes[int(np.nanargmin(values))])
    x0 = best[-1]
    start = len(levels) - 1
    while start > 0 and best[start - 1] == x0:
        start -= 1
    t0 = _checkpoint_value(curves, levels[start])
    _check_interior(x0, t0, shapes)
    return x0, t0


class GridBoundaryError(ValueError):
    """The grid optimum lies on the grid's boundary.

    A `ValueError` that says which grids to extend, so sweep drivers can
    extend them automatically: `extend` maps each boundary dimension to
    `"upward"` or `"downward"`; `dim` and `direction` give the first one.
    `x0` and `t0` are the boundary optimum, for a driver that cannot extend
    (a grid already at depth 1 cannot go lower).
    """

    def __init__(self, message, extend, x0=None, t0=None):
        super().__init__(message)
        self.extend = dict(extend)
        self.dim, self.direction = next(iter(self.extend.items()))
        self.x0, self.t0 = x0, t0


def _check_interior(x0, t0, shapes):
    extend, parts = {}, []
    for dim in SCALED_DIMS:
        values = sorted({getattr(s, dim) for s in shapes})
        if len(values) < 3:
            continue
        value = getattr(x0, dim)
        if value == values[0]:
            direction, edge = "downward", f"below {values[0]}"
        elif value == values[-1]:
            direction, edge = "upward", f"above {values[-1]}"
        else:
            continue
        extend[dim] = direction
        parts.append(
            f"extend the `{dim}` grid {direction} (values {edge}; the "
            f"optimum has {dim}={value})"
        )
    if extend:
        raise GridBoundaryError(
            f"The grid optimum {x0} lies on the boundary of the grid: "
            + "; ".join(parts)
            + ". Sweep again; the paper requires the optimum to be "
            "interior.",
            extend, x0=x0, t0=t0,
        )


def check_exponents(name, exponents):
    """Scaling exponents `{dim: s_k}`: the one rule, positive and finite
    (s = c / (a + b) of Eq. 4 with every parameter positive)."""
    return check_dim_dict(name, exponents, check_positive_number, SCALED_DIMS)


def _check_exponents(exponents, weights):
    exponents = check_exponents("exponents", exponents)
    if weights is None:
        return {dim: 1.0 / len(exponents) for dim in exponents}
    if not isinstance(weights, dict) or set(weights) != set(exponents):
        raise ValueError(
            "`weights` must be a dict with the same keys as `exponents`. "
            f"Received: weights={weights!r}"
        )
    for dim, w in weights.items():
        check_positive_number(f"weights[{dim!r}]", w)
    total = sum(weights.values())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(
            f"`weights` must sum to 1 (Σ w_k = 1). Received: weights={weights}"
            f" (sum {total:.6g})"
        )
    return {dim: float(w) for dim, w in weights.items()}


def scale_shape(
    base_shape,
    base_compute,
    target_compute,
    exponents,
    weights=None,
    rounding=None,
):
    """Scales a compute-optimal shape to a new budget (the paper's rule).

    With τ = `target_compute` / `base_compute`, each dimension k in
    `exponents` becomes x_k = x_k⁽⁰⁾ · τ^(w_k · s_k), with w_k = 1/D by
    default (D = number of dimensions in `exponents`); other dimensions are
    kept. The result is rounded by `rounding`.

    The paper's wording (§3) is ambiguous: "treating this increment τ as a
    sequence of D smaller increments of size τ^{w_k} each ... an increase
    in compute by a factor of τ is accompanied by an increase in every
    shape dimension k by a factor of τ^{w_k}". It can be read as x_k grows
    by τ^(s_k) or by (τ^(w_k))^(s_k) = τ^(s_k/D). This function adopts the
    second reading: with the paper's exponents it gives ≈2.4× parameters
    per 10× compute, as the paper states (≈2.5×), whereas τ^(s_k) would give
    ≈14× parameters, more than the compute itself (SPEC §2.3). For the
    first reading, multiply the exponents by D.

    A caveat found on synthetic truths (`benchmarks/joint_vs_paper.py`):
    if the loss really is the decomposable Eq. (3) with t independent of
    the shape, Eq. (4) holds in every dimension at once, so the exact
    compute-optimal path is x_k ∝ t^(s_k), and the τ^(s_k/D) rule
    under-scales. `keras_sovit.scaling.paper.joint.optimal_shape` fits a joint
    law instead and searches the exact optimum.

    Args:
        base_shape: `ShapeSpec`. x⁽⁰⁾, optimal at `base_compute`.
        base_compute: float. t⁽⁰⁾ in GFLOPs.
        target_compute: float. Target compute in GFLOPs.
        exponents: dict. s_k per dimension, e.g. `PAPER_EXPONENTS`.
        weights: dict or None. w_k per dimension, summing to 1. Defaults to
            `None` (w_k = 1/D).
        rounding: `Rounding` or None. Defaults to `None` (`Rounding()`:
            multiples of 16, the base shape's head count).

    Returns:
        The scaled `ShapeSpec` (same patch size as `base_shape`).

    Example:

    ```python
    from keras_sovit.scaling.paper.plan import PAPER_EXPONENTS
    base = keras_sovit.ShapeSpec.from_variant("So400m/14")
    big = keras_sovit.scaling.scale_shape(base, 1.0, 10.0, PAPER_EXPONENTS)
    big.num_params() / base.num_params()  # about 2.4
    ```
    """
    check_shape_spec("base_shape", base_shape)
    base_compute = check_positive_number("base_compute", base_compute)
    target_compute = check_positive_number("target_compute", target_compute)
    weights = _check_exponents(exponents, weights)
    rounding = check_rounding(rounding)
    tau = target_compute / base_compute
    scaled = {d: float(getattr(base_shape, d)) for d in SCALED_DIMS}
    for dim, s in exponents.items():
        scaled[dim] *= tau ** (weights[dim] * float(s))
    return rounding.snap(
        scaled["width"],
        scaled["depth"],
        scaled["mlp_dim"],
        patch_size=base_shape.patch_size,
        default_heads=base_shape.num_heads,
    )
