"""Argument checks shared by every package: one copy of each rule.

Pure Python (numpy only for arrays): `shapes` and `scaling` use these
checks without importing a framework. Every check raises a `ValueError`
that names the argument and repeats the value received, and returns the
value normalised (plain `int` or `float`, sorted lists, ...).
"""

import math
import numbers


def _fail(name, what, value):
    raise ValueError(f"`{name}` must be {what}. Received: {name}={value!r}")


def check_positive_int(name, value):
    """`value` as a Python int > 0 (numpy ints too, bools never)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        _fail(name, "a positive integer", value)
    if value <= 0:
        _fail(name, "a positive integer", value)
    return int(value)


def check_non_negative_int(name, value):
    """`value` as a Python int >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        _fail(name, "a non-negative integer", value)
    if value < 0:
        _fail(name, "a non-negative integer", value)
    return int(value)


def check_number(
    name, value, low=None, high=None, low_open=False, high_open=False,
    allow_none=False,
):
    """`value` as a finite float within optional bounds.

    Args:
        name: str. The argument's name, for the error message.
        value: the value to check. Bools are refused.
        low, high: float or `None`. Bounds; `None` for none.
        low_open, high_open: bool. Whether a bound itself is excluded.
        allow_none: bool. Whether `None` passes (and is returned).
    """
    if value is None and allow_none:
        return None
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        bounds.append(f"{'<' if high_open else '<='} {high:g}")
    what = "finite, a number" + (" " + " and ".join(bounds) if bounds else "")
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
    ):
        _fail(name, what, value)
    if low is not None and (value < low or (low_open and value == low)):
        _fail(name, what, value)
    if high is not None and (value > high or (high_open and value == high)):
        _fail(name, what, value)
    return float(value)


def check_positive_number(name, value, allow_zero=False):
    """`value` as a finite float > 0 (>= 0 with `allow_zero`)."""
    kind = "non-negative" if allow_zero else "positive"
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not allow_zero)
    ):
        _fail(name, f"a {kind} finite number", value)
    return float(value)


# Named constraints shared by every call that takes such a value, so each
# rule is written once.


def check_learning_rate(name, value, allow_zero=False):
    """A learning rate: finite, > 0 (>= 0 with `allow_zero`)."""
    return check_number(name, value, low=0.0, low_open=not allow_zero)


def check_decay(name, value):
    """A multiplicative decay per layer or step, in (0, 1]."""
    return check_number(name, value, low=0.0, high=1.0, low_open=True)


def check_momentum(name, value, allow_none=False):
    """A moving-average coefficient, in [0, 1)."""
    return check_number(name, value, low=0.0, high=1.0, high_open=True,
                        allow_none=allow_none)  # fmt: skip


def check_epsilon(name, value):
    """A numerical-stability constant: finite, > 0."""
    return check_number(name, value, low=0.0, low_open=True)


def check_rate(name, value):
    """A fraction in [0, 1), such as a dropout rate."""
    return check_number(name, value, low=0.0, high=1.0, high_open=True)


def check_bool(name, value, allow_none=False):
    """`value` unchanged if it is a bool (or `None` with `allow_none`)."""
    if (value is None and allow_none) or isinstance(value, bool):
        return value
    _fail(name, "a bool", value)


def check_choice(name, value, choices):
    """`value` unchanged if it is one of `choices`."""
    if value not in choices:
        _fail(name, f"one of {list(choices)}", value)
    return value


def check_range_pair(name, value, upper=None):
    """A pair `(low, high)` with `0 < low <= high` (`<= upper`), floats."""
    ok = (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, numbers.Real) for v in value)
        and 0 < value[0] <= value[1]
        and (upper is None or value[1] <= upper)
    )
    if not ok:
        bound = f" <= {upper}" if upper is not None else ""
        _fail(name, f"a pair (low, high) with 0 < low <= high{bound}", value)
    return float(value[0]), float(value[1])


def check_positive_finite_array(name, values):
    """`values` as a float array whose entries are all finite and > 0."""
    import numpy as np

    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        _fail(name, "an array of numbers", values)
    if np.any(np.isnan(array)):
        raise ValueError(f"`{name}` contains NaN. Received: {name}={array}")
    bad = ~np.isfinite(array) | (array <= 0)
    if np.any(bad):
        raise ValueError(
            f"`{name}` must be positive and finite. Received: "
            f"{int(bad.sum())} bad values in {name}, the first "
            f"{array[bad][:3].tolist()}"
        )
    return array


