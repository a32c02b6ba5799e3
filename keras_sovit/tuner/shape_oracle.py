"""`ShapeOracle`: a KerasTuner oracle that follows the SoViT scaling law."""

import json
import logging
import math
import os

import keras_tuner
import numpy as np
from keras_tuner.engine.trial import TrialStatus

from keras_sovit.scaling import joint as joint_lib
from keras_sovit.scaling import plan as plan_lib
from keras_sovit.scaling.results import SweepResults
from keras_sovit.shapes import SHAPE_FIELDS
from keras_sovit.shapes import ShapeSpec
from keras_sovit.shapes import check_choice
from keras_sovit.shapes import image_hw

logger = logging.getLogger(__name__)

PHASES = ("star", "grid", "validation", "final")
COMPUTE_METRIC = "compute_gflops"
PHASE_HP = "phase"
CHECKPOINT_SEPARATOR = "@"
DIMS = ("width", "depth", "mlp_dim")
FINAL_TRIALS = ("proposal", "control")
PROPOSAL_METHODS = ("paper", "joint", "auto")
# Paper reference points (SPEC §2, §3.1): the star centre, its grids as
# fractions of the centre, the grid sweep around x0 = (608, 10, 928), and
# SoViT-400m/14 trained for 9T GFLOPs on 256-token images.
_PAPER_TARGET_GFLOPS = 9e12
_PAPER_TOKENS = 256
_PAPER_CENTER = {"width": 1968, "depth": 40, "mlp_dim": 6144}
_PAPER_STAR = {
    "width": (608, 768, 928, 1088, 1328, 1648),
    "depth": (8, 10, 12, 16, 20, 24),
    "mlp_dim": (1088, 1360, 1728, 2160, 2592, 3072),
}
_PAPER_GRID = {
    "width": (416, 512, 608, 768),
    "depth": (6, 8, 10, 12),
    "mlp_dim": (768, 928, 1088, 1360),
}
_STAR_BUDGET_FRACTIONS = (1 / 256, 1 / 128, 1 / 64)
_GRID_BUDGET_FRACTION = 1 / 1000
_NEIGHBOUR_FACTOR = 1.2
_MIN_POINTS_PER_DIM = 7
# "auto" keeps the joint law unless its held-out error exceeds the
# per-dimension laws' by more than this ratio plus this slack: on-axis star
# runs cannot show how dimensions interact, which only the joint law models.
_AUTO_RATIO = 1.5
_AUTO_SLACK = 0.005
# Constructor arguments that define the plan: on resume they must match the
# saved project (see the class docstring).
_PLAN_KEYS = (
    "objective",
    "target_compute",
    "image_size",
    "star_center",
    "star_grids",
    "star_budgets",
    "grid",
    "grid_budget",
    "exponents",
    "base_shape",
    "base_compute",
    "rounding",
    "final_trials",
    "proposal_method",
    "validation_trials",
    "validation_compute",
    "n_bootstrap",
    "max_grid_extensions",
)


def _law():
    from keras_sovit.scaling import law

    return law


