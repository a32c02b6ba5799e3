"""`ShapeOracle`: a KerasTuner oracle that follows the SoViT scaling law.

The oracle is a phase machine (star -> grid -> proposal -> validation ->
final -> done); the private modules next to it hold the pieces:
`_checks` (arguments), `_defaults` (`default_plan`), `_observations`
(trial metrics -> results), `_proposals` (snapping, neighbours, method
choice), `_state` (saved configuration) and `_report` (project files).
"""

import json
import logging
import math
import warnings

import keras_tuner
from keras_tuner.engine.trial import TrialStatus

from keras_sovit.scaling import joint as joint_lib
from keras_sovit.scaling import law as law_lib
from keras_sovit.scaling import plan as plan_lib
from keras_sovit.shapes import SHAPE_FIELDS
from keras_sovit.shapes import ShapeSpec
from keras_sovit._validation import check_choice
from keras_sovit._validation import check_positive_number
from keras_sovit._validation import image_hw
from keras_sovit.tuner import _checks
from keras_sovit.tuner import _proposals
from keras_sovit.tuner import _report
from keras_sovit.tuner import _state
from keras_sovit.tuner._common import COMPUTE_METRIC
from keras_sovit.tuner._common import DIMS
from keras_sovit.tuner._common import FINAL_TRIALS
from keras_sovit.tuner._common import NEIGHBOUR_FACTOR
from keras_sovit.tuner._common import PHASE_HP
from keras_sovit.tuner._common import PHASES
from keras_sovit.tuner._common import PROPOSAL_METHODS
from keras_sovit.tuner._common import TRIAL_HP_NAMES
from keras_sovit.tuner._common import checkpoint_metric_name  # noqa: F401
from keras_sovit.tuner._common import plain
from keras_sovit.tuner._common import snap
from keras_sovit.tuner._common import trial_values_key
from keras_sovit.tuner._defaults import default_plan
from keras_sovit.tuner._observations import collect_results

logger = logging.getLogger(__name__)

# Fewest successful star runs per dimension that the Eq. (2) fit accepts.
_MIN_POINTS_PER_DIM = 7
# Upper ends of the declared Int grids of the shape dimensions.
_DIM_LIMITS = {"width": 1 << 16, "depth": 1 << 12, "mlp_dim": 1 << 18}


