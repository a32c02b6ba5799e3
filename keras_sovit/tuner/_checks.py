"""Validation of the `ShapeOracle` constructor arguments."""

import keras_tuner

from keras_sovit._validation import check_choice
from keras_sovit._validation import check_positive_number
from keras_sovit._validation import check_shape_spec
from keras_sovit.tuner._common import CHECKPOINT_SEPARATOR
from keras_sovit.tuner._common import DIMS
from keras_sovit.tuner._common import TRIAL_HP_NAMES


def check_objective(objective):
    """A single, minimised `keras_tuner.Objective` (str means "min")."""
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
    if (CHECKPOINT_SEPARATOR in objective.name
            or objective.name in TRIAL_HP_NAMES):
        raise ValueError(
            "`objective` must name a metric, not a reserved name. "
            f"Received: objective={objective.name!r}"
        )
    return objective


def optional_positive_float(name, value):
    return None if value is None else check_positive_number(name, value)


def optional_shape(name, value):
    """A `ShapeSpec` from a `ShapeSpec`, a dict of its fields, or `None`."""
    if value is None:
        return None
    return check_shape_spec(name, value, allow_dict=True)


def check_grids(name, grids):
    """Sorted lists of positive ints per shape dimension."""
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


def check_exponents(exponents):
    """Positive scaling exponents per shape dimension."""
    if not isinstance(exponents, dict) or not exponents:
        raise ValueError(
            "`exponents` must be a dict of dimension -> exponent. "
            f"Received: exponents={exponents!r}"
        )
    out = {}
    for dim, value in exponents.items():
        check_choice("exponents", dim, DIMS)
        out[dim] = check_positive_number(f"exponents['{dim}']", value)
    return out


def check_star_sweep(star_center, star_grids, star_budgets):
    """Each star grid lies below the centre, with 3+ values; 2+ budgets."""
    for dim, values in star_grids.items():
        check_choice("star_grids", dim, DIMS)
        limit = getattr(star_center, dim)
        if any(v >= limit for v in values):
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
    if len(set(star_budgets)) < 2:
        raise ValueError(
            "`star_budgets` needs at least 2 distinct budgets. "
            f"Received: star_budgets={star_budgets}"
        )
