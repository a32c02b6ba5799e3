"""Proposal rules: from the sweeps' observations to a shape at a compute.

A rule is one class with a `name` and a `propose` method, registered with
`register_proposal_rule`; `ShapeOracle(proposal_method=name)` selects it.
The built-in rules are `"paper"` (the paper's τ^(s_k/D) scaling of x0),
`"joint"` (the optimum of a joint law under the exact FLOP count) and
`"auto"` (one of the two, chosen on held-out runs). `ShapeGrid` rounds the
proposals onto the oracle's declared hyperparameter grids.

Example, a rule that always proposes the grid sweep's optimum x0:

```python
@keras_sovit.tuner.register_proposal_rule
class KeepBase(keras_sovit.tuner.ProposalRule):
    name = "keep_base"

    def propose(self, observations, target, constraints):
        return observations.base_shape, {"method": self.name}
```
"""

import dataclasses
import logging
import math
import warnings

import numpy as np

from keras_sovit.scaling.paper import joint as joint_lib
from keras_sovit.scaling.paper import plan as plan_lib
from keras_sovit.scaling.paper import star_sweep as star_lib
from keras_sovit.scaling.results import largest_compute_runs
from keras_sovit.shapes import SCALED_DIMS
from keras_sovit.shapes import SHAPE_FIELDS
from keras_sovit.shapes import ShapeSpec
from keras_sovit.shapes import round_to_multiple
from keras_sovit.tuner.registry import Registry

logger = logging.getLogger("keras_sovit.tuner.shape_oracle")

# The paper's validation neighbours (Fig. 6) and grid extensions are ×1.2.
NEIGHBOUR_FACTOR = 1.2
# "auto" keeps the joint law unless its held-out error exceeds the
# per-dimension laws' by more than this ratio plus this slack: on-axis star
# runs cannot show how dimensions interact, which only the joint law models.
_AUTO_RATIO = 1.5
_AUTO_SLACK = 0.005


@dataclasses.dataclass
class Observations:
    """What the sweeps measured and fitted, as a proposal rule sees it.

    Attributes:
        star: `SweepResults`. The star sweep's rows (empty if skipped).
        sweeps: `SweepResults`. The star and grid sweeps' rows.
        star_fit: `keras_sovit.scaling.StarSweepFit` or `None`.
        exponents: dict. Exponents s_k, fitted or given.
        base_shape: `ShapeSpec` or `None`. x0, found or given.
        base_compute: float or `None`. The compute x0 is optimal for.
        star_center: `ShapeSpec`. The star sweep's centre.
        dims: tuple of str. The scaled dimensions.
        image_size: `(height, width)`.
        metric_name: str. The objective.
        seed: int. Seed of any fit.
    """

    star: object
    sweeps: object
    star_fit: object
    exponents: dict
    base_shape: ShapeSpec
    base_compute: float
    star_center: ShapeSpec
    dims: tuple
    image_size: tuple
    metric_name: str
    seed: int


class ProposalRule:
    """Base class of the proposal rules.

    Subclasses set `name` and implement `propose`. One instance serves one
    proposal step (the target and validation computes), so it may cache
    fits between calls.
    """

    name = None

    def propose(self, observations, target, constraints):
        """The proposed shape at compute `target`.

        Args:
            observations: `Observations`.
            target: float. Compute in GFLOPs.
            constraints: `ShapeGrid`. Rounding, steps and template that
                every proposal must respect.

        Returns:
            `(shape, diagnostics)`: a `ShapeSpec` and a JSON-safe dict that
            holds at least `"method"` (the rule that made the shape).
        """
        raise NotImplementedError


_RULES = Registry(ProposalRule, "proposal_method")
# big_vision's standard ViTs, (width, depth): Ti, S, B, L, H.
_VIT_FAMILY = ((192, 12), (384, 12), (768, 12), (1024, 24), (1280, 32))
# `@register_proposal_rule` makes a ProposalRule selectable by its `name`.
register_proposal_rule = _RULES.register
rule_names = _RULES.names
get_proposal_rule = _RULES.create


@register_proposal_rule
class PaperRule(ProposalRule):
    """The paper's rule: x_k = x0_k · τ^(s_k / D), τ = target / t0.

    A fitted s_k outside [0, 1] is capped, with a warning: a dimension
    growing faster than compute would make every example cost more than
    the budget grows, so a fit that says so is noise.
    """

    name = "paper"

    def propose(self, observations, target, constraints):
        exponents = _capped(observations.exponents, observations.dims)
        shape = plan_lib.scale_shape(
            observations.base_shape, observations.base_compute, target,
            exponents, rounding=constraints.rounding,
        )
        return constraints.snap_shape(shape), {
            "method": self.name, "exponents": exponents,
        }


@register_proposal_rule
class JointRule(ProposalRule):
    """The optimum of a `JointLaw` fitted on every star and grid run.

    Args:
        form: str. The joint law's form; `"auto"` lets `JointLaw` choose
            it on held-out runs.
    """

    name = "joint"

    def __init__(self, form="auto"):
        self.form = form
        self._law = None

    def law(self, observations):
        if self._law is None:
            self._law = joint_lib.JointLaw(
                form=self.form, image_size=observations.image_size,
                random_state=observations.seed,
            ).fit(observations.sweeps)
        return self._law

    def propose(self, observations, target, constraints):
        law = self.law(observations)
        shape = joint_lib.optimal_shape(
            law, target, image_size=observations.image_size,
            rounding=constraints.rounding, template=constraints.template,
        )
        return constraints.snap_shape(shape), {
            "method": self.name, "joint_form": law.form_,
        }