def check_finite_values(name, values):
    """`values` (an array) unchanged if every float entry is finite; else
    a `ValueError` naming the array and counting the bad entries."""
    import numpy as np

    values = np.asarray(values)
    if np.issubdtype(values.dtype, np.inexact):
        bad = int(np.count_nonzero(~np.isfinite(values)))
        if bad:
            raise ValueError(
                f"`{name}` must be finite. Received: {bad} NaN or infinite "
                f"values of {values.size} in {name}"
            )
    return values


def check_class_labels(name, labels, num_classes=None, min_classes=1):
    """Integer class ids in `[0, num_classes)` (`num_classes=None`: only
    non-negative) with at least `min_classes` distinct classes."""
    import numpy as np

    labels = np.asarray(labels)
    upper = np.inf if num_classes is None else num_classes
    bad = labels[(labels < 0) | (labels >= upper)]
    if bad.size:
        where = "num_classes" if num_classes is None else num_classes
        raise ValueError(
            f"`{name}` has labels out of range [0, {where}): "
            f"{sorted(set(bad.tolist()))[:5]}"
            + ("" if num_classes is None else ". Pass the right `num_classes`.")
        )
    distinct = len(np.unique(labels))
    if distinct < min_classes:
        raise ValueError(
            f"`{name}` must hold at least {min_classes} classes. Received: "
            f"{distinct} class(es) in {name}"
        )
    return labels


def check_dim_dict(name, value, check, dims, require_all=False):
    """A dict keyed by shape dimensions, each value passed through `check`.

    Args:
        name: str. The argument's name.
        value: the dict to check.
        check: callable `(name, value) -> value`, e.g.
            `check_positive_number`.
        dims: the allowed keys, e.g. `keras_sovit.shapes.SCALED_DIMS`.
        require_all: bool. Whether every key of `dims` must be present.

    Returns:
        A new dict in the order of `dims`.
    """
    if not isinstance(value, dict) or not value:
        _fail(name, f"a non-empty dict keyed by {list(dims)}", value)
    unknown = [k for k in value if k not in dims]
    missing = [k for k in dims if k not in value] if require_all else []
    if unknown or missing:
        _fail(name, f"a dict {'with' if require_all else 'among'} keys "
              f"{list(dims)}", value)
    return {d: check(f"{name}[{d!r}]", value[d]) for d in dims if d in value}


def check_grids(name, grids, dims):
    """Shape grids: `{dim: sorted distinct positive ints}`, none empty."""

    def values(key, entries):
        if isinstance(entries, str) or not hasattr(entries, "__iter__"):
            _fail(key, "a non-empty list of positive integers", entries)
        entries = [check_positive_int(key, v) for v in entries]
        if not entries:
            _fail(key, "a non-empty list of positive integers", entries)
        return sorted(set(entries))

    return check_dim_dict(name, grids, values, dims)


def check_image_shape(image_shape):
    """Validates a static `(height, width, channels)` tuple."""
    if not isinstance(image_shape, (tuple, list)) or len(image_shape) != 3:
        raise ValueError(
            "`image_shape` must be a (height, width, channels) tuple. "
            f"Received: image_shape={image_shape!r}"
        )
    for value in image_shape:
        if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
                or value < 1):
            raise ValueError(
                "`image_shape` must hold three positive integers (static "
                f"shapes only). Received: image_shape={image_shape!r}"
            )
    return tuple(check_positive_int("image_shape", v) for v in image_shape)


def image_hw(image_size, name="image_size"):
    """An int or `(height, width)` image size as a `(height, width)` tuple."""
    if isinstance(image_size, (tuple, list)):
        if len(image_size) != 2:
            _fail(name, "an int or a (height, width) pair", image_size)
        return tuple(check_positive_int(name, v) for v in image_size)
    size = check_positive_int(name, image_size)
    return size, size


def check_bounds(name, bounds, defaults):
    """A search box `{dim: (low, high)}`, `0 < low <= high`, as floats.

    Keys must be among those of `defaults`; missing ones take the default.
    """
    box = {dim: (float(lo), float(hi)) for dim, (lo, hi) in defaults.items()}
    if bounds is None:
        return box
    if not isinstance(bounds, dict) or not set(bounds) <= set(defaults):
        _fail(name, f"a dict keyed by {list(defaults)}", bounds)
    for dim, pair in bounds.items():
        ok = (
            isinstance(pair, (tuple, list))
            and len(pair) == 2
            and all(isinstance(v, numbers.Real) for v in pair)
            and 0 < pair[0] <= pair[1]
        )
        if not ok:
            _fail(f"{name}[{dim!r}]", "a pair (low, high) with 0 < low <= "
                  "high", pair)
        box[dim] = (float(pair[0]), float(pair[1]))
    return box
