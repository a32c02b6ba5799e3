"""The phases of a shape search, one small class each.

`ShapeOracle` walks the phases named in its configuration, in order. For
the phase running now it asks `plan(context)` for the trials it wants
(saved with the project), hands them out, and once all of them have
finished calls `finish(context)`: `True` moves on to the next active
phase, `False` asks for a new plan (the grid sweep extends its grid that
way). A phase whose `active(context)` is `False` is skipped. The
`context` (`SearchContext`) holds the frozen configuration, the mutable
state and the observations; a phase never sees the oracle.

Adding a phase is one class registered with `register_phase` plus its
name in `ShapeOracle(phases=...)`, e.g. a phase that retrains the
proposal at a quarter of the target:

```python
@keras_sovit.tuner.register_phase
class Preview(keras_sovit.tuner.Phase):
    name = "preview"

    def plan(self, context):
        shape = context.proposal("target")
        return [context.trial(self.name, shape,
                              context.config.target_compute / 4)]
```
"""

import dataclasses
import json
import logging
from typing import Callable

import numpy as np

from keras_sovit.scaling import noise
from keras_sovit.scaling.paper import plan as plan_lib
from keras_sovit.scaling.paper import star_sweep as star_lib
from keras_sovit.scaling.results import COMPUTE_METRIC
from keras_sovit.scaling.results import largest_compute_rows
from keras_sovit.shapes import SCALED_DIMS
from keras_sovit.shapes import SHAPE_FIELDS
from keras_sovit.shapes import ShapeSpec
from keras_sovit.shapes import round_to_multiple
from keras_sovit.tuner import proposals
from keras_sovit.tuner.protocol import GRID_FRACTIONS
from keras_sovit.tuner.protocol import SEED_HP
from keras_sovit.tuner.protocol import UNTRAINED_PREFIX
from keras_sovit.tuner.protocol import PhaseName
from keras_sovit.tuner.protocol import trial_values
from keras_sovit.tuner.registry import Registry
from keras_sovit.tuner.state import plain

logger = logging.getLogger("keras_sovit.tuner.shape_oracle")

# Fewest successful star runs per dimension that the Eq. (2) fit accepts.
_MIN_POINTS_PER_DIM = 7


@dataclasses.dataclass
class SearchContext:
    """What a phase sees of a search.

    Attributes:
        config: `keras_sovit.tuner.SearchConfig`. Frozen settings.
        state: `keras_sovit.tuner.SearchState`. Mutable; phases write
            their results here.
        observe: callable `(phases) -> SweepResults`: the finished runs
            (values at the end of a schedule or of a cooldown branch) of
            the completed trials of the given phase names; failed trials
            and missing values are recorded in `state.excluded_trials_`.
        seed: int. Seed for fits.
        trial_metrics: callable `(phase) -> list of dict`: the final
            metrics of each completed trial of `phase`, with its
            hyperparameter values under `"values"`.
    """

    config: object
    state: object
    observe: Callable
    seed: int
    trial_metrics: Callable = None

    def results(self, *phases):
        return self.observe(phases)

    def trial(self, phase, shape, compute, seed=None, fractions=None):
        """The hyperparameter values of a trial of `phase`."""
        return trial_values(phase, shape, compute, seed, fractions)

    def trials(self, phase, shape, compute, seeds=1, fractions=None):
        """`seeds` replicates of one trial (seed 0 for a single one)."""
        if seeds == 1:
            return [self.trial(phase, shape, compute, None, fractions)]
        return [self.trial(phase, shape, compute, seed, fractions)
                for seed in range(seeds)]

    @property
    def branched(self):
        """Whether one trial trains several cooled budgets."""
        if self.config.branch_budgets is not None:
            return self.config.branch_budgets
        return bool(self.state.branch_budgets_)

    def stop(self, reason):
        """Ends the search after this phase (no later phase runs)."""
        self.state.stopped_ = str(reason)

    def proposal(self, role):
        """The proposed `ShapeSpec` of `role` ("target", "control", ...)."""
        values = self.state.proposals_.get(role)
        if values is None:
            raise RuntimeError(
                f"ShapeOracle: no '{role}' proposal yet; the phase "
                f"'{self.state.phase}' must come after the proposal phase."
            )
        return ShapeSpec.from_dict(values)

    @property
    def template(self):
        """Heads and patch size of proposals: x0 once known."""
        base = self.state.base_shape_
        return ShapeSpec.from_dict(base) if base else self.config.template

    @property
    def shape_grid(self):
        """Rounding onto the oracle's declared hyperparameter grids."""
        return proposals.ShapeGrid(
            self.config.rounding, self.config.grid_steps, self.template,
            self.config.image_size,
        )


