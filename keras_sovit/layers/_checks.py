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


def check_token_input(layer_name, input_shape, num_heads):
    """Validates a `(batch, tokens, width)` input whose width fits the heads.

    Returns the width.
    """
    if len(input_shape) != 3:
        raise ValueError(
            f"`{layer_name}` expects inputs of shape (batch, tokens, "
            f"width). Received: input_shape={input_shape}"
        )
    width = input_shape[-1]
    if width is None or width % num_heads:
        raise ValueError(
            "The input width must be divisible by `num_heads`. "
            f"Received: width={width}, num_heads={num_heads}"
        )
    return width


def check_bool(name, value):
    """Raises a `ValueError` naming `name` unless `value` is a bool."""
    if not isinstance(value, bool):
        raise ValueError(
            f"`{name}` must be a bool. Received: {name}={value!r}"
        )
    return value
