"""The one JSON-safe converter of settings, fitted results and reports."""

import numpy as np


def jsonable(value):
    """`value` as plain JSON-safe Python: objects with `to_dict` (shapes,
    rounding, settings) as dicts, dict keys as strings, tuples as lists,
    NumPy scalars and arrays as Python numbers and lists.

    Example:

    ```python
    import numpy as np
    from keras_sovit._json import jsonable

    jsonable({"s": (np.float64(0.5), 1)})  # {"s": [0.5, 1]}
    ```
    """
    if callable(getattr(value, "to_dict", None)) and not isinstance(
        value, type
    ):
        return jsonable(value.to_dict())
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