class Phase:
    """Base class of the phases; the defaults run no trials and finish."""

    name = None

    def active(self, context):
        """Whether this search runs the phase."""
        return True

    def plan(self, context):
        """The trials this phase wants: a list of hyperparameter values."""
        return []

    def finish(self, context):
        """Called when the planned trials are done; `False` to re-plan."""
        return True


_PHASES = Registry(Phase, "phases", reserved=(PhaseName.DONE.value,))
# `@register_phase` makes a Phase subclass usable by its `name`.
register_phase = _PHASES.register
phase_names = _PHASES.names
get_phase = _PHASES.create


@register_phase
class StarSweep(Phase):
    """Star sweep and the fit of Eq. (2) per dimension (`exponents_`)."""

    name = PhaseName.STAR.value

    def active(self, context):
        return context.config.run_star

    def plan(self, context):
        config = context.config
        if not context.branched:
            return [v for shape, compute in config.star_plan()
                    for v in context.trials(self.name, shape, compute,
                                            config.replicates)]
        # One run per shape trains every star budget, each cooled down.
        shapes = _unique([shape for shape, _ in config.star_plan()])
        return [v for shape in shapes
                for v in context.trials(
                    self.name, shape, max(config.star_budgets),
                    config.replicates, config.star_fractions())]

    def finish(self, context):
        config, state = context.config, context.state
        results = context.results(self.name)
        _check_enough_star_points(results, config, state.excluded_trials_)
        fit = star_lib.fit_star_sweep(
            results, config.star_center, dims=config.dims,
            n_bootstrap=config.n_bootstrap, random_state=context.seed,
            metric_name=config.objective,
        )
        state.star_fit_ = plain(fit.to_dict())
        state.exponents_ = {d: float(s) for d, s in fit.exponents.items()}
        return True


@register_phase
class GridSweep(Phase):
    """Grid sweep: x0 and t0, extending the grid while x0 is on its edge."""

    name = PhaseName.GRID.value

    def active(self, context):
        return context.config.run_grid

    def plan(self, context):
        state = context.state
        if state.grid_ is None:
            state.grid_ = {k: list(v) for k, v in context.config.grid.items()}
        fractions = GRID_FRACTIONS if context.branched else None
        return [v for shape, compute in context.config.grid_plan(state.grid_)
                for v in context.trials(self.name, shape, compute,
                                        context.config.replicates,
                                        fractions)]

    def finish(self, context):
        config, state = context.config, context.state
        results = context.results(self.name)
        if not len(results):
            raise RuntimeError(
                "ShapeOracle: no successful grid-sweep trial remains. "
                f"Excluded trials: {state.excluded_trials_}"
            )
        try:
            shape, compute = plan_lib.select_grid_optimum(results)
        except plan_lib.GridBoundaryError as error:
            wider = {d: _extended(state.grid_[d], config.grid_steps[d], way)
                     for d, way in error.extend.items()}
            room = [(d, values) for d, values in wider.items()
                    if values != sorted(state.grid_[d])]
            if not room:
                # On the lattice's floor (e.g. depth 1): nothing smaller
                # exists, so the boundary shape is the lattice optimum.
                logger.warning("ShapeOracle: the grid optimum %s is on the "
                               "smallest possible values.", error.x0)
                shape, compute = error.x0, error.t0
            elif state.grid_extensions_ >= config.max_grid_extensions:
                raise RuntimeError(
                    "ShapeOracle: the grid sweep's optimum lies on the "
                    f"boundary after {state.grid_extensions_} extensions; "
                    "widen `grid` or raise `max_grid_extensions`. "
                    f"({error})"
                ) from error
            else:
                self._extend(context, *room[0])
                return False
        state.base_shape_ = shape.to_dict()
        state.base_compute_ = float(compute)
        return True

    def _extend(self, context, dim, values):
        """Sets the grid's `dim` to `values` (`_extended`: two more values,
        ×1.2 apart, beyond the edge the optimum is on)."""
        grid = context.state.grid_
        grid[dim] = values
        context.state.grid_extensions_ += 1
        logger.info("ShapeOracle: grid extended to %s.", grid)