@register_proposal_rule
class AutoRule(ProposalRule):
    """`"joint"` unless its held-out error is clearly worse than `"paper"`.

    Both the per-dimension laws and each joint form are refitted without
    each star shape's largest-compute run (the library's hold-out rule)
    and scored on those runs (mean |relative error|). The joint law is
    used unless its error exceeds 1.5 × the per-dimension error + 0.005;
    a joint optimum on the search bound (the law extrapolates) falls back
    to the paper's rule. Without a star sweep the paper's rule is used.
    """

    name = "auto"

    def __init__(self):
        self._chosen = None
        self._info = {}

    def propose(self, observations, target, constraints):
        if self._chosen is None:
            self._chosen = self._choose(observations, target, constraints)
        shape, info = self._chosen.propose(observations, target, constraints)
        return shape, dict(self._info, **info)

    def _choose(self, observations, target, constraints):
        if observations.star_fit is None:
            return PaperRule()
        errors = holdout_errors(observations)
        form = min(joint_lib.FORMS, key=errors.get)
        self._info = {"holdout_errors": errors, "joint_form": form}
        if errors[form] > _AUTO_RATIO * errors["paper"] + _AUTO_SLACK:
            return PaperRule()
        joint = JointRule(form=form)
        with warnings.catch_warnings():
            # A bound hit is handled here, not reported as a warning.
            warnings.simplefilter("ignore", RuntimeWarning)
            shape, _ = joint.propose(observations, target, constraints)
        unbounded = joint_lib.on_search_bound(
            shape, rounding=constraints.rounding
        )
        if unbounded:
            logger.warning(
                "ShapeOracle: the joint law has no interior optimum at the "
                "target compute (%s on the search bound); using the paper's "
                "rule instead.", ", ".join(unbounded),
            )
            return PaperRule()
        return joint


def holdout_errors(observations):
    """Mean |relative error| on each star shape's largest-compute run.

    "paper": the per-dimension laws of Eq. (2) fitted without those runs;
    one entry per joint form: the joint law fitted on every other run of
    the star and grid sweeps.
    """
    obs = observations
    fit = star_lib.fit_star_sweep(
        obs.star, obs.star_center, dims=obs.dims, n_bootstrap=0,
        holdout="largest", random_state=obs.seed,
        metric_name=obs.metric_name,
    )
    paper = [abs(e) for errs in fit.holdout_errors.values() for e in errs]
    errors = {"paper": float(np.mean(paper))}
    rows = list(obs.sweeps)
    held = largest_compute_runs(
        [(_shape_key(r), r.get("phase")) for r in rows],
        [r["compute_gflops"] for r in rows],
    )
    held &= np.array([r.get("phase") == "star" for r in rows], dtype=bool)
    train = [r for r, h in zip(rows, held) if not h]
    test = [r for r, h in zip(rows, held) if h]
    for form in joint_lib.FORMS:
        law = joint_lib.JointLaw(
            form=form, image_size=obs.image_size, random_state=obs.seed,
        ).fit(train)
        errors[form] = float(np.mean([
            abs(law.predict(ShapeSpec.from_dict(r), r["compute_gflops"])
                / r["metric_value"] - 1.0)
            for r in test
        ]))
    return errors


def standard_depth(width):
    """The depth the standard ViT family gives a width.

    Log-linear between big_vision's Ti, S, B, L and H; below Ti depth
    keeps Ti's width-to-depth ratio (16), above H it keeps H's (40).
    """
    widths, depths = np.log(np.array(_VIT_FAMILY, dtype=float)).T
    if width <= _VIT_FAMILY[0][0]:
        return max(1.0, width / 16)
    if width >= _VIT_FAMILY[-1][0]:
        return width / 40
    return float(np.exp(np.interp(math.log(width), widths, depths)))


def _capped(exponents, dims):
    capped = {}
    for dim in dims:
        value = float(exponents[dim])
        if not 0.0 <= value <= 1.0:
            logger.warning(
                "ShapeOracle: fitted exponent s_%s = %.3g is outside "
                "[0, 1]; the paper's rule uses %g.", dim, value,
                min(max(value, 0.0), 1.0),
            )
        capped[dim] = min(max(value, 0.0), 1.0)
    return capped


def _shape_key(row):
    return tuple(int(row[f]) for f in SHAPE_FIELDS)


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
        values = {
            d: max(self.steps[d],
                   round_to_multiple(getattr(snapped, d), self.steps[d]))
            for d in SCALED_DIMS
        }
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

    def standard(self, base_shape, base_compute, target):
        """A standard-aspect ViT for `target`, chosen without a proposal.

        The practitioner's baseline: MLP = 4 × width, depth from the ViT
        family's depth-width curve (`standard_depth`), and per-example
        compute grown from x0's by √(target / t0), i.e. half of the
        compute growth goes into the model and half into the data (the
        Chinchilla split). It uses x0 and t0, never the fitted exponents
        or the proposal rule.
        """
        want = base_shape.gflops(self.image_size) * math.sqrt(
            target / base_compute)
        best = None
        step = self.steps["width"]
        for width in range(step, 64 * base_shape.width + 1, step):
            candidate = self.snap(width, standard_depth(width), 4 * width)
            gap = abs(math.log(candidate.gflops(self.image_size) / want))
            if best is None or gap < best[0]:
                best = (gap, candidate)
            if candidate.gflops(self.image_size) > 2 * want:
                break
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
        sizes = {d: getattr(shape, d) for d in SCALED_DIMS}
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
