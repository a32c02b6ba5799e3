"""Input checks shared by the layers (private)."""

import numbers


def check_rate(name, value):
    """Raises a `ValueError` naming `name` unless 0 <= value < 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(
            f"`{name}` must be a float in [0, 1). Received: {name}={value!r}"
        )
    if not 0.0 <= value < 1.0:
        raise ValueError(
            f"`{name}` must be a float in [0, 1). Received: {name}={value!r}"
        )
    return float(value)
