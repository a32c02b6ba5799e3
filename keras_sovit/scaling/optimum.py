"""The one integer shape optimiser: the best lattice shape of a loss.

`keras_sovit.scaling.optimal_shape` (a fitted joint law) and the truths'
`true_optimum` (`keras_sovit.scaling.truths.laws`) both call `best_shape`.
The loss is any vectorised function of (width, depth, mlp_dim) at a fixed
compute; the lattice is what a `Rounding` snaps to.
"""

import math

import numpy as np

from keras_sovit.shapes import SCALED_DIMS
from keras_sovit.shapes import param_count

_COARSE_POINTS = 24
_ZOOMS = 4
# The pattern search's neighbourhood: at least ±2 lattice steps per
# dimension, and at least ±`_REACH` of the value (capped at `_MAX_STEPS`),
# so a valley running diagonally across coarse and fine steps (one block
# of depth traded for several MLP steps) is crossed in one move.
_MIN_STEPS = 2
_REACH = 0.1
_MAX_STEPS = 12


def best_shape(loss, template, rounding, bounds, max_params=None,
               num_patches=None):
    """The shape on `rounding`'s lattice with the lowest `loss`.

    A log grid over the box is scanned and zoomed into `_ZOOMS` times with
    the loss evaluated on real-valued sizes (the formulas are smooth), the
    best point is snapped, then a pattern search moves to the best
    lattice neighbour (±2 steps, or ±10% of the value, per dimension)
    until none is better. For the smooth, unimodal losses of the scaling laws this ends
    on the lattice optimum.

    Args:
        loss: callable `(width, depth, mlp_dim) -> array`, vectorised over
            numpy float arrays (the compute is fixed by the caller).
        template: `ShapeSpec`. Supplies `num_heads` (unless `rounding`
            fixes them) and `patch_size`.
        rounding: `keras_sovit.shapes.Rounding`. The lattice.
        bounds: dict `{dim: (low, high)}` for every scaled dimension.
        max_params: int or `None`. Shapes with more weights are refused.
        num_patches: int or `None`. Patches per image, needed with
            `max_params`.

    Returns:
        `(shape, value)`: the best `ShapeSpec` and its loss.
    """
    masked = _masked(loss, template, max_params, num_patches)
    start = _continuous_optimum(masked, bounds)
    shape = _snap(start, template, rounding, bounds)
    if shape is not None:
        shape, value = _pattern_search(
            masked, shape, template, rounding, bounds
        )
    if shape is None or not np.isfinite(value):
        raise ValueError(
            "No shape satisfies the bounds, `max_params` and the rounding; "
            f"widen them. Received: bounds={bounds}, max_params={max_params}"
        )
    return shape, value


def _masked(loss, template, max_params, num_patches):
    if max_params is None:
        return loss

    def masked(width, depth, mlp_dim):
        values = np.asarray(loss(width, depth, mlp_dim), dtype=float)
        params = param_count(
            width, depth, mlp_dim, num_patches, template.patch_size
        )
        return np.where(params <= max_params, values, np.inf)

    return masked


def _continuous_optimum(loss, bounds):
    """Zoomed log-grid scan; the best real-valued (width, depth, mlp)."""
    box_low = np.log([bounds[d][0] for d in SCALED_DIMS])
    box_high = np.log([bounds[d][1] for d in SCALED_DIMS])
    low, high = box_low.copy(), box_high.copy()
    best = (low + high) / 2
    for _ in range(_ZOOMS):
        axes = [np.linspace(lo, hi, _COARSE_POINTS)
                for lo, hi in zip(low, high)]
        grid = np.meshgrid(*axes, indexing="ij")
        values = loss(*[np.exp(g) for g in grid])
        index = np.unravel_index(np.argmin(values), values.shape)
        best = np.array([axes[k][index[k]] for k in range(3)])
        span = (high - low) / (_COARSE_POINTS - 1)
        low = np.maximum(best - 2 * span, box_low)
        high = np.minimum(best + 2 * span, box_high)
    return dict(zip(SCALED_DIMS, np.exp(best)))


def _snap(sizes, template, rounding, bounds):
    """The lattice shape nearest `sizes` inside `bounds`, or `None`."""
    clamped = {d: min(max(float(sizes[d]), bounds[d][0]), bounds[d][1])
               for d in SCALED_DIMS}
    shape = rounding.snap(
        clamped["width"], clamped["depth"], clamped["mlp_dim"],
        patch_size=template.patch_size, default_heads=template.num_heads,
    )
    steps = rounding.steps(shape.width, shape.num_heads)
    inside = {}
    for dim in SCALED_DIMS:
        value, step, (low, high) = getattr(shape, dim), steps[dim], bounds[dim]
        if value < low:
            value += step * math.ceil((low - value) / step)
        if value > high:
            value -= step * math.ceil((value - high) / step)
        if value <= 0 or not low <= value <= high:
            return None
        inside[dim] = int(value)
    return shape.replace(**inside)


def _pattern_search(loss, shape, template, rounding, bounds):
    best_value = float(_evaluate(loss, [shape])[0])
    low = np.array([bounds[d][0] for d in SCALED_DIMS], dtype=float)
    high = np.array([bounds[d][1] for d in SCALED_DIMS], dtype=float)
    for _ in range(1000):
        steps = rounding.steps(shape.width, template.num_heads)
        here = np.array([getattr(shape, d) for d in SCALED_DIMS], float)
        sizes = here + _neighbourhood(shape, steps) * np.array(
            [steps[d] for d in SCALED_DIMS], dtype=float)
        sizes = sizes[np.all((sizes > 0) & (sizes >= low) & (sizes <= high),
                             axis=1)]
        values = np.asarray(loss(*sizes.T), dtype=float)
        moved = False
        # Vectorised over the raw neighbours; the best few are snapped
        # (heads may change with width) and the first that improves wins.
        for index in np.argsort(values)[:8]:
            if not values[index] < best_value:
                break
            candidate = _snap(dict(zip(SCALED_DIMS, sizes[index])),
                              template, rounding, bounds)
            value = None if candidate is None else float(
                _evaluate(loss, [candidate])[0])
            if value is not None and value < best_value:
                shape, best_value, moved = candidate, value, True
                break
        if not moved:
            break
    return shape, best_value


def _neighbourhood(shape, steps):
    """Lattice offsets around `shape` (see `_REACH`), as (n, 3) ints."""
    reach = [
        min(_MAX_STEPS, max(_MIN_STEPS, math.ceil(
            _REACH * getattr(shape, d) / steps[d])))
        for d in SCALED_DIMS
    ]
    axes = [np.arange(-r, r + 1) for r in reach]
    return np.array(np.meshgrid(*axes, indexing="ij")).reshape(3, -1).T


def _evaluate(loss, shapes):
    columns = [np.array([getattr(s, d) for s in shapes], dtype=float)
               for d in SCALED_DIMS]
    return np.asarray(loss(*columns), dtype=float)
