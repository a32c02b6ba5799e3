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

import enum
import json

import keras_tuner

from keras_sovit.scaling.results import COMPUTE_METRIC
from keras_sovit.scaling.results import checkpoint_metric_name  # noqa: F401
from keras_sovit.shapes import SCALED_DIMS
from keras_sovit.shapes import SHAPE_FIELDS
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
# Upper ends of the declared Int grids of the shape dimensions.
_DIM_LIMITS = {"width": 1 << 16, "depth": 1 << 12, "mlp_dim": 1 << 18}


class PhaseName(enum.StrEnum):
    """The built-in phases of a shape search, in their default order.

    The values are the `phase` hyperparameter of trials, the phase names
    in the oracle's state and report, and the keys of the phase registry
    (`keras_sovit.tuner.phases`). `PROPOSAL` runs no trials; `DONE` is the
    end of every search.
    """

    STAR = "star"
    SIGNAL = "signal"
    GRID = "grid"
    PROPOSAL = "proposal"
    VALIDATION = "validation"
    FINAL = "final"
    DONE = "done"


# The phases a search runs unless told otherwise (`DONE` is implied).
DEFAULT_PHASES = (
    PhaseName.STAR.value,
    PhaseName.SIGNAL.value,
    PhaseName.GRID.value,
    PhaseName.PROPOSAL.value,
    PhaseName.VALIDATION.value,
    PhaseName.FINAL.value,
)


def trial_values(phase, shape, compute, seed=None, fractions=None):
    """The hyperparameter values of one planned trial, plain Python.

    Args:
        phase: str. The phase name.
        shape: `ShapeSpec`.
        compute: float. The trial's (largest) budget in GFLOPs.
        seed: int or `None`. The replicate seed.
        fractions: sequence of floats or `None`. Budgets of the one run as
            fractions of `compute` (see `format_fractions`).
    """
    values = {f: int(getattr(shape, f)) for f in SHAPE_FIELDS}
    values[COMPUTE_METRIC] = float(compute)
    values[PHASE_HP] = str(phase)
    if seed is not None:
        values[SEED_HP] = int(seed)
    if fractions is not None:
        values[BUDGET_FRACTIONS_HP] = format_fractions(fractions)
    return values


def format_fractions(fractions):
    """`"0.25,0.5,1"`: sorted budget fractions as a plain string."""
    return ",".join(f"{float(f):.12g}" for f in sorted(fractions))


def values_key(values):
    """A hashable key of the oracle-set hyperparameters of a trial."""
    names = TRIAL_HP_NAMES + OPTIONAL_HP_NAMES
    return json.dumps(
        {k: values[k] for k in names if k in values}, sort_keys=True,
    )


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
        hp.Int(dim, step, round_to_multiple(_DIM_LIMITS[dim], step),
               step=step, default=int(getattr(default, dim)))
    hp.Int("num_heads", 1, 1024, default=default.num_heads)
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