class ShapeOracle(keras_tuner.Oracle):
    """Searches the compute-optimal ViT shape by the paper's scaling law.

    The oracle runs the procedure of "Getting ViT in Shape" as a sequence
    of KerasTuner trials: a star sweep (one shape dimension varied at a
    time below a large centre, at several compute budgets), a fit of the
    per-dimension law of Eq. (2) that gives the scaling exponents, a grid
    sweep that finds a small compute-optimal shape `x0`, a proposal for
    `target_compute`, optional validation trials, and the final trial(s).

    Every trial carries its shape (`width`, `depth`, `mlp_dim`,
    `num_heads`, `patch_size`), its compute budget `compute_gflops` (GFLOPs
    in the paper's sense: examples seen × forward GFLOPs per example) and
    its `phase` as hyperparameters, declared by the oracle on grids of
    Python ints and floats. The hypermodel (e.g.
    `keras_sovit.tuner.SoViTHyperModel`) must read all of them and report
    the objective; to give the fit extra budgets for free it may report the
    objective at several compute checkpoints, either as metric history
    (several `update_trial` steps, each with a `compute_gflops` metric) or
    as metrics named by `checkpoint_metric_name`. Failed trials and NaN
    values are left out of the fits (see `excluded_trials`); the search
    raises a `RuntimeError` when too few points remain.

    Several workers may run trials of one phase in parallel; the oracle
    answers IDLE while a phase waits for running trials. All state (phase,
    plans, fitted law, proposals) is saved with the project, so re-running
    with `overwrite=False` continues where it stopped. On resume, the
    plan-defining arguments (objective, budgets, grids, centre, exponents,
    base shape, rounding, proposal method, validation and final trials,
    image size) must equal the saved ones, or a `ValueError` asks for
    `overwrite=True` or a new project; the other arguments (retries,
    failure limits) follow the constructor.

    Defaults are the paper's sweeps scaled down to the target (documented
    in `default_plan`). The proposal is written to `<project>/
    shape_report.json` with the sweep results (`sweep_results.csv`) and
    plots.

    Args:
        objective: `keras_tuner.Objective` or str. A loss-like metric to
            minimise, e.g. `keras_tuner.Objective("fewshot_10shot_error",
            "min")`.
        target_compute: float. GFLOPs of the final training run.
        star_center: `ShapeSpec`, dict, or `None`. Centre of the star
            sweep; its `num_heads` and `patch_size` are kept by all sweep
            shapes.
        star_grids: dict or `None`. Values per dimension, each below the
            centre's value.
        star_budgets: list of floats or `None`. Compute budgets of the star
            sweep, at least two.
        grid: dict or `None`. Values per dimension of the grid sweep.
        grid_budget: float or `None`. Compute budget of the grid sweep.
        exponents: dict or `None`. Scaling exponents per dimension; given,
            the star sweep is skipped (e.g. the paper's 0.22/0.45/0.6).
        base_shape: `ShapeSpec`, dict, or `None`. A small compute-optimal
            shape; given with `base_compute`, the grid sweep is skipped.
        base_compute: float or `None`. The compute `base_shape` is optimal
            for.
        rounding: `keras_sovit.plan_lib.Rounding` or `None`. How proposed
            shapes are rounded; defaults to multiples of 16.
        final_trials: tuple of `"proposal"` and/or `"control"`. The final
            trials at `target_compute`: the proposed shape and a standard
            ViT (MLP = 4 × width) of equal per-example and total compute.
        proposal_method: `"paper"` (joint scaling τ^(s_k/D) from x0; a
            fitted s_k outside [0, 1] is capped, with a warning),
            `"joint"` (optimum of a joint law under the exact FLOP
            constraint) or `"auto"`: both the per-dimension laws and the
            joint law are refitted without each star shape's largest-budget
            run and scored on those runs (mean relative error); the joint
            law is used unless its error exceeds 1.5 × the per-dimension
            error + 0.005. The star runs lie on the axes and cannot show how
            dimensions interact, which only the joint law models, so near
            ties go to it. A joint optimum on the search bound (the law
            keeps improving without limit: it extrapolates) falls back to
            the paper's rule. `method` and `report()` say what was chosen.
        validation_trials: bool. Whether to train the proposal for
            `validation_compute` and its neighbours (each dimension ×1.2 and
            ÷1.2 at equal compute, the paper's Fig. 6) and report whether
            it is locally optimal.
        validation_compute: float or `None`. Compute of the validation
            trials; defaults to the geometric mean of the largest sweep
            budget and `target_compute`.
        image_size: int or `(height, width)`. Image size used for compute.
        n_bootstrap: int. Bootstrap resamples of the star-sweep fit.
        max_grid_extensions: int. How often the grid may be extended (by
            two values, ×1.2 apart, beyond the edge) when its optimum lies
            on the boundary, as the paper requires an interior optimum.
        seed: int or `None`. Random seed (also of the fits).
        max_retries_per_trial: int. Retries of a crashed trial.
        max_consecutive_failed_trials: int. Failures in a row that abort.

    Example:

    ```python
    oracle = keras_sovit.tuner.ShapeOracle(
        objective=keras_tuner.Objective("fewshot_10shot_error", "min"),
        target_compute=2e4,
        star_center=keras_sovit.ShapeSpec(64, 6, 256, 4, patch_size=4),
        star_grids={"width": [16, 32, 48], "depth": [2, 3, 4],
                    "mlp_dim": [64, 96, 128]},
        star_budgets=[100.0, 200.0, 400.0],
        grid={"width": [16, 32, 48], "depth": [1, 2, 3],
              "mlp_dim": [32, 64, 96]},
        grid_budget=50.0,
        image_size=32,
    )
    tuner = keras_tuner.Tuner(
        oracle=oracle,
        hypermodel=keras_sovit.tuner.SoViTHyperModel(
            num_classes=10, image_shape=(32, 32, 3)
        ),
        directory="/tmp/shape_search",
    )
    ```
    """

    def __init__(
        self,
        objective,
        target_compute,
        star_center=None,
        star_grids=None,
        star_budgets=None,
        grid=None,
        grid_budget=None,
        exponents=None,
        base_shape=None,
        base_compute=None,
        rounding=None,
        final_trials=("proposal",),
        proposal_method="auto",
        validation_trials=False,
        validation_compute=None,
        image_size=224,
        n_bootstrap=200,
        max_grid_extensions=8,
        seed=None,
        max_retries_per_trial=0,
        max_consecutive_failed_trials=3,
    ):
        objective = _checks.check_objective(objective)
        self.target_compute = check_positive_number(
            "target_compute", target_compute
        )
        self.image_size = image_hw(image_size)
        self.rounding = rounding or plan_lib.Rounding()
        self.proposal_method = check_choice(
            "proposal_method", proposal_method, PROPOSAL_METHODS
        )
        self.final_trials = tuple(final_trials)
        for name in self.final_trials:
            check_choice("final_trials", name, FINAL_TRIALS)
        self.n_bootstrap = int(n_bootstrap)
        self.max_grid_extensions = int(max_grid_extensions)
        self.validation_trials = bool(validation_trials)
        self._set_sweeps(
            star_center, star_grids, star_budgets, grid, grid_budget,
            exponents, base_shape, base_compute,
        )
        self.validation_compute = None
        if self.validation_trials:
            self.validation_compute = check_positive_number(
                "validation_compute",
                validation_compute or self._default_validation_compute(),
            )
        self._check_configuration()
        self._config = _state.search_config(self, objective)
        self._steps = self._grid_steps()
        super().__init__(
            objective=objective,
            max_trials=None,
            hyperparameters=self._declare_hyperparameters(),
            seed=seed,
            max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials,
        )
        self._phase = self._first_phase()
        self._plans = {}
        if self.run_star:
            self._plans["star"] = self._star_plan()
        if self.run_grid:
            self._plans["grid"] = self._grid_plan()
        self._grid_extensions = 0
        self._fit_state = None
        self.fit_result = None
        self._method = None
        self._holdout_errors = {}
        self._joint_form = None
        self._joint_cache = None
        self._proposals = {}
        self.validation = None
        self.excluded_trials = {}
        self._space_checked = False

    def _set_sweeps(self, star_center, star_grids, star_budgets, grid,
                    grid_budget, exponents, base_shape, base_compute):
        """Sets the sweep settings: the arguments, else `default_plan`'s."""
        star_center = _checks.optional_shape("star_center", star_center)
        defaults = default_plan(
            self.target_compute, self.image_size, self.rounding, star_center
        )
        self.run_star = exponents is None
        self.run_grid = base_shape is None
        if base_shape is not None and base_compute is None:
            raise ValueError(
                "`base_compute` must be given with `base_shape`. Received: "
                "base_compute=None"
            )
        self.star_center = star_center or defaults["star_center"]
        self.base_shape = _checks.optional_shape("base_shape", base_shape)
        self.base_compute = _checks.optional_positive_float(
            "base_compute", base_compute
        )
        self.exponents = None
        if exponents is not None:
            self.exponents = _checks.check_exponents(exponents)
        self.star_grids = _checks.check_grids(
            "star_grids", star_grids or defaults["star_grids"]
        )
        dims_given = self.star_grids if exponents is None else self.exponents
        self.dims = tuple(d for d in DIMS if d in dims_given)
        self.star_budgets = sorted(
            check_positive_number("star_budgets", b)
            for b in (star_budgets or defaults["star_budgets"])
        )
        self.grid = _checks.check_grids("grid", grid or defaults["grid"])
        self.grid_budget = check_positive_number(
            "grid_budget", grid_budget or defaults["grid_budget"]
        )

    # ------------------------------------------------------------------
    # Public results.

    @property
    def phase(self):
        """The current phase: star, grid, validation, final or done."""
        return self._phase

    @property
    def proposal(self):
        """The proposed `ShapeSpec` for `target_compute`, or `None`."""
        return self._proposed_shape("target")

    @property
    def control(self):
        """The standard-shaped ViT of equal compute, or `None`."""
        return self._proposed_shape("control")

    @property
    def compute_spent(self):
        """GFLOPs of the budgets of all completed trials (for progress)."""
        return float(sum(
            t.hyperparameters.values[COMPUTE_METRIC]
            for t in self.trials.values()
            if t.status == TrialStatus.COMPLETED
        ))

    @property
    def method(self):
        """The proposal method used ("paper" or "joint"), once chosen."""
        return self._method

    def results(self, phase=None):
        """All observations as a `keras_sovit.SweepResults`.

        Args:
            phase: str or `None`. Only rows of trials of this phase.
        """
        return self._collect_results(
            None if phase is None else (phase,)
        )

    def report(self):
        """A JSON-safe summary: fit, base shape, proposals, validation."""
        intervals = None
        if self.fit_result is not None:
            intervals = {
                d: list(v) for d, v in self.fit_result.intervals.items()
            }
        return plain({
            "phase": self._phase,
            "config": self._config,
            "exponents": self.exponents,
            "intervals": intervals,
            "base_shape": _state.shape_dict(self.base_shape),
            "base_compute": self.base_compute,
            "method": self._method,
            "holdout_errors": self._holdout_errors,
            "proposal": self._proposals.get("target"),
            "control": self._proposals.get("control"),
            "validation": self.validation,
            "final_results": _report.final_scores(self.trials),
            "excluded_trials": self.excluded_trials,
        })

    def _proposed_shape(self, key):
        values = self._proposals.get(key)
        return None if values is None else ShapeSpec.from_dict(values)

    # ------------------------------------------------------------------
    # The KerasTuner Oracle contract.

    def populate_space(self, trial_id):
        while True:
            if self._phase == "done":
                return {"status": TrialStatus.STOPPED, "values": None}
            if self._phase not in self._plans:
                self._plans[self._phase] = self._late_plan(self._phase)
            values = self._next_values(self._phase)
            if values is not None:
                return {"status": TrialStatus.RUNNING, "values": values}
            if self._pending(self._phase):
                return {"status": TrialStatus.IDLE, "values": None}
            self._finish_phase(self._phase)

    def score_trial(self, trial):
        """Scores a trial by its objective at the full budget (last step)."""
        last = trial.metrics.get_history(self.objective.name)[-1]
        trial.score = float(last.mean())
        trial.best_step = last.step

    def update_space(self, hyperparameters):
        names = {hp.name for hp in hyperparameters.space}
        if names and not self._space_checked:
            missing = [n for n in TRIAL_HP_NAMES if n not in names]
            if missing:
                raise ValueError(
                    "The hypermodel must declare every hyperparameter the "
                    f"ShapeOracle sets; it does not declare {missing}. "
                    f"Received: declared={sorted(names)}"
                )
            self._space_checked = True
        super().update_space(hyperparameters)

    def get_space(self):
        """Returns the search space.

        Until a hypermodel has declared its hyperparameters (checked in
        `update_space`), the oracle's own shape and compute entries are left
        out so that a hypermodel missing one can be detected.
        """
        space = super().get_space()
        if self._space_checked:
            return space
        hps = keras_tuner.HyperParameters()
        hps.merge([hp for hp in space.space if hp.name not in TRIAL_HP_NAMES])
        return hps

    def get_state(self):
        state = super().get_state()
        state["shape_oracle"] = {
            "config": self._config,
            "phase": self._phase,
            "plans": self._plans,
            "grid": {k: list(v) for k, v in self.grid.items()},
            "grid_extensions": self._grid_extensions,
            "fit": self._fit_state,
            "exponents": self.exponents,
            "base_shape": _state.shape_dict(self.base_shape),
            "base_compute": self.base_compute,
            "method": self._method,
            "holdout_errors": self._holdout_errors,
            "joint_form": self._joint_form,
            "proposals": self._proposals,
            "validation": self.validation,
            "excluded_trials": self.excluded_trials,
            "space_checked": self._space_checked,
        }
        return state

    def set_state(self, state):
        super().set_state(state)
        saved = state["shape_oracle"]
        _state.check_resume(saved["config"], self._config)
        self._phase = saved["phase"]
        self._plans = saved["plans"]
        self.grid = {k: list(v) for k, v in saved["grid"].items()}
        self._grid_extensions = saved["grid_extensions"]
        self._fit_state = saved["fit"]
        self.fit_result = None
        if self._fit_state is not None:
            self.fit_result = law_lib.StarSweepFit.from_dict(self._fit_state)
        self.exponents = saved["exponents"]
        base = saved["base_shape"]
        self.base_shape = None if base is None else ShapeSpec.from_dict(base)
        self.base_compute = saved["base_compute"]
        self._method = saved["method"]
        self._holdout_errors = saved["holdout_errors"]
        self._joint_form = saved["joint_form"]
        self._proposals = saved["proposals"]
        self.validation = saved["validation"]
        self.excluded_trials = saved["excluded_trials"]
        self._space_checked = saved["space_checked"]

    # ------------------------------------------------------------------
    # The phase machine.

    def _first_phase(self):
        if self.run_star:
            return "star"
        if self.run_grid:
            return "grid"
        return self._after_sweeps()

    def _after_sweeps(self):
        if self.validation_trials:
            return "validation"
        if self.final_trials:
            return "final"
        return "done"

    def _finish_phase(self, phase):
        if phase == "star":
            self._fit_star()
            self._phase = "grid" if self.run_grid else "proposal"
        elif phase == "grid":
            if not self._finish_grid():
                return
            self._phase = "proposal"
        elif phase == "validation":
            self._report_validation()
            self._phase = "final" if self.final_trials else "done"
        elif phase == "final":
            self._phase = "done"
            self._write_report()
        if self._phase == "proposal":
            self._propose()
            self._phase = self._after_sweeps()
            self._write_report()

    def _next_values(self, phase):
        """The first planned trial of `phase` that was not started yet."""
        started = {trial_values_key(t.hyperparameters.values)
                   for t in self.trials.values()}
        for values in self._plans[phase]:
            if trial_values_key(values) not in started:
                return dict(values)
        return None

    def _pending(self, phase):
        """Whether a trial of `phase` is still running."""
        return any(
            trial.hyperparameters.values.get(PHASE_HP) == phase
            and trial.status not in (TrialStatus.COMPLETED, TrialStatus.FAILED)
            for trial in self.trials.values()
        )

    # ------------------------------------------------------------------
    # Plans.

    def _star_plan(self):
        return [self._entry("star", s, c) for s, c in self._star_sweep()]

    def _grid_plan(self):
        return [self._entry("grid", s, c) for s, c in self._grid_sweep()]

    def _star_sweep(self):
        return plan_lib.star_sweep_plan(
            self.star_center, self.star_grids, self.star_budgets
        )

    def _grid_sweep(self):
        return plan_lib.grid_sweep_plan(
            self.grid, self.grid_budget, self._template()
        )

    def _late_plan(self, phase):
        """Plans of the phases after the proposal: validation and final."""
        if "target" not in self._proposals:
            self._propose()
        if phase == "validation":
            return self._validation_plan()
        if phase == "final":
            return self._final_plan()
        raise RuntimeError(f"No plan for phase {phase!r}.")

    def _validation_plan(self):
        center = ShapeSpec.from_dict(self._proposals["validation"])
        shapes = [center] + self._shape_grid().neighbours(center, self.dims)
        return self._unique_entries("validation", shapes,
                                    self.validation_compute)

    def _final_plan(self):
        keys = {"proposal": "target", "control": "control"}
        shapes = [ShapeSpec.from_dict(self._proposals[keys[name]])
                  for name in self.final_trials]
        return self._unique_entries("final", shapes, self.target_compute)

    def _unique_entries(self, phase, shapes, compute):
        plan = []
        for shape in shapes:
            entry = self._entry(phase, shape, compute)
            if entry not in plan:
                plan.append(entry)
        return plan

    def _entry(self, phase, shape, compute):
        values = {f: int(getattr(shape, f)) for f in SHAPE_FIELDS}
        values[COMPUTE_METRIC] = float(compute)
        values[PHASE_HP] = str(phase)
        return values

    # ------------------------------------------------------------------
    # Configuration.

    def _template(self):
        return self.base_shape or self.star_center

    def _sweep_budgets(self):
        budgets = []
        if self.run_star:
            budgets += list(self.star_budgets)
        if self.run_grid:
            budgets.append(self.grid_budget)
        return budgets

    def _default_validation_compute(self):
        largest = max(self._sweep_budgets() or [self.target_compute / 10])
        return math.sqrt(largest * self.target_compute)

    def _check_configuration(self):
        if self.run_star:
            _checks.check_star_sweep(
                self.star_center, self.star_grids, self.star_budgets
            )
        if self.run_grid:
            for dim in self.grid:
                check_choice("grid", dim, DIMS)
        if not self.run_star and self.proposal_method == "joint":
            raise ValueError(
                "`proposal_method='joint'` needs the star sweep; it is "
                "skipped because `exponents` is given. Received: "
                "proposal_method='joint'"
            )
        budgets = self._sweep_budgets()
        if self.validation_compute is not None:
            budgets.append(self.validation_compute)
        if self.base_compute is not None:
            budgets.append(self.base_compute)
        if budgets and self.target_compute <= max(budgets):
            raise ValueError(
                "`target_compute` must exceed every sweep and validation "
                f"budget (largest {max(budgets)}). Received: "
                f"target_compute={self.target_compute}"
            )
        for shape in self._all_sweep_shapes():
            shape.gflops(self.image_size)  # Raises on a bad patch size.

    def _all_sweep_shapes(self):
        shapes = [self.star_center]
        if self.run_star:
            shapes += [s for s, _ in self._star_sweep()]
        if self.run_grid:
            shapes += [s for s, _ in self._grid_sweep()]
        if self.base_shape is not None:
            shapes.append(self.base_shape)
        return shapes

    def _declare_hyperparameters(self):
        hp = keras_tuner.HyperParameters()
        default = self._smallest_shape()
        for dim in DIMS:
            step = self._steps[dim]
            hp.Int(
                dim, step, snap(_DIM_LIMITS[dim], step), step=step,
                default=int(getattr(default, dim)),
            )
        hp.Int("num_heads", 1, 1024, default=default.num_heads)
        patch = self._template().patch_size
        hp.Choice("patch_size", [patch], default=patch)
        budgets = self._sweep_budgets() + [self.target_compute]
        if self.validation_compute is not None:
            budgets.append(self.validation_compute)
        low = min(budgets)
        if low >= self.target_compute:
            low = self.target_compute / 2
        hp.Float(
            COMPUTE_METRIC, float(low), float(self.target_compute),
            sampling="log", default=float(low),
        )
        hp.Choice(PHASE_HP, list(PHASES), default=self._first_phase())
        return hp

    def _grid_steps(self):
        """Steps of the declared Int grids: every planned value fits."""
        steps = {
            "width": int(self.rounding.width_multiple),
            "depth": int(self.rounding.depth_multiple),
            "mlp_dim": int(self.rounding.mlp_multiple),
        }
        for shape in self._all_sweep_shapes():
            for dim in DIMS:
                steps[dim] = math.gcd(steps[dim], getattr(shape, dim))
        return steps

    def _smallest_shape(self):
        shapes = []
        if self.run_grid:
            shapes = [s for s, _ in self._grid_sweep()]
        elif self.run_star:
            shapes = [s for s, _ in self._star_sweep()]
        shapes = shapes or [self._template()]
        return min(shapes, key=lambda s: s.gflops(self.image_size))

    def _shape_grid(self):
        return _proposals.ShapeGrid(
            self.rounding, self._steps, self._template(), self.image_size
        )

    def _fit_seed(self):
        return int(self.seed) % (2**31)

    # ------------------------------------------------------------------
    # Observations and fits.

    def _collect_results(self, phases=None):
        return collect_results(
            self.trials, self.objective.name, self.image_size, phases,
            self._exclude,
        )

    def _exclude(self, trial_id, reason):
        if trial_id not in self.excluded_trials:
            logger.warning(
                "ShapeOracle: trial %s is left out of the fit (%s).",
                trial_id, reason,
            )
            self.excluded_trials[trial_id] = reason

    def _fit_star(self):
        results = self._collect_results(("star",))
        self._check_enough_star_points(results)
        fit = law_lib.fit_star_sweep(
            results,
            self.star_center,
            dims=self.dims,
            n_bootstrap=self.n_bootstrap,
            random_state=self._fit_seed(),
            metric_name=self.objective.name,
        )
        self.fit_result = fit
        self._fit_state = plain(fit.to_dict())
        self.exponents = {d: float(s) for d, s in fit.exponents.items()}

    def _check_enough_star_points(self, results):
        for dim in self.dims:
            rows = [r for r in results
                    if _varied_dim(r, self.star_center) == dim]
            xs = {r[dim] for r in rows}
            ts = {round(float(r["compute_gflops"]), 6) for r in rows}
            if (len(rows) < _MIN_POINTS_PER_DIM or len(xs) < 3
                    or len(ts) < 2):
                raise RuntimeError(
                    "ShapeOracle: too few successful star-sweep points to "
                    f"fit dimension '{dim}': {len(rows)} points at "
                    f"{len(xs)} values and {len(ts)} budgets remain (need "
                    f"{_MIN_POINTS_PER_DIM} points, 3 values, 2 budgets). "
                    f"Excluded trials: {self.excluded_trials}"
                )

    def _finish_grid(self):
        """Selects x0 and t0, or extends the grid if x0 is on its edge."""
        results = self._collect_results(("grid",))
        if not len(results):
            raise RuntimeError(
                "ShapeOracle: no successful grid-sweep trial remains. "
                f"Excluded trials: {self.excluded_trials}"
            )
        try:
            shape, compute = plan_lib.select_grid_optimum(results)
        except plan_lib.GridBoundaryError as error:
            if self._grid_extensions >= self.max_grid_extensions:
                raise RuntimeError(
                    "ShapeOracle: the grid sweep's optimum lies on the "
                    f"boundary after {self._grid_extensions} extensions; "
                    "widen `grid` or raise `max_grid_extensions`. "
                    f"({error})"
                ) from error
            self._extend_grid(error.dim, error.direction)
            return False
        self.base_shape = shape
        self.base_compute = float(compute)
        return True

    def _extend_grid(self, dim, direction):
        """Adds two values (×1.2 apart) beyond the edge the optimum is on."""
        values = _extended_values(self.grid[dim], self._steps[dim], direction)
        if len(values) == len(self.grid[dim]):
            raise RuntimeError(
                f"ShapeOracle: the grid optimum wants {dim} below "
                f"{values[0]}, the smallest value on the grid."
            )
        self.grid = dict(self.grid, **{dim: values})
        self._grid_extensions += 1
        known = {trial_values_key(v) for v in self._plans["grid"]}
        for values in self._grid_plan():
            if trial_values_key(values) not in known:
                self._plans["grid"].append(values)
        logger.info("ShapeOracle: grid extended to %s.", self.grid)

    # ------------------------------------------------------------------
    # Proposals.

    def _propose(self):
        method = self.proposal_method
        if method == "auto":
            method = self._choose_method()
        self._method = method
        target = self._shape_for(self.target_compute)
        self._proposals["target"] = target.to_dict()
        if "control" in self.final_trials:
            control = self._shape_grid().control(target)
            self._proposals["control"] = control.to_dict()
        if self.validation_compute is not None:
            self._proposals["validation"] = self._shape_for(
                self.validation_compute
            ).to_dict()

    def _choose_method(self):
        if not self.run_star:
            return "paper"
        self._compare_on_holdout()
        if not _proposals.prefers_joint(self._holdout_errors):
            return "paper"
        with warnings.catch_warnings():
            # A bound hit is handled here, not reported as a warning.
            warnings.simplefilter("ignore", RuntimeWarning)
            shape = self._joint_shape(self.target_compute)
        unbounded = joint_lib.on_search_bound(shape, rounding=self.rounding)
        if unbounded:
            logger.warning(
                "ShapeOracle: the joint law has no interior optimum at the "
                "target compute (%s on the search bound); using the paper's "
                "rule instead.", ", ".join(unbounded),
            )
            return "paper"
        return "joint"

    def _compare_on_holdout(self):
        star = self._collect_results(("star",))
        sweeps = self._collect_results(("star", "grid"))
        self._holdout_errors = _proposals.holdout_errors(
            star, sweeps, self.star_center, self.dims, self.image_size,
            self._fit_seed(), self.objective.name,
        )
        self._joint_form = _proposals.best_joint_form(self._holdout_errors)

    def _shape_for(self, compute):
        if self._method == "joint":
            shape = self._joint_shape(compute)
        else:
            shape = plan_lib.scale_shape(
                self.base_shape, self.base_compute, compute,
                self._scaling_exponents(), rounding=self.rounding,
            )
        return self._shape_grid().snap_shape(shape)

    def _scaling_exponents(self):
        """The exponents of the paper's rule, capped at 1.

        A dimension growing faster than compute (s_k > 1) would make every
        example cost more than the budget grows, so the model would see
        fewer examples as compute grows: a fit that says so is noise.
        """
        exponents = {}
        for dim in self.dims:
            value = float(self.exponents[dim])
            if not 0.0 <= value <= 1.0:
                logger.warning(
                    "ShapeOracle: fitted exponent s_%s = %.3g is outside "
                    "[0, 1]; the paper's rule uses %g.", dim, value,
                    min(max(value, 0.0), 1.0),
                )
            exponents[dim] = min(max(value, 0.0), 1.0)
        return exponents

    def _joint_shape(self, compute):
        return joint_lib.optimal_shape(
            self._joint_law(), compute, image_size=self.image_size,
            rounding=self.rounding, template=self._template(),
        )

    def _joint_law(self):
        """The joint law fitted on every star and grid run (cached)."""
        if self._joint_cache is None:
            if self._joint_form is None:
                self._compare_on_holdout()
            self._joint_cache = _proposals.fit_joint_law(
                self._joint_form, self._collect_results(("star", "grid")),
                self.image_size, self._fit_seed(),
            )
        return self._joint_cache

    # ------------------------------------------------------------------
    # Validation and reports.

    def _report_validation(self):
        compute = self.validation_compute
        scores = {}
        for row in self._collect_results(("validation",)):
            if math.isclose(float(row["compute_gflops"]), compute,
                            rel_tol=1e-6):
                key = _shape_json({f: row[f] for f in SHAPE_FIELDS})
                scores[key] = float(row["metric_value"])
        proposal = self._proposals["validation"]
        own = scores.get(_shape_json(proposal))
        others = [v for k, v in scores.items() if k != _shape_json(proposal)]
        locally_optimal = None
        if own is not None and others:
            locally_optimal = bool(own <= min(others))
        self.validation = {
            "compute_gflops": float(compute),
            "proposal": proposal,
            "proposal_value": own,
            "neighbour_values": scores,
            "locally_optimal": locally_optimal,
        }
        if locally_optimal is False:
            logger.warning(
                "ShapeOracle: the proposal is not locally optimal at %g "
                "GFLOPs: %s", compute, self.validation,
            )

    def _write_report(self):
        if getattr(self, "_directory", None) is None:
            return
        _report.write_project_files(
            self._project_dir, self.report(), self._collect_results(), self
        )


