"""The compute-optimal shape's path over compute: a power law by GLS.

Given the log-shape optimum of several isoFLOP levels with their
covariances, `fit_path` fits u*(v) = a + s · v (v = log compute relative
to the target) by generalised least squares, robust to an outlying level,
with an optional Gaussian prior on the exponents s.
"""

import numpy as np


def fit_path(v, optima, covariances, robust=True, slope_prior=None):
    """Generalised least squares of u*(v) = a + s · v through level optima.

    Args:
        v: array (L,). Log compute of each level relative to the target.
        optima: array (L, 3). Log-shape optimum of each level.
        covariances: array (L, 3, 3). Their covariances.
        robust: bool. Down-weights a level whose Mahalanobis distance from
            the path exceeds the χ²(3) 0.99 quantile (its covariance is
            inflated by the excess, twice). Defaults to `True`.
        slope_prior: `(mean, sd)` or None. A Gaussian prior on s, each
            dimension independent: where the levels cannot tell the slope
            (a flat valley), the prior does. Defaults to `None`.

    Returns:
        (a, s, cov): arrays (3,), (3,) and the (6, 6) covariance of (a, s).
        With one level, s = 0 and a is that level's optimum.

    Example:

    ```python
    import numpy as np
    from keras_sovit.scaling.isoflop.path import fit_path
    v = np.log([1 / 64, 1 / 16, 1 / 4])
    optima = np.outer(v, [0.2, 0.3, 0.5]) + [7.0, 3.3, 8.4]
    a, s, _ = fit_path(v, optima, np.tile(np.eye(3) * 1e-3, (3, 1, 1)))
    # a = [7.0, 3.3, 8.4] (log-shape at the target), s = [0.2, 0.3, 0.5]
    ```
    """
    v = np.asarray(v, dtype=float)
    optima = np.asarray(optima, dtype=float)
    covariances = np.asarray(covariances, dtype=float)
    if len(v) == 1 and slope_prior is None:
        return optima[0], np.zeros(3), np.block([
            [covariances[0], np.zeros((3, 3))],
            [np.zeros((3, 3)), np.zeros((3, 3))],
        ])
    inflate = np.ones(len(v))
    for _ in range(3 if robust else 1):
        beta, cov = _gls(v, optima, covariances * inflate[:, None, None],
                         slope_prior)
        resid = optima - beta[:3] - np.outer(v, beta[3:])
        d2 = np.einsum("li,lij,lj->l", resid, np.linalg.inv(covariances),
                       resid)
        inflate = np.maximum(1.0, d2 / _OUTLIER_D2)
    return beta[:3], beta[3:], cov


_OUTLIER_D2 = 11.34  # χ²(3) 0.99 quantile: a level this far is down-weighted


def _gls(v, optima, covariances, slope_prior=None):
    eye = np.eye(3)
    info = np.zeros((6, 6))
    score = np.zeros(6)
    if slope_prior is not None:
        mean, sd = slope_prior
        info[3:, 3:] += eye / sd**2
        score[3:] += np.asarray(mean, float) / sd**2
    for vj, uj, sj in zip(v, optima, covariances):
        x = np.hstack([eye, vj * eye])
        inv = np.linalg.inv(sj)
        info += x.T @ inv @ x
        score += x.T @ inv @ uj
    cov = np.linalg.inv(info)
    return cov @ score, cov
