"""The feature cache: evaluators of one model state share a forward pass.

Its own module, below both `evaluation` (which reads it) and `training`
(whose `BranchedRun` opens one block per evaluation point), so neither
package imports the other for it.
"""

import contextlib

# One dict per open `feature_cache()` block (one model state each).
_CACHE = []


@contextlib.contextmanager
def feature_cache():
    """Shares feature extraction between evaluators of one model state.

    Inside the block, `extract_features` computes the features of a given
    (model, images array) pair once; evaluators that score the same array
    (e.g. a few-shot and a many-shot probe with one test set) reuse them.
    The weights must not change inside the block.

    Example:

    ```python
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with keras_sovit.evaluation.feature_cache():
        pass  # run several evaluators on `model` here
    ```
    """
    _CACHE.append({})
    try:
        yield
    finally:
        _CACHE.pop()


def caching():
    """Whether a `feature_cache` block is active."""
    return bool(_CACHE)


def cached(key):
    """The value stored under `key` in the innermost block, else `None`."""
    if _CACHE and key in _CACHE[-1]:
        return _CACHE[-1][key][1]
    return None


def remember(key, value, keep_alive=None):
    """Stores `value` under `key` in the innermost block (if one is open),
    with `keep_alive` held until the block ends."""
    if _CACHE:
        _CACHE[-1][key] = (keep_alive, value)