@register_phase
class SignalGate(Phase):
    """Checks that the sweeps measured something before proposing.

    Three checks, each `True`, `False` or `None` (not measurable: no
    standard error, no untrained value, no bootstrap interval):

    - the star centre's largest budget beats its smallest by more than
      two standard errors;
    - the trained centre beats the untrained network (the hypermodel's
      `"untrained_<metric>"`) by more than two standard errors;
    - the 90% interval of the data exponent c lies above `C_FLOOR`.

    Any `False` stops the search with advice (no proposal is made); the
    result is `state.signal_`.
    """

    name = PhaseName.SIGNAL.value
    C_FLOOR = 0.02

    def active(self, context):
        return context.config.run_star

    def finish(self, context):
        signal = _signal(context, self.C_FLOOR)
        context.state.signal_ = plain(signal)
        if signal["passed"] is False:
            context.stop("the sweeps carry no signal: "
                         + "; ".join(signal["advice"]))
            logger.error("ShapeOracle: %s", context.state.stopped_)
        return True


@register_phase
class Proposal(Phase):
    """Runs the proposal rule: target, control and validation shapes."""

    name = PhaseName.PROPOSAL.value

    def finish(self, context):
        config, state = context.config, context.state
        rule = proposals.get_proposal_rule(config.proposal_method)
        observations = _observations(context)
        grid = context.shape_grid
        target, info = rule.propose(observations, config.target_compute,
                                    grid)
        state.proposal_info_ = plain(info)
        set_proposals(context, target, observations.base_shape,
                      observations.base_compute)
        if config.validation_compute is not None:
            shape, _ = rule.propose(observations, config.validation_compute,
                                    grid)
            state.proposals_["validation"] = shape.to_dict()
        return True


@register_phase
class Validation(Phase):
    """The proposal's ×1.2 / ÷1.2 neighbours at an intermediate compute.

    Each shape is trained `validation_seeds` times; the proposal is "not
    locally optimal" only when a neighbour is significantly better
    (`noise.local_optimality`, family-wise false-alarm rate
    `validation_alpha`), never from single noisy runs.
    """

    name = PhaseName.VALIDATION.value

    def active(self, context):
        return context.config.validation_trials

    def plan(self, context):
        config = context.config
        center = context.proposal("validation")
        shapes = [center] + context.shape_grid.neighbours(center,
                                                          config.dims)
        return _unique([
            values for shape in shapes
            for values in context.trials(self.name, shape,
                                         config.validation_compute,
                                         config.validation_seeds)
        ])

    def finish(self, context):
        config = context.config
        groups = {}
        for row in _finished_rows(context.results(self.name)):
            key = _shape_json({f: row[f] for f in SHAPE_FIELDS})
            groups.setdefault(key, []).append(float(row["metric_value"]))
        proposal = context.state.proposals_["validation"]
        own = groups.pop(_shape_json(proposal), [])
        decision = noise.local_optimality(own, groups,
                                          config.validation_alpha)
        context.state.validation_ = {
            "compute_gflops": float(config.validation_compute),
            "proposal": proposal,
            "proposal_value": noise.summarize(own)["mean"] if own else None,
            "proposal_values": own,
            "neighbour_values": {k: float(np.mean(v))
                                 for k, v in groups.items()},
            "neighbour_replicates": groups,
            **decision,
        }
        if decision["locally_optimal"] is False:
            logger.warning(
                "ShapeOracle: a neighbour of the proposal is significantly "
                "better at %g GFLOPs (alpha %g): %s",
                config.validation_compute, config.validation_alpha,
                decision["better"],
            )
        return True


