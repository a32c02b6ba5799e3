"""What a shape trial carries between the oracle and the hypermodel.

A trial's hyperparameters are its shape (`SHAPE_FIELDS`), its compute
budget `compute_gflops` (its largest budget) and its `phase`, and, when
the search uses them, its replicate `seed` and `budget_fractions`: the
budgets the one run trains, as fractions of `compute_gflops` in a string
such as `"0.25,0.5,1"` (each is cooled down on a branch of the run). The
hypermodel reports the objective and `compute_gflops` at the largest
budget, and every budget `i` as `checkpoint_metric_name(name, i)` with
`"cooled@i"` = 1 when measured at the end of a cooldown, `"<metric>_se"`
for standard errors and `"charged_gflops"` for the compute it trained in
all. All values are plain Python types.
"""

import dataclasses
import enum

import keras_tuner

from keras_sovit.scaling.results import COMPUTE_METRIC
from keras_sovit.scaling.results import checkpoint_metric_name  # noqa: F401
from keras_sovit.shapes import SCALED_DIMS
from keras_sovit.shapes import SHAPE_FIELDS
from keras_sovit.shapes import ShapeSpec
from keras_sovit.shapes import round_to_multiple

PHASE_HP = "phase"
SEED_HP = "seed"
BUDGET_FRACTIONS_HP = "budget_fractions"
CHARGED_METRIC = "charged_gflops"
# "untrained_<metric>": the metric of the network before training.
UNTRAINED_PREFIX = "untrained_"
# Every hyperparameter the oracle sets on every trial; a hypermodel must
# declare them.
TRIAL_HP_NAMES = (*SHAPE_FIELDS, COMPUTE_METRIC, PHASE_HP)
# Set when the search uses them; a hypermodel that declares
# `budget_fractions` trains several budgets in one run.
OPTIONAL_HP_NAMES = (SEED_HP, BUDGET_FRACTIONS_HP)
MAX_SEED = 2**31 - 1
# Final-trial roles: the proposal; "control", a standard ViT (MLP = 4 ×
# width) of the proposal's per-example compute; "standard", a
# standard-aspect ViT chosen without the proposal; "x0", the grid optimum.
FINAL_TRIALS = ("proposal", "control", "standard", "x0")
# Budgets of each grid trial's one run when budgets are branched.
GRID_FRACTIONS = (0.25, 0.5, 1.0)
# Upper ends of the declared Int hyperparameters: the one table that the
# oracle's space and the hypermodel's declaration both use.
HP_LIMITS = {
    "width": 1 << 16,
    "depth": 1 << 12,
    "mlp_dim": 1 << 18,
    "num_heads": 1024,
}


class PhaseName(enum.StrEnum):
    """The built-in phases of a shape search.

    The values are the `phase` hyperparameter of trials, the phase names
    in the oracle's state and report, and the keys of the phase registry
    (`keras_sovit.tuner.phases`). `ISOFLOP` is the default search's
    (`ISOFLOP_PHASES`); `STAR` to `VALIDATION` are the paper's procedure
    (`PAPER_PHASES`); `FINAL` ends both. `SIGNAL` and `PROPOSAL` run no
    trials; `DONE` is the end of every search.
    """

    ISOFLOP = "isoflop"
    STAR = "star"
    SIGNAL = "signal"
    GRID = "grid"
    PROPOSAL = "proposal"
    VALIDATION = "validation"
    FINAL = "final"
    DONE = "done"


# The default search: IsoFLOP levels, the path to the target and its
# verification in one phase (`keras_sovit.tuner.isoflop_phase`), then the
# final trials (`DONE` is implied).
ISOFLOP_PHASES = (PhaseName.ISOFLOP.value, PhaseName.FINAL.value)

# The paper's procedure: star and grid sweeps, the signal gate, a proposal
# rule, the optional validation trials and the final trials. A search given
# any of the paper's sweep arguments runs it (`default_phases`).
PAPER_PHASES = (
    PhaseName.STAR.value,
    PhaseName.SIGNAL.value,
    PhaseName.GRID.value,
    PhaseName.PROPOSAL.value,
    PhaseName.VALIDATION.value,
    PhaseName.FINAL.value,
)

# The constructor arguments that configure the paper's sweeps: a search
# given any of them runs `PAPER_PHASES` unless `phases` says otherwise.
PAPER_SWEEP_ARGUMENTS = (
    "star_center", "star_grids", "star_budgets", "grid", "grid_budget",
    "exponents", "base_shape", "base_compute",
)


# The phase plans `ShapeOracle(phases=...)` accepts by name.
PHASE_PLANS = {"isoflop": ISOFLOP_PHASES, "paper": PAPER_PHASES}


def default_phases(paper_arguments):
    """`PAPER_PHASES` if any paper sweep argument is given, else
    `ISOFLOP_PHASES`.

    Args:
        paper_arguments: the names of the `PAPER_SWEEP_ARGUMENTS` given.
    """
    return PAPER_PHASES if paper_arguments else ISOFLOP_PHASES


