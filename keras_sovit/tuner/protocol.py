"""What a shape trial carries between the oracle and the hypermodel.

A trial's hyperparameters are its shape (`SHAPE_FIELDS`), its compute
budget `compute_gflops` and its `phase`; the hypermodel reports the
objective, `compute_gflops`, and the values at earlier compute checkpoints
as `checkpoint_metric_name(name, i)`. All values are plain Python types.
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
# Every hyperparameter the oracle sets on a trial.
TRIAL_HP_NAMES = (*SHAPE_FIELDS, COMPUTE_METRIC, PHASE_HP)
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
    GRID = "grid"
    PROPOSAL = "proposal"
    VALIDATION = "validation"
    FINAL = "final"
    DONE = "done"


# The phases a search runs unless told otherwise (`DONE` is implied).
DEFAULT_PHASES = (
    PhaseName.STAR.value,
    PhaseName.GRID.value,
    PhaseName.PROPOSAL.value,
    PhaseName.VALIDATION.value,
    PhaseName.FINAL.value,
)


def trial_values(phase, shape, compute):
    """The hyperparameter values of one planned trial, plain Python."""
    values = {f: int(getattr(shape, f)) for f in SHAPE_FIELDS}
    values[COMPUTE_METRIC] = float(compute)
    values[PHASE_HP] = str(phase)
    return values


def values_key(values):
    """A hashable key of the oracle-set hyperparameters of a trial."""
    return json.dumps(
        {k: values[k] for k in TRIAL_HP_NAMES if k in values},
        sort_keys=True,
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
    return hp