@register_phase
class Final(Phase):
    """Each final role trained at the target compute, `final_seeds` times.

    Roles (`config.final_trials`): the proposal, the "control" (a standard
    ViT of the proposal's per-example compute), the "standard" ViT chosen
    without the proposal (`ShapeGrid.standard`) and "x0". `finish` writes
    each role's mean ± standard error over seeds (`state.final_`) and the
    proposal's verdict against the baselines (`state.verdict_`).
    """

    name = PhaseName.FINAL.value

    def active(self, context):
        return bool(context.config.final_trials)

    def plan(self, context):
        config = context.config
        return _unique([
            values for role in config.final_trials
            for values in context.trials(self.name, _role_shape(context, role),
                                         config.target_compute,
                                         config.final_seeds)
        ])

    def finish(self, context):
        rows = context.results(self.name)
        metrics = context.trial_metrics(self.name)
        final = [_final_entry(context, role, rows, metrics)
                 for role in context.config.final_trials]
        context.state.final_ = plain(final)
        context.state.verdict_ = plain(_verdict(final))
        return True


def set_proposals(context, target, base_shape, base_compute):
    """`state.proposals_`: the target and the baselines the final trials
    ask for ("control": the standard ViT of the target's per-example
    compute; "standard": the standard-aspect ViT chosen from x0 and t0
    alone, see `ShapeGrid.standard`)."""
    config, grid = context.config, context.shape_grid
    proposals_ = {"target": target.to_dict()}
    if "control" in config.final_trials:
        proposals_["control"] = grid.control(target).to_dict()
    if "standard" in config.final_trials:
        proposals_["standard"] = grid.standard(
            base_shape, base_compute, config.target_compute).to_dict()
    context.state.proposals_ = proposals_


def _role_shape(context, role):
    if role == "x0":
        return ShapeSpec.from_dict(context.state.base_shape_)
    return context.proposal("target" if role == "proposal" else role)


def _final_entry(context, role, rows, metrics):
    shape = _role_shape(context, role).to_dict()
    target = context.config.target_compute
    # Each trial's finished value at its largest compute: a run reports
    # the compute its whole steps bought, a little under the target.
    values = [row["metric_value"] for row in _finished_rows(rows)
              if {f: row[f] for f in SHAPE_FIELDS} == shape]
    mine = [m for m in metrics
            if {f: m["values"][f] for f in SHAPE_FIELDS} == shape]
    errors = [m["test_error"] for m in mine if "test_error" in m]
    summary = noise.summarize(values) if values else {
        "mean": None, "se": None, "n": 0}
    return {
        "role": role,
        "shape": shape,
        "compute_gflops": target,
        "seeds": sorted(int(m["values"].get(SEED_HP, 0)) for m in mine),
        "values": values,
        "objective_mean": summary["mean"],
        "objective_se": summary["se"],
        "test_accuracy_mean": 1.0 - float(np.mean(errors)) if errors
        else None,
    }


def _verdict(final):
    """The proposal against each baseline (Welch, 5%)."""
    by_role = {entry["role"]: entry for entry in final}
    proposal = by_role.get("proposal")
    out = {}
    for role in ("standard", "control", "x0"):
        if proposal is None or role not in by_role:
            continue
        out[role] = noise.compare(proposal["values"], by_role[role]["values"])
    main = next((out[r] for r in ("standard", "control", "x0") if r in out),
                None)
    out["verdict"] = None if main is None else main["verdict"]
    return out