def checkpoint_metric_name(name, index):
    """Name under which a hypermodel reports `name` at checkpoint `index`.

    A `keras_tuner.Tuner` passes only the dictionary returned by
    `HyperModel.fit` to the oracle, so the values at earlier compute
    checkpoints travel as extra metrics `"<name>@<index>"`; the oracle pairs
    `"<objective>@<i>"` with `"compute_gflops@<i>"`.
    """
    return f"{name}{CHECKPOINT_SEPARATOR}{int(index)}"


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
        proposal_method: `"paper"` (joint scaling τ^(s_k/D) from x0),
            `"joint"` (optimum of a joint law under the exact FLOP
            constraint) or `"auto"`: both the per-dimension laws and the
            joint law are refitted without each star shape's largest-budget
            run and scored on those runs (mean relative error); the joint
            law is used unless its error exceeds 1.5 × the per-dimension
            error + 0.005. The star runs lie on the axes and cannot show how
            dimensions interact, which only the joint law models, so near
            ties go to it. `method` and `report()` say what was chosen.
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
        objective = _check_objective(objective)
        target_compute = _check_positive_float(
            "target_compute", target_compute
        )
        self.image_size = image_hw(image_size)
        self.rounding = rounding or plan_lib.Rounding()
        self.proposal_method = check_choice(
            "proposal_method", proposal_method, PROPOSAL_METHODS
        )
        final_trials = tuple(final_trials)
        for name in final_trials:
            check_choice("final_trials", name, FINAL_TRIALS)
        self.final_trials = final_trials
        self.target_compute = target_compute
        self.n_bootstrap = int(n_bootstrap)
        self.max_grid_extensions = int(max_grid_extensions)
        self.validation_trials = bool(validation_trials)

        defaults = default_plan(
            target_compute, self.image_size, self.rounding,
            _as_shape("star_center", star_center),
        )
        self.run_star = exponents is None
        self.run_grid = base_shape is None
        if base_shape is not None and base_compute is None:
            raise ValueError(
                "`base_compute` must be given with `base_shape`. Received: "
                "base_compute=None"
            )
        self.star_center = _as_shape("star_center", star_center) or (
            defaults["star_center"]
        )
        self.base_shape = _as_shape("base_shape", base_shape)
        self.base_compute = (
            None
            if base_compute is None
            else _check_positive_float("base_compute", base_compute)
        )
        self.exponents = None
        if exponents is not None:
            self.exponents = _check_exponents(exponents)
        self.star_grids = _check_grids(
            "star_grids", star_grids or defaults["star_grids"]
        )
        self.dims = tuple(d for d in DIMS if d in self.star_grids)
        if self.exponents is not None:
            self.dims = tuple(d for d in DIMS if d in self.exponents)
        self.star_budgets = sorted(
            _check_positive_float("star_budgets", b)
            for b in (star_budgets or defaults["star_budgets"])
        )
        self.grid = _check_grids("grid", grid or defaults["grid"])
        self.grid_budget = _check_positive_float(
            "grid_budget", grid_budget or defaults["grid_budget"]
        )
        self.validation_compute = None
        if self.validation_trials:
            self.validation_compute = _check_positive_float(
                "validation_compute",
                validation_compute or self._default_validation_compute(),
            )
        self._check_configuration()
        self._config = self._make_config(objective)

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
            self._plans["grid"] = self._grid_plan(self.grid)
        self._grid_extensions = 0
        self._fit_state = None
        self.fit_result = None
        self._method = None
        self._holdout_errors = {}
        self._joint_form = None
        self._proposals = {}
        self.validation = None
        self.excluded_trials = {}
        self._space_checked = False

    # ------------------------------------------------------------------
    # Public results.

    @property
    def phase(self):
        """The current phase: star, grid, validation, final or done."""
        return self._phase

    @property
    def proposal(self):
        """The proposed `ShapeSpec` for `target_compute`, or `None`."""
        values = self._proposals.get("target")
        return None if values is None else ShapeSpec.from_dict(values)

    @property
    def control(self):
        """The standard-shaped ViT of equal compute, or `None`."""
        values = self._proposals.get("control")
        return None if values is None else ShapeSpec.from_dict(values)

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
        return self._collect_results(phases=None if phase is None else
                                     (phase,))

    # ------------------------------------------------------------------
    # The KerasTuner Oracle contract.

    def populate_space(self, trial_id):
        while True:
            if self._phase == "done":
                return {"status": TrialStatus.STOPPED, "values": None}
            if self._phase not in self._plans:
                self._plans[self._phase] = self._make_plan(self._phase)
            values = self._next_values(self._phase)
            if values is not None:
                return {"status": TrialStatus.RUNNING, "values": values}
            if self._pending(self._phase):
                return {"status": TrialStatus.IDLE, "values": None}
            self._finish_phase(self._phase)

    def score_trial(self, trial):
        """Scores a trial by its objective at the full budget (last step)."""
        name = self.objective.name
        history = trial.metrics.get_history(name)
        last = history[-1]
        trial.score = float(last.mean())
        trial.best_step = last.step

    def update_space(self, hyperparameters):
        names = {hp.name for hp in hyperparameters.space}
        if names and not self._space_checked:
            missing = [n for n in self._required_names() if n not in names]
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
        hidden = set(self._required_names())
        hps = keras_tuner.HyperParameters()
        hps.merge([hp for hp in space.space if hp.name not in hidden])
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
            "base_shape": (
                None if self.base_shape is None else self.base_shape.to_dict()
            ),
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
        self._check_resume_config(saved["config"])
        self._phase = saved["phase"]
        self._plans = saved["plans"]
        self.grid = {k: list(v) for k, v in saved["grid"].items()}
        self._grid_extensions = saved["grid_extensions"]
        self._fit_state = saved["fit"]
        self.fit_result = None
        if self._fit_state is not None:
            self.fit_result = _law().StarSweepFit.from_dict(self._fit_state)
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
    # Configuration.

    def _default_validation_compute(self):
        largest = max(self._sweep_budgets() or [self.target_compute / 10])
        return math.sqrt(largest * self.target_compute)

    def _sweep_budgets(self):
        budgets = []
        if self.run_star:
            budgets += list(self.star_budgets)
        if self.run_grid:
            budgets.append(self.grid_budget)
        return budgets

    def _check_configuration(self):
        center = self.star_center
        if self.run_star:
            for dim, values in self.star_grids.items():
                check_choice("star_grids", dim, DIMS)
                limit = getattr(center, dim)
                above = [v for v in values if v >= limit]
                if above:
                    raise ValueError(
                        f"`star_grids['{dim}']` must lie below the star "
                        f"centre's {dim}={limit}. Received: "
                        f"star_grids['{dim}']={list(values)}"
                    )
                if len(set(values)) < 3:
                    raise ValueError(
                        f"`star_grids['{dim}']` needs at least 3 distinct "
                        f"values. Received: star_grids['{dim}']="
                        f"{list(values)}"
                    )
            if len(set(self.star_budgets)) < 2:
                raise ValueError(
                    "`star_budgets` needs at least 2 distinct budgets. "
                    f"Received: star_budgets={self.star_budgets}"
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
            shapes += [s for s, _ in plan_lib.star_sweep_plan(
                self.star_center, self.star_grids, self.star_budgets
            )]
        if self.run_grid:
            shapes += [s for s, _ in plan_lib.grid_sweep_plan(
                self.grid, self.grid_budget, self._template()
            )]
        if self.base_shape is not None:
            shapes.append(self.base_shape)
        return shapes

    def _template(self):
        return self.base_shape or self.star_center

    def _make_config(self, objective):
        def shape(s):
            return None if s is None else s.to_dict()

        return _plain({
            "objective": [objective.name, objective.direction],
            "target_compute": self.target_compute,
            "image_size": list(self.image_size),
            "star_center": shape(self.star_center) if self.run_star else None,
            "star_grids": self.star_grids if self.run_star else None,
            "star_budgets": self.star_budgets if self.run_star else None,
            "grid": self.grid if self.run_grid else None,
            "grid_budget": self.grid_budget if self.run_grid else None,
            "exponents": self.exponents,
            "base_shape": shape(self.base_shape),
            "base_compute": self.base_compute,
            "rounding": _rounding_config(self.rounding),
            "final_trials": list(self.final_trials),
            "proposal_method": self.proposal_method,
            "validation_trials": self.validation_trials,
            "validation_compute": self.validation_compute,
            "n_bootstrap": self.n_bootstrap,
            "max_grid_extensions": self.max_grid_extensions,
        })

    def _check_resume_config(self, saved):
        current = self._config
        changed = [k for k in _PLAN_KEYS if saved.get(k) != current.get(k)]
        if changed:
            details = ", ".join(
                f"{k}: saved {saved.get(k)!r}, now {current.get(k)!r}"
                for k in changed
            )
            raise ValueError(
                "The ShapeOracle arguments that define the search differ "
                f"from the saved project ({details}). Pass overwrite=True "
                "or use a new project_name to start a new search. "
                f"Received: changed={changed}"
            )

    def _declare_hyperparameters(self):
        hp = keras_tuner.HyperParameters()
        default = self._smallest_shape()
        self._steps = self._grid_steps()
        limits = {"width": 1 << 16, "depth": 1 << 12, "mlp_dim": 1 << 18}
        for dim in DIMS:
            step = self._steps[dim]
            hp.Int(
                dim, step, _snap(limits[dim], step), step=step,
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

    def _required_names(self):
        return (*SHAPE_FIELDS, COMPUTE_METRIC, PHASE_HP)

    def _smallest_shape(self):
        shapes = []
        if self.run_grid:
            shapes = [s for s, _ in plan_lib.grid_sweep_plan(
                self.grid, self.grid_budget, self._template()
            )]
        elif self.run_star:
            shapes = [s for s, _ in plan_lib.star_sweep_plan(
                self.star_center, self.star_grids, self.star_budgets
            )]
        shapes = shapes or [self._template()]
        return min(shapes, key=lambda s: s.gflops(self.image_size))

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

    # ------------------------------------------------------------------
    # Plans.

    def _star_plan(self):
        plan = plan_lib.star_sweep_plan(
            self.star_center, self.star_grids, self.star_budgets
        )
        return [self._entry("star", s, c) for s, c in plan]

    def _grid_plan(self, grid):
        plan = plan_lib.grid_sweep_plan(
            grid, self.grid_budget, self._template()
        )
        return [self._entry("grid", s, c) for s, c in plan]

    def _make_plan(self, phase):
        if "target" not in self._proposals:
            self._propose()
        if phase == "validation":
            return self._validation_plan()
        if phase == "final":
            return self._final_plan()
        raise RuntimeError(f"No plan for phase {phase!r}.")

    def _entry(self, phase, shape, compute):
        values = {f: int(getattr(shape, f)) for f in SHAPE_FIELDS}
        values[COMPUTE_METRIC] = float(compute)
        values[PHASE_HP] = str(phase)
        return values

    def _next_values(self, phase):
        started = {_values_key(t.hyperparameters.values)
                   for t in self.trials.values()}
        for values in self._plans[phase]:
            if _values_key(values) not in started:
                return dict(values)
        return None

    def _pending(self, phase):
        for trial in self.trials.values():
            if trial.hyperparameters.values.get(PHASE_HP) != phase:
                continue
            if trial.status not in (
                TrialStatus.COMPLETED, TrialStatus.FAILED
            ):
                return True
        return False

    # ------------------------------------------------------------------
    # Phase transitions.

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

    def _collect_results(self, phases=None):
        results = SweepResults()
        name = self.objective.name
        for trial_id in sorted(self.trials, key=_trial_order):
            trial = self.trials[trial_id]
            values = trial.hyperparameters.values
            phase = values.get(PHASE_HP)
            if phases is not None and phase not in phases:
                continue
            if trial.status != TrialStatus.COMPLETED:
                if trial.status == TrialStatus.FAILED:
                    self._exclude(trial_id, "trial failed")
                continue
            shape = ShapeSpec.from_dict(values)
            rows = _trial_observations(trial, name)
            if not rows:
                self._exclude(trial_id, "no finite objective value")
            for compute, value in rows:
                results.append(
                    shape, compute, value, metric_name=name,
                    examples_seen=int(round(
                        compute / shape.gflops(self.image_size)
                    )),
                    phase=str(phase), trial_id=str(trial_id),
                )
        return results

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
        fit = _law().fit_star_sweep(
            results,
            self.star_center,
            dims=self.dims,
            n_bootstrap=self.n_bootstrap,
            random_state=self._fit_seed(),
            metric_name=self.objective.name,
        )
        self.fit_result = fit
        self._fit_state = _plain(fit.to_dict())
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

    def _fit_seed(self):
        return int(self.seed) % (2**31)

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
        values = sorted(self.grid[dim])
        step = self._steps[dim]
        for _ in range(2):
            if direction == "upward":
                values.append(max(
                    values[-1] + step,
                    _snap(values[-1] * _NEIGHBOUR_FACTOR, step),
                ))
            else:
                new = min(values[0] - step,
                          _snap(values[0] / _NEIGHBOUR_FACTOR, step))
                if new < step:
                    break
                values.insert(0, new)
        if len(values) == len(self.grid[dim]):
            raise RuntimeError(
                f"ShapeOracle: the grid optimum wants {dim} below "
                f"{values[0]}, the smallest value on the grid."
            )
        self.grid = dict(self.grid, **{dim: values})
        self._grid_extensions += 1
        known = {_values_key(v) for v in self._plans["grid"]}
        for values in self._grid_plan(self.grid):
            if _values_key(values) not in known:
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
            self._proposals["control"] = self._control_shape(
                target
            ).to_dict()
        if self.validation_compute is not None:
            self._proposals["validation"] = self._shape_for(
                self.validation_compute
            ).to_dict()

    def _choose_method(self):
        if not self.run_star:
            return "paper"
        errors = self._holdout_comparison()
        self._holdout_errors = errors
        self._joint_form = min(joint_lib.FORMS, key=errors.get)
        tolerance = _AUTO_RATIO * errors["paper"] + _AUTO_SLACK
        if errors[self._joint_form] <= tolerance:
            return "joint"
        return "paper"

    def _holdout_comparison(self):
        """Mean |relative error| on each star shape's largest-budget run.

        "paper": the per-dimension laws of Eq. (2) fitted without those
        runs; "joint": the joint law fitted on every other run.
        """
        star = self._collect_results(("star",))
        fit = _law().fit_star_sweep(
            star, self.star_center, dims=self.dims, n_bootstrap=0,
            holdout="largest", random_state=self._fit_seed(),
            metric_name=self.objective.name,
        )
        paper = [abs(e) for errs in fit.holdout_errors.values()
                 for e in errs]
        largest = {}
        for row in star:
            key = _shape_key(row)
            largest[key] = max(largest.get(key, 0.0),
                               float(row["compute_gflops"]))
        held, train = [], []
        for row in self._collect_results(("star", "grid")):
            is_held = row.get("phase") == "star" and math.isclose(
                float(row["compute_gflops"]), largest[_shape_key(row)],
                rel_tol=1e-9,
            )
            (held if is_held else train).append(row)
        errors = {"paper": float(np.mean(paper))}
        for form in joint_lib.FORMS:
            law = joint_lib.JointLaw(
                form=form, image_size=self.image_size,
                random_state=self._fit_seed(),
            ).fit(train)
            errors[form] = float(np.mean([
                abs(law.predict(ShapeSpec.from_dict(r), r["compute_gflops"])
                    / r["metric_value"] - 1.0)
                for r in held
            ]))
        return errors

    def _shape_for(self, compute):
        if self._method == "joint":
            law = self._joint_law()
            shape = joint_lib.optimal_shape(
                law, compute, image_size=self.image_size,
                rounding=self.rounding, template=self._template(),
            )
        else:
            shape = plan_lib.scale_shape(
                self.base_shape, self.base_compute, compute,
                {d: self.exponents[d] for d in self.dims},
                rounding=self.rounding,
            )
        return self._snap_shape(shape)

    def _joint_law(self):
        """The joint law fitted on every star and grid run (cached)."""
        if getattr(self, "_joint_cache", None) is None:
            if self._joint_form is None:
                self._holdout_errors = self._holdout_comparison()
                self._joint_form = min(
                    joint_lib.FORMS, key=self._holdout_errors.get
                )
            self._joint_cache = joint_lib.JointLaw(
                form=self._joint_form, image_size=self.image_size,
                random_state=self._fit_seed(),
            ).fit(self._collect_results(("star", "grid")))
        return self._joint_cache

    def _control_shape(self, shape):
        """A standard ViT (MLP = 4 × width) of equal per-example GFLOPs."""
        target = shape.gflops(self.image_size)
        best = None
        step = self._steps["width"]
        for width in range(step, 4 * shape.width + 1, step):
            candidate = self._snap_shape(_Raw(width, shape.depth, 4 * width))
            if candidate.mlp_dim != 4 * candidate.width:
                continue
            gap = abs(math.log(candidate.gflops(self.image_size) / target))
            if best is None or gap < best[0]:
                best = (gap, candidate)
        return best[1]

    def _snap_shape(self, shape):
        """Rounds a shape (or raw sizes) onto the declared grids."""
        template = self._template()
        snapped = self.rounding.snap(
            float(shape.width), float(shape.depth), float(shape.mlp_dim),
            patch_size=template.patch_size,
            default_heads=template.num_heads,
        )
        values = {d: max(self._steps[d], _snap(getattr(snapped, d),
                                               self._steps[d]))
                  for d in DIMS}
        return snapped.replace(**values)

    # ------------------------------------------------------------------
    # Validation and final trials.

    def _validation_plan(self):
        center = ShapeSpec.from_dict(self._proposals["validation"])
        compute = self.validation_compute
        plan = [self._entry("validation", center, compute)]
        for shape in self._neighbours(center):
            entry = self._entry("validation", shape, compute)
            if entry not in plan:
                plan.append(entry)
        return plan

    def _neighbours(self, shape):
        neighbours = []
        for dim in self.dims:
            value = getattr(shape, dim)
            for factor in (_NEIGHBOUR_FACTOR, 1 / _NEIGHBOUR_FACTOR):
                sizes = {d: getattr(shape, d) for d in DIMS}
                sizes[dim] = value * factor
                new = self._snap_shape(_Raw(**sizes))
                if getattr(new, dim) == value:
                    step = self._steps[dim]
                    if dim == "width":
                        step = self.rounding.width_step(
                            value, shape.num_heads
                        )
                    sizes[dim] = value + step if factor > 1 else value - step
                    if sizes[dim] <= 0:
                        continue
                    new = self._snap_shape(_Raw(**sizes))
                if new != shape and new not in neighbours:
                    neighbours.append(new)
        return neighbours

    def _report_validation(self):
        results = self._collect_results(("validation",))
        compute = self.validation_compute
        rows = [r for r in results
                if math.isclose(float(r["compute_gflops"]), compute,
                                rel_tol=1e-6)]
        proposal = self._proposals["validation"]
        scores = {}
        for row in rows:
            key = json.dumps({f: row[f] for f in SHAPE_FIELDS},
                             sort_keys=True)
            scores[key] = float(row["metric_value"])
        own = scores.get(json.dumps(proposal, sort_keys=True))
        others = [v for k, v in scores.items()
                  if k != json.dumps(proposal, sort_keys=True)]
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

    def _final_plan(self):
        plan = []
        for name in self.final_trials:
            key = "target" if name == "proposal" else "control"
            shape = ShapeSpec.from_dict(self._proposals[key])
            entry = self._entry("final", shape, self.target_compute)
            if entry not in plan:
                plan.append(entry)
        return plan

    # ------------------------------------------------------------------
    # Reports.

    def report(self):
        """A JSON-safe summary: fit, base shape, proposals, validation."""
        return _plain({
            "phase": self._phase,
            "config": self._config,
            "exponents": self.exponents,
            "intervals": (
                None if self.fit_result is None
                else {d: list(v) for d, v in self.fit_result.intervals.items()}
            ),
            "base_shape": (
                None if self.base_shape is None else self.base_shape.to_dict()
            ),
            "base_compute": self.base_compute,
            "method": self._method,
            "holdout_errors": self._holdout_errors,
            "proposal": self._proposals.get("target"),
            "control": self._proposals.get("control"),
            "validation": self.validation,
            "final_results": self._final_scores(),
            "excluded_trials": self.excluded_trials,
        })

    def _final_scores(self):
        scores = {}
        for trial_id, trial in self.trials.items():
            values = trial.hyperparameters.values
            if values.get(PHASE_HP) != "final":
                continue
            if trial.status == TrialStatus.COMPLETED:
                scores[str(trial_id)] = {
                    "shape": {f: values[f] for f in SHAPE_FIELDS},
                    "score": float(trial.score),
                }
        return scores

    def _write_report(self):
        if getattr(self, "_directory", None) is None:
            return
        directory = self._project_dir
        with open(os.path.join(directory, "shape_report.json"), "w") as f:
            json.dump(self.report(), f, indent=2)
        results = self._collect_results()
        if len(results):
            results.to_csv(os.path.join(directory, "sweep_results.csv"))
        if self.fit_result is not None:
            self._write_plots(directory, results)

    def _write_plots(self, directory, results):
        try:
            from keras_sovit.scaling import plots
        except ImportError as error:  # matplotlib or plots.py missing.
            logger.warning("ShapeOracle: no plots written (%s).", error)
            return
        star = results.filter(phase="star")
        plots.plot_star_sweep(
            self.fit_result, star, os.path.join(directory, "star_sweep.png"),
            image_size=self.image_size,
        )
        if self.base_shape is not None:
            computes = [self.base_compute, self.target_compute]
            plots.plot_scaling(
                self.fit_result, self.base_shape, self.base_compute,
                computes, os.path.join(directory, "scaling.png"),
                rounding=self.rounding,
            )


class _Raw:
    """Real-valued sizes to be snapped into a shape."""

    def __init__(self, width, depth, mlp_dim):
        self.width = width
        self.depth = depth
        self.mlp_dim = mlp_dim


def default_plan(
    target_compute, image_size=224, rounding=None, star_center=None
):
    """The default sweeps for a target compute: the paper's, scaled down.

    The paper (SPEC §2) targets 9e12 GFLOPs with 256-token images. For a
    target `T` with `n` tokens per image, every default shape is the
    paper's shape with width and MLP scaled by `λ = (T · 256 / (n ·
    9e12)) ** (1 / 6)` (parameters grow as the square root of compute, as
    in Chinchilla), depth by `λ` with the centre at least 6 blocks deep,
    then rounded (widths and MLP sizes to multiples of 16) and spread so
    that grid values stay distinct. Heads are 16 as in the paper for a
    centre at least 1024 wide, else 4. The patch size gives 16 patches per
    side (the paper's 224 / 14), or the nearest divisor of the image side.
    Star budgets are `T / 256`, `T / 128`, `T / 64` and the grid budget is
    `T / 1000` (the paper's 600M-example grid at 1/1000 of its target);
    a full default search costs about half of `T` before the final run.

    Args:
        target_compute: float. GFLOPs of the final run.
        image_size: int or `(height, width)`.
        rounding: `keras_sovit.plan_lib.Rounding` or `None`.
        star_center: `ShapeSpec` or `None`. Given, the grids are placed
            relative to it instead of the scaled paper centre.

    Returns:
        dict with `star_center`, `star_grids`, `star_budgets`, `grid` and
        `grid_budget`.
    """
    rounding = rounding or plan_lib.Rounding()
    height, width = image_hw(image_size)
    patch = _default_patch(min(height, width))
    tokens = (height // patch) * (width // patch)
    scale = (target_compute * _PAPER_TOKENS
             / (tokens * _PAPER_TARGET_GFLOPS)) ** (1 / 6)
    mlp_step = int(rounding.mlp_multiple or 1)
    width_step = int(rounding.width_multiple or 1)
    center_width = max(4 * width_step, _snap(1968 * scale, width_step))
    heads = int(rounding.num_heads or (16 if center_width >= 1024 else 4))
    width_step = width_step * heads // math.gcd(width_step, heads)
    center = {
        "width": max(4 * width_step, _snap(1968 * scale, width_step)),
        "depth": max(6, int(round(40 * scale))),
        "mlp_dim": max(4 * mlp_step, _snap(6144 * scale, mlp_step)),
    }
    if star_center is not None:
        center = {d: getattr(star_center, d) for d in DIMS}
        heads, patch = star_center.num_heads, star_center.patch_size
        width_step = math.gcd(width_step * heads // math.gcd(
            width_step, heads), center["width"])
        mlp_step = math.gcd(mlp_step, center["mlp_dim"])
    steps = {"width": width_step, "depth": 1, "mlp_dim": mlp_step}
    star_grids = {}
    grid = {}
    for dim in DIMS:
        ratio = center[dim] / _PAPER_CENTER[dim]
        star = _spread([v * ratio for v in _PAPER_STAR[dim]], steps[dim])
        star_grids[dim] = [v for v in star if v < center[dim]]
        grid[dim] = _spread([v * ratio for v in _PAPER_GRID[dim]], steps[dim])
    return {
        "star_center": ShapeSpec(
            center["width"], center["depth"], center["mlp_dim"], heads, patch
        ),
        "star_grids": star_grids,
        "star_budgets": [target_compute * f for f in _STAR_BUDGET_FRACTIONS],
        "grid": grid,
        "grid_budget": target_compute * _GRID_BUDGET_FRACTION,
    }


def _default_patch(side):
    divisors = [p for p in range(1, side + 1) if side % p == 0]
    return min(divisors, key=lambda p: (abs(side / p - 16), -p))


def _spread(values, step):
    """Snaps values to multiples of `step`, strictly increasing."""
    out = []
    for value in values:
        snapped = max(step, _snap(value, step))
        if out and snapped <= out[-1]:
            snapped = out[-1] + step
        out.append(int(snapped))
    return out


def _snap(value, step):
    return int(step * max(1, round(float(value) / step)))


def _values_key(values):
    return json.dumps(
        {k: values[k] for k in (*SHAPE_FIELDS, COMPUTE_METRIC, PHASE_HP)
         if k in values},
        sort_keys=True,
    )


def _shape_key(row):
    return tuple(int(row[f]) for f in SHAPE_FIELDS)


def _trial_order(trial_id):
    return (len(str(trial_id)), str(trial_id))


def _varied_dim(row, center):
    varied = [d for d in DIMS if row[d] != getattr(center, d)]
    return varied[0] if len(varied) == 1 else None


def _finite(value):
    return value is not None and math.isfinite(value)


def _trial_observations(trial, name):
    """(compute, value) pairs of a completed trial, NaNs left out.

    Pairs the objective's metric history with the `compute_gflops` metric
    at the same steps, adds checkpoint metrics (`"<name>@<i>"` with
    `"compute_gflops@<i>"`), and falls back to the trial's budget for the
    last step when no compute metric was reported.
    """
    metrics = trial.metrics
    budget = float(trial.hyperparameters.values[COMPUTE_METRIC])
    observed = {}
    if metrics.exists(name):
        history = metrics.get_history(name)
        computes = {}
        if metrics.exists(COMPUTE_METRIC):
            computes = {o.step: float(o.mean())
                        for o in metrics.get_history(COMPUTE_METRIC)}
        for i, obs in enumerate(history):
            compute = computes.get(obs.step)
            if compute is None and i == len(history) - 1:
                compute = budget
            if compute is not None:
                observed[compute] = float(obs.mean())
    index = 0
    while metrics.exists(checkpoint_metric_name(name, index)):
        compute_name = checkpoint_metric_name(COMPUTE_METRIC, index)
        if metrics.exists(compute_name):
            value = metrics.get_last_value(checkpoint_metric_name(name, index))
            compute = metrics.get_last_value(compute_name)
            observed.setdefault(float(compute), float(value))
        index += 1
    return [(c, v) for c, v in sorted(observed.items())
            if _finite(v) and _finite(c) and c > 0]


def _check_objective(objective):
    if objective is None:
        raise ValueError(
            "`objective` must name the loss-like metric to minimise, e.g. "
            "keras_tuner.Objective('fewshot_10shot_error', 'min'). "
            "Received: objective=None"
        )
    if isinstance(objective, (list, tuple)):
        raise ValueError(
            "`objective` must be a single objective; the scaling law fits "
            f"one metric. Received: objective={objective!r}"
        )
    if isinstance(objective, str):
        objective = keras_tuner.Objective(objective, "min")
    if not isinstance(objective, keras_tuner.Objective):
        raise ValueError(
            "`objective` must be a str or a keras_tuner.Objective. "
            f"Received: objective={objective!r}"
        )
    if objective.direction != "min":
        raise ValueError(
            "`objective` must be minimised: the scaling law models a "
            "loss-like metric (report an error such as 1 - accuracy). "
            f"Received: objective={objective!r}"
        )
    if CHECKPOINT_SEPARATOR in objective.name or objective.name in (
        COMPUTE_METRIC, PHASE_HP, *SHAPE_FIELDS
    ):
        raise ValueError(
            "`objective` must name a metric, not a reserved name. "
            f"Received: objective={objective.name!r}"
        )
    return objective


def _check_positive_float(name, value):
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not math.isfinite(number) or number <= 0:
        raise ValueError(
            f"`{name}` must be a positive number. Received: {name}={value!r}"
        )
    return number


def _as_shape(name, value):
    if value is None or isinstance(value, ShapeSpec):
        return value
    if isinstance(value, dict):
        return ShapeSpec.from_dict(value)
    raise ValueError(
        f"`{name}` must be a ShapeSpec or a dict of its fields. "
        f"Received: {name}={value!r}"
    )


def _check_grids(name, grids):
    if not isinstance(grids, dict) or not grids:
        raise ValueError(
            f"`{name}` must be a non-empty dict of dimension -> values. "
            f"Received: {name}={grids!r}"
        )
    out = {}
    for dim, values in grids.items():
        check_choice(name, dim, DIMS)
        values = list(values)
        for v in values:
            if isinstance(v, bool) or int(v) != v or v <= 0:
                raise ValueError(
                    f"`{name}['{dim}']` must hold positive integers. "
                    f"Received: {name}['{dim}']={values!r}"
                )
        out[dim] = sorted(int(v) for v in values)
    return out


def _check_exponents(exponents):
    if not isinstance(exponents, dict) or not exponents:
        raise ValueError(
            "`exponents` must be a dict of dimension -> exponent. "
            f"Received: exponents={exponents!r}"
        )
    out = {}
    for dim, value in exponents.items():
        check_choice("exponents", dim, DIMS)
        out[dim] = _check_positive_float(f"exponents['{dim}']", value)
    return out


def _rounding_config(rounding):
    return {
        k: getattr(rounding, k, None)
        for k in ("width_multiple", "mlp_multiple", "num_heads", "head_dim")
    }


def _plain(value):
    """Casts numpy scalars and tuples to plain JSON-safe Python values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


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
        super().__init__(oracle, hypermodel, **kwargs)
