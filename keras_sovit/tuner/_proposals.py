"""Shapes the oracle proposes: snapping, control, neighbours, method."""

import math

import numpy as np

from keras_sovit.scaling import joint as joint_lib
from keras_sovit.scaling import law as law_lib
from keras_sovit.shapes import SHAPE_FIELDS
from keras_sovit.shapes import ShapeSpec
from keras_sovit.tuner._common import DIMS
from keras_sovit.tuner._common import NEIGHBOUR_FACTOR
from keras_sovit.tuner._common import snap

# "auto" keeps the joint law unless its held-out error exceeds the
# per-dimension laws' by more than this ratio plus this slack: on-axis star
# runs cannot show how dimensions interact, which only the joint law models.
_AUTO_RATIO = 1.5
_AUTO_SLACK = 0.005


class ShapeGrid:
    """Rounds real-valued sizes onto the oracle's declared Int grids.

    Args:
        rounding: `keras_sovit.scaling.Rounding`.
        steps: dict of dimension -> step of its declared Int grid.
        template: `ShapeSpec` whose patch size and heads are kept.
        image_size: `(height, width)`, for per-example GFLOPs.
    """

    def __init__(self, rounding, steps, template, image_size):
        self.rounding = rounding
        self.steps = steps
        self.template = template
        self.image_size = image_size

    def snap(self, width, depth, mlp_dim):
        snapped = self.rounding.snap(
            float(width), float(depth), float(mlp_dim),
            patch_size=self.template.patch_size,
            default_heads=self.template.num_heads,
        )
        values = {d: max(self.steps[d], snap(getattr(snapped, d),
                                             self.steps[d]))
                  for d in DIMS}
        return snapped.replace(**values)

    def snap_shape(self, shape):
        return self.snap(shape.width, shape.depth, shape.mlp_dim)

    def control(self, shape):
        """A standard ViT (MLP = 4 × width) of equal per-example GFLOPs."""
        target = shape.gflops(self.image_size)
        best = None
        step = self.steps["width"]
        for width in range(step, 4 * shape.width + 1, step):
            candidate = self.snap(width, shape.depth, 4 * width)
            if candidate.mlp_dim != 4 * candidate.width:
                continue
            gap = abs(math.log(candidate.gflops(self.image_size) / target))
            if best is None or gap < best[0]:
                best = (gap, candidate)
        return best[1]

    def neighbours(self, shape, dims):
        """`shape` with each of `dims` ×1.2 and ÷1.2 (at least one step)."""
        neighbours = []
        for dim in dims:
            for factor in (NEIGHBOUR_FACTOR, 1 / NEIGHBOUR_FACTOR):
                new = self._neighbour(shape, dim, factor)
                if new is not None and new != shape and new not in neighbours:
                    neighbours.append(new)
        return neighbours

    def _neighbour(self, shape, dim, factor):
        value = getattr(shape, dim)
        sizes = {d: getattr(shape, d) for d in DIMS}
        sizes[dim] = value * factor
        new = self.snap(**sizes)
        if getattr(new, dim) != value:
            return new
        step = self.steps[dim]
        if dim == "width":
            step = self.rounding.width_step(value, shape.num_heads)
        sizes[dim] = value + step if factor > 1 else value - step
        if sizes[dim] <= 0:
            return None
        return self.snap(**sizes)


def holdout_errors(star, sweeps, star_center, dims, image_size, seed,
                   metric_name):
    """Mean |relative error| on each star shape's largest-budget run.

    "paper": the per-dimension laws of Eq. (2) fitted without those runs;
    one entry per joint form: the joint law fitted on every other run of
    `sweeps` (star and grid results).
    """
    fit = law_lib.fit_star_sweep(
        star, star_center, dims=dims, n_bootstrap=0, holdout="largest",
        random_state=seed, metric_name=metric_name,
    )
    paper = [abs(e) for errs in fit.holdout_errors.values() for e in errs]
    errors = {"paper": float(np.mean(paper))}
    held, train = _split_largest_star_runs(star, sweeps)
    for form in joint_lib.FORMS:
        law = fit_joint_law(form, train, image_size, seed)
        errors[form] = float(np.mean([
            abs(law.predict(ShapeSpec.from_dict(r), r["compute_gflops"])
                / r["metric_value"] - 1.0)
            for r in held
        ]))
    return errors


def best_joint_form(errors):
    return min(joint_lib.FORMS, key=errors.get)


def prefers_joint(errors):
    """The "auto" rule: joint unless clearly worse than the paper's laws."""
    tolerance = _AUTO_RATIO * errors["paper"] + _AUTO_SLACK
    return errors[best_joint_form(errors)] <= tolerance


def fit_joint_law(form, rows, image_size, seed):
    return joint_lib.JointLaw(
        form=form, image_size=image_size, random_state=seed,
    ).fit(rows)


def _split_largest_star_runs(star, sweeps):
    largest = {}
    for row in star:
        key = _shape_key(row)
        largest[key] = max(largest.get(key, 0.0),
                           float(row["compute_gflops"]))
    held, train = [], []
    for row in sweeps:
        is_held = row.get("phase") == "star" and math.isclose(
            float(row["compute_gflops"]), largest[_shape_key(row)],
            rel_tol=1e-9,
        )
        (held if is_held else train).append(row)
    return held, train


def _shape_key(row):
    return tuple(int(row[f]) for f in SHAPE_FIELDS)