def _signal(context, c_floor):
    """The signal gate's measurements and checks (see `SignalGate`)."""
    config, state = context.config, context.state
    center = config.star_center.to_dict()
    rows = [r for r in context.results(PhaseName.STAR.value)
            if {f: r[f] for f in SHAPE_FIELDS} == center]
    budgets = sorted(noise.replicate_summaries(rows).items(),
                     key=lambda item: item[0][-1])
    budgets = [dict(summary, compute_gflops=key[-1])
               for key, summary in budgets]
    untrained = _untrained(context)
    fit = None if state.star_fit_ is None else star_lib.StarSweepFit.from_dict(
        state.star_fit_)
    c_interval = None if fit is None else fit.c_interval
    checks = {
        "budget": None if len(budgets) < 2 else noise.clearly_lower(
            budgets[-1], budgets[0]),
        "trained": None if untrained is None or not budgets
        else noise.clearly_lower(budgets[-1], untrained),
        "c": None if c_interval is None else bool(c_interval[0] > c_floor),
    }
    return {
        "untrained_objective": untrained,
        "center": budgets,
        "c": None if fit is None else fit.c,
        "c_interval": c_interval,
        "checks": checks,
        "passed": False if False in checks.values() else True,
        "advice": [_ADVICE[k] for k, ok in checks.items() if ok is False],
    }


_ADVICE = {
    "budget": "the centre does not improve with compute beyond its noise: "
    "raise the star budgets (largest / smallest >= 4), add replicates, or "
    "use a lower-noise objective such as val_loss",
    "trained": "trained networks are no better than untrained ones: use "
    "the small-scale recipe (recipe='small') or larger budgets",
    "c": "the fitted data exponent c is indistinguishable from 0: the "
    "budgets are too close or too small",
}


def _untrained(context):
    name = UNTRAINED_PREFIX + context.config.objective
    values = [m[name] for m in context.trial_metrics(PhaseName.STAR.value)
              if name in m]
    return noise.summarize(values) if values else None


def _observations(context):
    config, state = context.config, context.state
    base = state.base_shape_ or (
        config.base_shape.to_dict() if config.base_shape else None
    )
    star_fit = None
    if state.star_fit_ is not None:
        star_fit = star_lib.StarSweepFit.from_dict(state.star_fit_)
    return proposals.Observations(
        star=context.results(PhaseName.STAR.value),
        sweeps=context.results(PhaseName.STAR.value, PhaseName.GRID.value),
        star_fit=star_fit,
        exponents=state.exponents_ or config.exponents,
        base_shape=ShapeSpec.from_dict(base) if base else None,
        base_compute=state.base_compute_ or config.base_compute,
        star_center=config.star_center,
        dims=config.dims,
        image_size=config.image_size,
        metric_name=config.objective,
        seed=context.seed,
    )


def _check_enough_star_points(results, config, excluded):
    for dim in config.dims:
        rows = [r for r in results
                if _varied_dim(r, config.star_center) == dim]
        xs = {r[dim] for r in rows}
        ts = {round(float(r[COMPUTE_METRIC]), 6) for r in rows}
        if len(rows) < _MIN_POINTS_PER_DIM or len(xs) < 3 or len(ts) < 2:
            raise RuntimeError(
                "ShapeOracle: too few successful star-sweep points to "
                f"fit dimension '{dim}': {len(rows)} points at "
                f"{len(xs)} values and {len(ts)} budgets remain (need "
                f"{_MIN_POINTS_PER_DIM} points, 3 values, 2 budgets). "
                f"Excluded trials: {excluded}"
            )


def _varied_dim(row, center):
    """The one dimension in which a star row differs from the centre."""
    varied = [d for d in SCALED_DIMS if row[d] != getattr(center, d)]
    return varied[0] if len(varied) == 1 else None


def _extended(values, step, direction):
    """`values` with two more (×1.2 apart) above or below the edge."""
    factor = proposals.NEIGHBOUR_FACTOR
    values = sorted(values)
    for _ in range(2):
        if direction == "upward":
            values.append(max(values[-1] + step,
                              round_to_multiple(values[-1] * factor, step)))
        else:
            new = min(values[0] - step,
                      round_to_multiple(values[0] / factor, step))
            if new < step:
                break
            values.insert(0, new)
    return values


def _finished_rows(rows):
    """Each trial's row at its largest compute, by trial id."""
    return largest_compute_rows(rows, key=lambda row: row["trial_id"])


def _unique(entries):
    out = []
    for entry in entries:
        if entry not in out:
            out.append(entry)
    return out


def _shape_json(shape_fields):
    return json.dumps(shape_fields, sort_keys=True)
