"""Noise in measured values: replicate summaries and honest comparisons.

Every value a sweep measures is noisy (the evaluation set, the shots, the
seed). These helpers turn replicates and reported standard errors into a
mean with a standard error, and compare two settings with a stated error
rate, answering "better", "worse" or "not distinguishable".
"""

import math

import numpy as np
from scipy import stats

from keras_sovit.shapes import SHAPE_FIELDS

VERDICTS = ("better", "worse", "not distinguishable")


def summarize(values, standard_errors=None):
    """Mean, standard error and count of replicate measurements.

    With two or more values the standard error is the sample standard
    deviation over √n (it holds the seed's and the evaluation's noise);
    with one value it is that value's reported standard error, if any.

    Args:
        values: sequence of floats, one per replicate.
        standard_errors: sequence of floats (or `None` entries) or `None`.

    Returns:
        dict with `mean`, `se` (float or `None`) and `n`.

    Example:

    ```python
    from keras_sovit.scaling.noise import summarize
    summarize([0.80, 0.84, 0.78])  # mean 0.807, se 0.0176, n 3
    ```
    """
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        raise ValueError("`values` must not be empty. Received: values=[]")
    n = int(values.size)
    if n >= 2:
        se = float(values.std(ddof=1) / math.sqrt(n))
    else:
        known = [e for e in (standard_errors or ()) if e is not None]
        se = float(known[0]) if known else None
    return {"mean": float(values.mean()), "se": se, "n": n}


def replicate_summaries(rows):
    """`summarize` per (shape, compute) over the rows of several seeds.

    Args:
        rows: iterable of `SweepResults` row dicts.

    Returns:
        dict `(shape fields..., compute) -> summary`.
    """
    groups = {}
    for row in rows:
        key = tuple(int(row[f]) for f in SHAPE_FIELDS) + (
            round(float(row["compute_gflops"]), 6),
        )
        groups.setdefault(key, []).append(row)
    return {
        key: summarize([r["metric_value"] for r in group],
                       [r.get("metric_se") for r in group])
        for key, group in groups.items()
    }


def compare(a, b, alpha=0.05):
    """Whether `a` is lower (better) than `b`, at error rate `alpha`.

    Welch's two-sided t-test on two groups of replicates (lower is
    better). With fewer than two values on a side there is no honest
    variance estimate and the answer is "not distinguishable".

    Args:
        a, b: sequences of floats (replicate measurements).
        alpha: float. The test's type-I error rate.

    Returns:
        dict with `verdict` (one of `VERDICTS`, for `a` against `b`),
        `difference` (mean a − mean b), its `se`, `p_value` and `alpha`.

    Example:

    ```python
    from keras_sovit.scaling.noise import compare
    compare([0.80, 0.79, 0.81], [0.90, 0.92, 0.91])["verdict"]  # "better"
    ```
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    out = {"verdict": "not distinguishable", "difference": None, "se": None,
           "p_value": None, "alpha": float(alpha)}
    if a.size == 0 or b.size == 0:
        return out
    out["difference"] = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return out
    se = math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    out["se"] = float(se)
    if se == 0.0:
        return out
    result = stats.ttest_ind(a, b, equal_var=False)
    out["p_value"] = float(result.pvalue)
    if result.pvalue < alpha:
        out["verdict"] = "better" if out["difference"] < 0 else "worse"
    return out


def local_optimality(proposal, neighbours, alpha=0.1):
    """Whether any neighbour is significantly better than the proposal.

    One one-sided Welch test per neighbour ("the neighbour's mean is
    lower"), Bonferroni-corrected: a truly locally optimal proposal (no
    neighbour better) is called "not locally optimal" with probability at
    most `alpha`, however many neighbours there are.

    Args:
        proposal: sequence of floats, the proposal's replicates.
        neighbours: dict `name -> sequence of floats`.
        alpha: float in (0, 1). The family-wise false-alarm rate.

    Returns:
        dict with `locally_optimal` (`False` when some neighbour is better,
        `True` when every neighbour was tested and none is, `None` when a
        side has fewer than two replicates), `better` (the names of the
        significantly better neighbours), `p_values` (name -> one-sided p
        or `None`) and `alpha`.

    Example:

    ```python
    from keras_sovit.scaling.noise import local_optimality
    local_optimality([0.80, 0.81, 0.79],
                     {"wider": [0.70, 0.71, 0.69],
                      "deeper": [0.83, 0.82, 0.84]})["better"]  # ["wider"]
    ```
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"`alpha` must lie in (0, 1). Received: {alpha!r}")
    own = np.asarray(proposal, dtype=float)
    p_values = {}
    for name, values in neighbours.items():
        values = np.asarray(values, dtype=float)
        p_values[name] = None
        if own.size >= 2 and values.size >= 2:
            p = stats.ttest_ind(values, own, equal_var=False,
                                alternative="less").pvalue
            # Zero variance on both sides: the t statistic is undefined.
            p_values[name] = None if np.isnan(p) else float(p)
    level = alpha / max(len(p_values), 1)
    better = [n for n, p in p_values.items() if p is not None and p < level]
    tested = p_values and all(p is not None for p in p_values.values())
    locally_optimal = False if better else (True if tested else None)
    return {"locally_optimal": locally_optimal, "better": better,
            "p_values": p_values, "alpha": float(alpha)}


def clearly_lower(low, high, sigmas=2.0):
    """Whether summary `low` is below `high` by more than `sigmas` SEs.

    Returns `None` when a standard error is unknown.
    """
    if low["se"] is None or high["se"] is None:
        return None
    gap = high["mean"] - low["mean"]
    return bool(gap > sigmas * math.hypot(low["se"], high["se"]))
