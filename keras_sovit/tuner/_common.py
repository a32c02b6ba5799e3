"""Names and small helpers shared by the shape oracle's modules."""

import json

import numpy as np

from keras_sovit.shapes import SHAPE_FIELDS

PHASES = ("star", "grid", "validation", "final")
COMPUTE_METRIC = "compute_gflops"
PHASE_HP = "phase"
CHECKPOINT_SEPARATOR = "@"
DIMS = ("width", "depth", "mlp_dim")
FINAL_TRIALS = ("proposal", "control")
PROPOSAL_METHODS = ("paper", "joint", "auto")
# The paper's validation neighbours (Fig. 6) and grid extensions are ×1.2.
NEIGHBOUR_FACTOR = 1.2
# Every hyperparameter the oracle sets on a trial.
TRIAL_HP_NAMES = (*SHAPE_FIELDS, COMPUTE_METRIC, PHASE_HP)


def checkpoint_metric_name(name, index):
    """Name under which a hypermodel reports `name` at checkpoint `index`.

    A `keras_tuner.Tuner` passes only the dictionary returned by
    `HyperModel.fit` to the oracle, so the values at earlier compute
    checkpoints travel as extra metrics `"<name>@<index>"`; the oracle pairs
    `"<objective>@<i>"` with `"compute_gflops@<i>"`.
    """
    return f"{name}{CHECKPOINT_SEPARATOR}{int(index)}"


def snap(value, step):
    """The nearest positive multiple of `step` (Python rounding)."""
    return int(step * max(1, round(float(value) / step)))


def trial_values_key(values):
    """A hashable key of the oracle-set hyperparameters of a trial."""
    return json.dumps(
        {k: values[k] for k in TRIAL_HP_NAMES if k in values},
        sort_keys=True,
    )


def plain(value):
    """Casts numpy scalars and tuples to plain JSON-safe Python values."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
