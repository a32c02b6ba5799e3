"""`ShapeOracle`: walks the search's phases (design: CONTRIBUTING.md)."""

import logging

import keras_tuner
from keras_tuner.engine.trial import TrialStatus

from keras_sovit.scaling.paper import star_sweep as star_lib
from keras_sovit.shapes import ShapeSpec
from keras_sovit.tuner import phases as phases_lib
from keras_sovit.tuner import report as report_lib
from keras_sovit.tuner import trials as trials_lib
from keras_sovit.tuner.config import SearchConfig
from keras_sovit.tuner.config import check_objective
from keras_sovit.tuner.protocol import BUDGET_FRACTIONS_HP
from keras_sovit.tuner.protocol import OPTIONAL_HP_NAMES
from keras_sovit.tuner.protocol import PHASE_HP
from keras_sovit.tuner.protocol import TRIAL_HP_NAMES
from keras_sovit.tuner.protocol import PhaseName
from keras_sovit.tuner.protocol import declare_hyperparameters
from keras_sovit.tuner.protocol import same_trial
from keras_sovit.tuner.state import SearchState
from keras_sovit.tuner.state import plain

logger = logging.getLogger(__name__)

class ShapeOracle(keras_tuner.Oracle):
    """Searches the compute-optimal ViT shape for `target_compute`.

    The oracle walks its phases (design: CONTRIBUTING.md). By default
    (`phases="isoflop"`, `ISOFLOP_PHASES`) it runs the model-agnostic
    IsoFLOP search (`keras_sovit.tuner.isoflop_phase`): rounds of central
    composite designs in log-shape at T/4096 to T/64, a quadratic per
    compute, the optimum's power-law path to T, a paired verification that
    may buy a level at T/32; then the final trial(s) at T. With
    `phases="paper"` (`PAPER_PHASES`, chosen too when any of the paper's
    sweep arguments is given) it runs the paper's procedure: the star sweep
    fitted by Eq. (2), the grid sweep for x0, the signal gate, the proposal
    rule, optional validation trials and the final trial(s).

    Every trial carries its shape, its compute budget `compute_gflops`
    (examples seen × forward GFLOPs per example), its `phase` and, where
    used, a `seed`, as plain Python values (`keras_sovit.tuner.protocol`).
    The hypermodel reports the objective, optionally at compute
    checkpoints; only finished runs (the end of a schedule or of a
    cooldown branch) enter the fits. Failed trials and NaN values are left
    out (`excluded_trials`). Several workers may run a phase's (or a
    round's) trials in parallel; the oracle answers IDLE while the next
    step waits for running trials. Configuration and state are saved with
    the project, so `overwrite=False` resumes; every field of `config`
    must then equal the saved one, or a `ValueError` asks for
    `overwrite=True` or a new project. Reports, with the search's compute
    in units of T, go to `<project>/shape_report.json` and
    `sweep_results.csv`.

    Args:
        objective: `keras_tuner.Objective` or str. A loss-like metric to
            minimise, e.g. `keras_tuner.Objective("fewshot_10shot_error",
            "min")`.
        target_compute: float. GFLOPs of the final training run.
        star_center: `ShapeSpec`, dict, or `None`. Centre of the star
            sweep; its heads and patch size are kept by all sweep shapes.
        star_grids: dict or `None`. Values per dimension below the centre.
        star_budgets: list of floats or `None`. Star budgets, at least two.
        grid: dict or `None`. Values per dimension of the grid sweep.
        grid_budget: float or `None`. Compute budget of the grid sweep.
        exponents: dict or `None`. Given, the star sweep is skipped.
        base_shape: `ShapeSpec`, dict, or `None`. A small compute-optimal
            shape; given with `base_compute`, the grid sweep is skipped.
        base_compute: float or `None`. The compute `base_shape` is optimal
            for.
        rounding: `keras_sovit.scaling.Rounding` or `None`. The lattice of
            shapes; defaults to multiples of 16.
        template: `ShapeSpec`, dict, or `None`. The IsoFLOP search's shapes
            keep its heads and patch size; defaults to `default_plan`'s.
        isoflop: `keras_sovit.scaling.isoflop.search.IsoFlopSettings`, a
            dict, or `None` (its defaults). The IsoFLOP search's settings.
        final_trials: tuple of `"proposal"` and/or `"control"` (a standard
            ViT, MLP = 4 × width, of equal compute).
        proposal_method: str. The paper's procedure's proposal rule:
            `"auto"`, `"paper"` or `"joint"`, or a registered rule
            (`keras_sovit.tuner.proposals`; the IsoFLOP search proposes
            on its own).
        validation_trials: bool. Train the proposal and its ×1.2 / ÷1.2
            neighbours at `validation_compute` (the paper's procedure),
            `validation_seeds` times each.
        validation_compute: float or `None`. Defaults to the geometric mean
            of the largest sweep budget and `target_compute`.
        validation_seeds, validation_alpha: int and float. Replicates per
            validation shape, and the false-alarm rate of the decision
            (`keras_sovit.scaling.noise.local_optimality`).
        image_size: int or `(height, width)`. Image size used for compute.
        n_bootstrap: int. Bootstrap resamples of the star-sweep fit.
        max_grid_extensions: int. How often the grid may be extended when
            its optimum lies on the boundary.
        phases: str, tuple of str or `None`. `"isoflop"` or `"paper"`
            (`ISOFLOP_PHASES`, `PAPER_PHASES`), or registered phase names
            in order; `None` chooses one of the two (above).
        replicates: int. Seeds of every paper sweep trial.
        final_seeds: int. Seeds of every final trial.
        branch_budgets: bool or `None`. Whether one trial trains several
            cooled budgets (`budget_fractions`); `None`: when the
            hypermodel declares `budget_fractions`.
        seed: int or `None`. Random seed (also of the fits).
        max_retries_per_trial: int. Retries of a crashed trial.
        max_consecutive_failed_trials: int. Failures in a row that abort.

    Example:

    ```python
    oracle = keras_sovit.tuner.ShapeOracle("val_loss", target_compute=2e4,
                                           image_size=32)
    oracle.config.phases  # ('isoflop', 'final')
    paper = keras_sovit.tuner.ShapeOracle("val_loss", target_compute=2e4,
                                          image_size=32, phases="paper")
    paper.config.phases[:3]  # ('star', 'signal', 'grid')
    ```
    """

    def __init__(
        self, objective, target_compute, star_center=None, star_grids=None,
        star_budgets=None, grid=None, grid_budget=None, exponents=None,
        base_shape=None, base_compute=None, rounding=None,
        final_trials=("proposal",), proposal_method="auto",
        validation_trials=False, validation_compute=None,
        validation_seeds=3, validation_alpha=0.1, image_size=224,
        n_bootstrap=200, max_grid_extensions=8, phases=None,
        replicates=1, final_seeds=1, branch_budgets=None, seed=None,
        max_retries_per_trial=0, max_consecutive_failed_trials=3,
        template=None, isoflop=None,
    ):
        self.config = SearchConfig.create(
            objective, target_compute, star_center=star_center,
            star_grids=star_grids, star_budgets=star_budgets, grid=grid,
            grid_budget=grid_budget, exponents=exponents,
            base_shape=base_shape, base_compute=base_compute,
            rounding=rounding, final_trials=final_trials,
            proposal_method=proposal_method,
            validation_trials=validation_trials,
            validation_compute=validation_compute,
            validation_seeds=validation_seeds,
            validation_alpha=validation_alpha, image_size=image_size,
            n_bootstrap=n_bootstrap,
            max_grid_extensions=max_grid_extensions, phases=phases,
            replicates=replicates, final_seeds=final_seeds,
            branch_budgets=branch_budgets, template=template,
            isoflop=isoflop,
        )
        super().__init__(
            objective=check_objective(objective), max_trials=None,
            hyperparameters=declare_hyperparameters(self.config), seed=seed,
            max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials,
        )
        if seed is not None:
            # KerasTuner replaces a falsy seed (0) with a random one.
            self.seed = int(seed)
        self._phases = self._new_phases()
        self._state = self._initial_state()
        self._state.phase = self._next_phase(None)

    # ------------------------------------------------------------------
    # Results.

    @property
    def phase(self):
        """The current phase's name, or "done"."""
        return self._state.phase

    @property
    def state(self):
        return self._state

    @property
    def proposal(self):
        """The proposed `ShapeSpec` for `target_compute`, or `None`."""
        return self._shape(self._state.proposals_.get("target"))

    @property
    def control(self):
        """The standard ViT (MLP = 4 × width) of equal compute, or `None`."""
        return self._shape(self._state.proposals_.get("control"))

    @property
    def star_fit_(self):
        """The star sweep's `keras_sovit.scaling.StarSweepFit`, or `None`."""
        fit = self._state.star_fit_
        return None if fit is None else star_lib.StarSweepFit.from_dict(fit)

    @property
    def exponents_(self):
        """The exponents the proposal uses: fitted or given."""
        return self._state.exponents_

    @property
    def base_shape_(self):
        """x0, found by the grid sweep or given, as a `ShapeSpec`."""
        return self._shape(self._state.base_shape_)

    @property
    def base_compute_(self):
        return self._state.base_compute_

    @property
    def method(self):
        """What made the proposal ("isoflop", "paper", "joint")."""
        return self._state.proposal_info_.get("method")

    @property
    def validation(self):
        """The local-optimality check of the validation trials, or `None`."""
        return self._state.validation_

    @property
    def excluded_trials(self):
        """Trial id -> why the trial is not in the fits."""
        return self._state.excluded_trials_

    @property
    def compute_spent(self):
        """GFLOPs trained by all completed trials (`trials.compute_spent`)."""
        return trials_lib.compute_spent(self.trials)

    def results(self, phase=None):
        """All observations as `keras_sovit.scaling.SweepResults`.

        Args:
            phase: str or `None`. Only rows of trials of this phase.
        """
        return self._observe(None if phase is None else (phase,))

    def report(self):
        """A JSON-safe summary: configuration, state and final scores."""
        state = self._state.to_dict()
        state.pop("plans")
        intervals = (self._state.star_fit_ or {}).get("intervals")
        return plain({
            **state,
            "config": self.config.to_dict(),
            "intervals": intervals,
            "method": self.method,
            "proposal": self._state.proposals_.get("target"),
            "control": self._state.proposals_.get("control"),
            "final_results": trials_lib.final_scores(
                self.trials, PhaseName.FINAL.value),
            "compute": trials_lib.compute_report(
                self.trials, self.config.target_compute),
        })

    # ------------------------------------------------------------------
    # The KerasTuner Oracle contract.

    def populate_space(self, trial_id):
        context = self._context()
        while self._state.phase != PhaseName.DONE:
            phase = self._phases[self._state.phase]
            values = self._next_values(phase, context)
            if values is not None:
                return {"status": TrialStatus.RUNNING, "values": values}
            if self._pending(phase.name):
                return {"status": TrialStatus.IDLE, "values": None}
            if phase.finish(context):
                self._state.phase = self._next_phase(phase.name)
            else:
                self._state.plans.pop(phase.name)
            if self._state.stopped_:
                self._state.phase = PhaseName.DONE.value
            self._write_report()
        return {"status": TrialStatus.STOPPED, "values": None}

    def score_trial(self, trial):
        """Scores a trial by its objective at the full budget (last step)."""
        last = trial.metrics.get_history(self.objective.name)[-1]
        trial.score = float(last.mean())
        trial.best_step = last.step

    def update_space(self, hyperparameters):
        names = {hp.name for hp in hyperparameters.space}
        if names and not self._state.space_checked:
            self._state.branch_budgets_ = BUDGET_FRACTIONS_HP in names
            missing = [n for n in TRIAL_HP_NAMES if n not in names]
            if missing:
                raise ValueError(
                    "The hypermodel must declare every hyperparameter the "
                    f"ShapeOracle sets; it does not declare {missing}. "
                    f"Received: declared={sorted(names)}"
                )
            self._state.space_checked = True
        super().update_space(hyperparameters)

    def get_space(self):
        """Returns the search space.

        Until a hypermodel has declared its hyperparameters (checked in
        `update_space`), the oracle's own shape and compute entries are left
        out so that a hypermodel missing one can be detected.
        """
        space = super().get_space()
        if self._state.space_checked:
            return space
        hps = keras_tuner.HyperParameters()
        own = TRIAL_HP_NAMES + OPTIONAL_HP_NAMES
        hps.merge([hp for hp in space.space if hp.name not in own])
        return hps

    def get_state(self):
        state = super().get_state()
        state["shape_oracle"] = {
            "config": self.config.to_dict(),
            "state": plain(self._state.to_dict()),
        }
        return state

    def set_state(self, state):
        super().set_state(state)
        saved = state["shape_oracle"]
        self.config.check_resume(saved["config"])
        self._state = SearchState.from_dict(saved["state"])
        self._phases = self._new_phases()  # No cache outlives a reload.
        # KerasTuner saves an ended trial before it leaves ongoing_trials.
        self.ongoing_trials = {k: t for k, t in self.ongoing_trials.items()
                               if t.status == TrialStatus.RUNNING}

    # ------------------------------------------------------------------
    # The phase walk.

    def _initial_state(self):
        config = self.config
        return SearchState(
            phase=PhaseName.DONE.value,
            exponents_=config.exponents,
            base_shape_=config.base_shape and config.base_shape.to_dict(),
            base_compute_=config.base_compute,
        )

    def _new_phases(self):
        return {n: phases_lib.get_phase(n) for n in self.config.phases}

    def _context(self):
        return phases_lib.SearchContext(
            config=self.config, state=self._state,
            observe=lambda phases: self._observe(phases, finished=True),
            seed=int(self.seed) % (2**31), trial_metrics=self._metrics,
        )

    def _next_phase(self, current):
        """The first active phase after `current` (`None`: the first)."""
        names = list(self.config.phases)
        start = 0 if current is None else names.index(current) + 1
        context = self._context()
        for name in names[start:]:
            if self._phases[name].active(context):
                return name
        return PhaseName.DONE.value

    def _next_values(self, phase, context):
        """The first planned trial of `phase` that was not started yet."""
        plans = self._state.plans
        if phase.name not in plans:
            plans[phase.name] = phase.plan(context)
        started = [t.hyperparameters.values for t in self.trials.values()]
        for values in plans[phase.name]:
            if not any(same_trial(values, s) for s in started):
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
    # Observations, hyperparameters and files.

    def _observe(self, phases=None, finished=False):
        return trials_lib.observations(
            self.trials, self.objective.name, self.config.image_size,
            phases, finished, self._exclude,
        )

    def _metrics(self, phase):
        return trials_lib.final_metrics(self.trials, phase)

    def _exclude(self, trial_id, reason):
        if trial_id not in self._state.excluded_trials_:
            logger.warning("ShapeOracle: trial %s is left out of the fit "
                           "(%s).", trial_id, reason)
            self._state.excluded_trials_[trial_id] = reason

    def _write_report(self):
        if getattr(self, "_directory", None) is None:
            return
        scaling = None
        if self._state.star_fit_ is not None:
            scaling = dict(
                star_fit=self.star_fit_, base_shape=self.base_shape_,
                base_compute=self.base_compute_,
                target_compute=self.config.target_compute,
                rounding=self.config.rounding,
                image_size=self.config.image_size,
            )
        report_lib.write_project_files(self._project_dir, self.report(),
                                       self._observe(), scaling)

    @staticmethod
    def _shape(values):
        return None if values is None else ShapeSpec.from_dict(values)