def trial_values(phase, shape, compute, seed=None, fractions=None):
    """The hyperparameter values of one planned trial, plain Python.

    Args:
        phase: str. The phase name.
        shape: `ShapeSpec`.
        compute: float. The trial's (largest) budget in GFLOPs.
        seed: int or `None`. The replicate seed (`None`: 0).
        fractions: sequence of floats or `None`. Budgets of the one run as
            fractions of `compute` (see `format_fractions`; `None`: the
            one budget `compute`).
    """
    values = {f: int(getattr(shape, f)) for f in SHAPE_FIELDS}
    values[COMPUTE_METRIC] = float(compute)
    values[PHASE_HP] = str(phase)
    # Every declared value is set: KerasTuner fills a missing active one
    # at random (`ensure_active_values`), which would give an unseeded
    # trial a random seed and an unbranched one a random budget ladder.
    values[SEED_HP] = 0 if seed is None else int(seed)
    values[BUDGET_FRACTIONS_HP] = format_fractions(fractions or (1.0,))
    return values


@dataclasses.dataclass(frozen=True)
class TrialSpec:
    """A trial's hyperparameters, decoded once: the inverse of
    `trial_values` (`TrialSpec.from_values(trial_values(...)).values()`
    gives the same values back).

    Attributes:
        phase: str. The phase that planned the trial.
        shape: `ShapeSpec`.
        compute: float. `compute_gflops`, the largest budget.
        seed: int. The replicate seed.
        fractions: tuple of floats or `None`. The budgets of the one run as
            fractions of `compute`; `None` when the trial does not say
            (the hypermodel's own ladder applies).
    """

    phase: str
    shape: ShapeSpec
    compute: float
    seed: int = 0
    fractions: tuple | None = None

    @classmethod
    def from_values(cls, values):
        """Decodes a trial's hyperparameter values (`hp.values`)."""
        fractions = values.get(BUDGET_FRACTIONS_HP)
        return cls(
            phase=str(values.get(PHASE_HP)),
            shape=ShapeSpec(**{f: int(values[f]) for f in SHAPE_FIELDS}),
            compute=float(values[COMPUTE_METRIC]),
            seed=int(values.get(SEED_HP) or 0),
            fractions=None if fractions is None else tuple(
                parse_fractions(fractions)
            ),
        )

    def values(self):
        """The hyperparameter values, as `trial_values` writes them."""
        return trial_values(self.phase, self.shape, self.compute, self.seed,
                            self.fractions)  # fmt: skip


def format_fractions(fractions):
    """`"0.25,0.5,1"`: sorted budget fractions as a plain string."""
    return ",".join(f"{float(f):.12g}" for f in sorted(fractions))


def parse_fractions(text):
    """The floats of a `budget_fractions` string, sorted (inverse of
    `format_fractions`); raises `ValueError` naming the hyperparameter."""
    try:
        return sorted(float(v) for v in str(text).split(",") if v)
    except ValueError:
        raise ValueError(
            f"`{BUDGET_FRACTIONS_HP}` must be comma-separated fractions. "
            f"Received: {text!r}"
        ) from None


def same_trial(planned, started):
    """Whether a started trial is the planned one: equal in every value the
    plan sets (the seed included); values it leaves out (a phase of
    another package may) are not compared."""
    return all(started.get(k) == v for k, v in planned.items())


def declare_hyperparameters(config):
    """The oracle's space for a `SearchConfig`: grids every trial fits.

    Widths, depths and MLP sizes are Int grids whose steps divide every
    planned value (`config.grid_steps`); the patch size is fixed; compute
    spans the smallest sweep budget to the target; the phase is a choice
    of the configured phase names.
    """
    hp = keras_tuner.HyperParameters()
    default = min(config.sweep_shapes()[1:] or [config.template],
                  key=lambda s: s.gflops(config.image_size))
    for dim in SCALED_DIMS:
        step = config.grid_steps[dim]
        hp.Int(dim, step, round_to_multiple(HP_LIMITS[dim], step),
               step=step, default=int(getattr(default, dim)))
    hp.Int("num_heads", 1, HP_LIMITS["num_heads"],
           default=default.num_heads)
    patch = config.template.patch_size
    hp.Choice("patch_size", [patch], default=patch)
    budgets = config.sweep_budgets + [config.target_compute]
    if config.validation_compute is not None:
        budgets.append(config.validation_compute)
    low = min(budgets)
    if low >= config.target_compute:
        low = config.target_compute / 2
    hp.Float(COMPUTE_METRIC, float(low), float(config.target_compute),
             sampling="log", default=float(low))
    hp.Choice(PHASE_HP, list(config.phases), default=config.phases[0])
    hp.Int(SEED_HP, 0, MAX_SEED, default=0)
    ladders = sorted({format_fractions(f) for f in config.budget_ladders()})
    hp.Choice(BUDGET_FRACTIONS_HP, ladders, default=ladders[0])
    return hp
