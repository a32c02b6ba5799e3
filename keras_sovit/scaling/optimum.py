"""The one integer shape optimiser: the best lattice shape of a loss.

`keras_sovit.scaling.optimal_shape` (a fitted joint law) and the truths'
`true_optimum` (`keras_sovit.scaling.simulate`) both call `best_shape`.
The loss is any vectorised function of (width, depth, mlp_dim) at a fixed
compute; the lattice is what a `Rounding` snaps to.
"""

import math

import numpy as np

from keras_sovit.shapes import SCALED_DIMS
from keras_sovit.shapes import param_count

_COARSE_POINTS = 24
_ZOOMS = 4
_NEIGHBOURHOOD = np.array(
    np.meshgrid(*[np.arange(-2, 3)] * 3, indexing="ij")
).reshape(3, -1).T


def best_shape(loss, template, rounding, bounds, max_params=None,
               num_patches=None):
    """The shape on `rounding`'s lattice with the lowest `loss`.

    A log grid over the box is scanned and zoomed into `_ZOOMS` times with
    the loss evaluated on real-valued sizes (the formulas are smooth), the
    best point is snapped, then a pattern search over the 5 × 5 × 5
    lattice neighbourhood moves to the best neighbour until none is
    better. For the smooth, unimodal losses of the scaling laws this ends
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
    for _ in range(1000):
        steps = rounding.steps(shape.width, template.num_heads)
        candidates = []
        for offset in _NEIGHBOURHOOD:
            sizes = {d: getattr(shape, d) + int(o) * steps[d]
                     for d, o in zip(SCALED_DIMS, offset)}
            if min(sizes.values()) <= 0:
                continue
            candidate = _snap(sizes, template, rounding, bounds)
            if candidate is not None:
                candidates.append(candidate)
        values = _evaluate(loss, candidates)
        index = int(np.argmin(values))
        if not values[index] < best_value:
            break
        shape, best_value = candidates[index], float(values[index])
    return shape, best_value


def _evaluate(loss, shapes):
    columns = [np.array([getattr(s, d) for s in shapes], dtype=float)
               for d in SCALED_DIMS]
    return np.asarray(loss(*columns), dtype=float)
