"""What a shape trial carries between the oracle and the hypermodel.

A trial's hyperparameters are its shape (`SHAPE_FIELDS`), its compute
budget `compute_gflops` and its `phase`; the hypermodel reports the
objective, `compute_gflops`, and the values at earlier compute checkpoints
as `checkpoint_metric_name(name, i)`. All values are plain Python types.
"""

import enum
import json

from keras_sovit.scaling.results import COMPUTE_METRIC
from keras_sovit.scaling.results import checkpoint_metric_name  # noqa: F401
from keras_sovit.shapes import SHAPE_FIELDS

PHASE_HP = "phase"
# Every hyperparameter the oracle sets on a trial.
TRIAL_HP_NAMES = (*SHAPE_FIELDS, COMPUTE_METRIC, PHASE_HP)


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