def _varied_dim(row, center):
    """The one dimension in which a star row differs from the centre."""
    varied = [d for d in DIMS if row[d] != getattr(center, d)]
    return varied[0] if len(varied) == 1 else None


def _extended_values(values, step, direction):
    """`values` with two more (×1.2 apart) above or below the edge."""
    values = sorted(values)
    for _ in range(2):
        if direction == "upward":
            values.append(max(
                values[-1] + step, snap(values[-1] * NEIGHBOUR_FACTOR, step)
            ))
        else:
            new = min(values[0] - step,
                      snap(values[0] / NEIGHBOUR_FACTOR, step))
            if new < step:
                break
            values.insert(0, new)
    return values


def _shape_json(shape_fields):
    return json.dumps(shape_fields, sort_keys=True)


class ShapeSearch(keras_tuner.Tuner):
    """A `keras_tuner.Tuner` whose trials follow the SoViT scaling law.

    A thin convenience class: it builds a `ShapeOracle` from the oracle
    arguments and passes everything else to `keras_tuner.Tuner` (directory,
    project_name, overwrite, distribution_strategy, ...). After `search`,
    `tuner.oracle.proposal` is the compute-optimal shape for
    `target_compute` and `tuner.oracle.fit_result` the fitted law.

    Args:
        hypermodel: `keras_tuner.HyperModel`, e.g.
            `keras_sovit.tuner.SoViTHyperModel`. It must declare the
            oracle's hyperparameters.
        objective: `keras_tuner.Objective` or str. A loss-like metric to
            minimise, e.g. `keras_tuner.Objective("fewshot_10shot_error",
            "min")`.
        target_compute: float. GFLOPs of the final training run.
        star_center: `ShapeSpec`, dict, or `None`. Centre of the star sweep.
        star_grids: dict or `None`. Values per dimension below the centre.
        star_budgets: list of floats or `None`. Star-sweep budgets.
        grid: dict or `None`. Values per dimension of the grid sweep.
        grid_budget: float or `None`. Compute budget of the grid sweep.
        exponents: dict or `None`. Given, the star sweep is skipped.
        base_shape: `ShapeSpec`, dict, or `None`. Given with
            `base_compute`, the grid sweep is skipped.
        base_compute: float or `None`. The compute `base_shape` is optimal
            for.
        rounding: `keras_sovit.scaling.Rounding` or `None`.
        final_trials: tuple of `"proposal"` and/or `"control"`.
        proposal_method: `"paper"`, `"joint"` or `"auto"`.
        validation_trials: bool. Train the proposal's ±20% neighbours.
        validation_compute: float or `None`. Compute of those trials.
        image_size: int or `(height, width)`. Image size used for compute.
        n_bootstrap: int. Bootstrap resamples of the star-sweep fit.
        max_grid_extensions: int. Grid extensions allowed.
        seed: int or `None`. Random seed.
        max_retries_per_trial: int. Retries of a crashed trial.
        max_consecutive_failed_trials: int. Failures in a row that abort.
        **kwargs: arguments of `keras_tuner.Tuner`.

    Example:

    ```python
    tuner = keras_sovit.tuner.ShapeSearch(
        hypermodel=keras_sovit.tuner.SoViTHyperModel(
            num_classes=10, image_shape=(32, 32, 3)
        ),
        objective=keras_tuner.Objective("fewshot_10shot_error", "min"),
        target_compute=2e4,
        exponents={"width": 0.22, "depth": 0.45, "mlp_dim": 0.6},
        grid={"width": [16, 32, 48], "depth": [1, 2, 3],
              "mlp_dim": [32, 64, 96]},
        grid_budget=50.0,
        star_center=keras_sovit.ShapeSpec(64, 6, 256, 4, patch_size=4),
        image_size=32,
        directory="/tmp/shape_search",
        overwrite=True,
    )
    ```
    """

    def __init__(
        self,
        hypermodel=None,
        objective=None,
        target_compute=None,
        star_center=None,
        star_grids=None,
        star_budgets=None,
        grid=None,
        grid_budget=None,
        exponents=None,
        base_shape=None,
        base_compute=None,
        rounding=None,
        final_trials=("proposal",),
        proposal_method="auto",
        validation_trials=False,
        validation_compute=None,
        image_size=224,
        n_bootstrap=200,
        max_grid_extensions=8,
        seed=None,
        max_retries_per_trial=0,
        max_consecutive_failed_trials=3,
        **kwargs,
    ):
        oracle = ShapeOracle(
            objective=objective,
            target_compute=target_compute,
            star_center=star_center,
            star_grids=star_grids,
            star_budgets=star_budgets,
            grid=grid,
            grid_budget=grid_budget,
            exponents=exponents,
            base_shape=base_shape,
            base_compute=base_compute,
            rounding=rounding,
            final_trials=final_trials,
            proposal_method=proposal_method,
            validation_trials=validation_trials,
            validation_compute=validation_compute,
            image_size=image_size,
            n_bootstrap=n_bootstrap,
            max_grid_extensions=max_grid_extensions,
            seed=seed,
            max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials,
        )
        _check_same_images(oracle, hypermodel)
        super().__init__(oracle, hypermodel, **kwargs)


def _check_same_images(oracle, hypermodel):
    """The oracle budgets compute at the size the hypermodel trains at."""
    size = getattr(hypermodel, "image_size", None)
    if size is not None and tuple(size) != tuple(oracle.image_size):
        raise ValueError(
            "`image_size` must match the hypermodel's images, or trials "
            "would be budgeted for another image size. Received: "
            f"image_size={oracle.image_size}, hypermodel image size {size}"
        )
