"""Numerical core of the Eq. (2) fits: variable projection + polishing.

Works on normalised data (x / x_ref, t / t_ref, y / y_ref). For fixed
exponents (a, b, c) Eq. (2) is linear in (α, β, ξ, ε), so the exponents are
searched on a grid with the linear part solved by non-negative least squares
on relative errors (batched over the whole grid by enumerating active sets),
then the best starts are polished jointly with
`scipy.optimize.least_squares` in log-parametrisation.
"""

import itertools
import warnings

import numpy as np
from scipy import optimize

from keras_sovit.scaling import formulas

N_COEF = 6  # per group: alpha, a, beta, b, xi, eps (c is separate)
COEF_FLOOR = 1e-9
LOG_COEF_BOUNDS = (np.log(1e-12), np.log(1e8))
LOG_EXP_BOUNDS = (np.log(1e-3), np.log(20.0))
_SUBSETS = [
    list(s)
    for r in range(1, 5)
    for s in itertools.combinations(range(4), r)
]


def geomean(values, axis=None):
    """Geometric mean: the reference value data are normalised by.

    A float with `axis=None`, else an array (e.g. per column, `axis=0`).
    """
    out = np.exp(np.mean(np.log(values), axis=axis))
    return float(out) if axis is None else out


def exponent_grids(size):
    """Log grids for (a, b, c) used by the variable-projection search."""
    return (
        np.geomspace(0.03, 4.0, size),
        np.geomspace(0.03, 6.0, size),
        np.geomspace(0.08, 2.5, size),
    )


def _batched_nnls(G, r, n):
    """Min ||A θ − b||² over θ >= 0 given G = AᵀA, r = Aᵀb, n = ||b||².

    Enumerates the 15 active sets of the 4 columns; any feasible subset
    solution is a valid candidate and the true NNLS solution is one of
    them, so the minimum over feasible candidates is exact.
    """
    batch = G.shape[:-2]
    best_cost = np.full(batch, float(n))
    best_theta = np.zeros(batch + (4,))
    scale = np.trace(G, axis1=-2, axis2=-1)[..., None, None]
    for subset in _SUBSETS:
        idx = np.array(subset)
        Gs = G[..., idx[:, None], idx[None, :]]
        rs = r[..., idx]
        ridge = 1e-13 * (scale + 1e-300) * np.eye(len(idx))
        with np.errstate(all="ignore"):
            theta = np.linalg.solve(Gs + ridge, rs[..., None])[..., 0]
            cost = (
                n
                - 2 * np.sum(theta * rs, axis=-1)
                + np.einsum("...i,...ij,...j->...", theta, Gs, theta)
            )
        ok = np.all(theta >= 0, axis=-1) & np.isfinite(cost)
        ok &= cost < best_cost
        best_cost = np.where(ok, cost, best_cost)
        full = np.zeros(batch + (4,))
        full[..., idx] = theta
        best_theta = np.where(ok[..., None], full, best_theta)
    return np.maximum(best_cost, 0.0), best_theta


def grid_costs(u, v, y, w, a_grid, b_grid, c_grid):
    """NNLS costs and coefficients on the (c, a, b) grid for one group.

    The cost is Σ w (f / y − 1)², with `w` the points' weights. Returns
    cost (Nc, Na, Nb) and theta (Nc, Na, Nb, 4) with columns (α, β, ξ, ε)
    in normalised units.
    """
    terms = formulas.eq2_terms(
        u, v, a_grid[None, :, None, None], b_grid[None, None, :, None],
        c_grid[:, None, None, None],
    )
    n = len(y)
    shape = (len(c_grid), len(a_grid), len(b_grid), n)
    A = np.stack([np.broadcast_to(term, shape) for term in terms], axis=-1)
    root = np.sqrt(w)
    A = A * (root / y)[:, None]
    G = np.einsum("...ni,...nj->...ij", A, A)
    r = np.einsum("...ni,n->...i", A, root)
    return _batched_nnls(G, r, float(w.sum()))


def _pack(coefs, c_value):
    """Log-parameter vector from per-group coefficient arrays and c."""
    logs = np.log(np.maximum(np.asarray(coefs, dtype=float), COEF_FLOOR))
    return np.concatenate([logs.ravel(), [np.log(c_value)]])


def _unpack(p, n_groups, fixed_c):
    coefs = np.exp(p[: n_groups * N_COEF]).reshape(n_groups, N_COEF)
    c_value = fixed_c if fixed_c is not None else np.exp(p[-1])
    return coefs, c_value


def predict(coefs, c_value, u, v):
    """Eq. (2) in normalised units for one group's coefficient row."""
    alpha, a, beta, b, xi, eps = coefs
    return formulas.eq2(u, v, alpha, a, beta, b, xi, eps, c_value)


def _residuals(p, groups, fixed_c):
    coefs, c_value = _unpack(p, len(groups), fixed_c)
    out = []
    for k, (u, v, y, w) in enumerate(groups):
        out.append((predict(coefs[k], c_value, u, v) / y - 1.0) * np.sqrt(w))
    return np.concatenate(out)


def _jacobian(p, groups, fixed_c):
    """Analytic Jacobian of `_residuals` w.r.t. the log-parameters."""
    coefs, c_value = _unpack(p, len(groups), fixed_c)
    n_rows = sum(len(g[2]) for g in groups)
    jac = np.zeros((n_rows, len(p)))
    row = 0
    for k, (u, v, y, w) in enumerate(groups):
        alpha, a, beta, b, xi, eps = coefs[k]
        lu, lv = np.log(u), np.log(v)
        scale = np.sqrt(w) / y
        cap = alpha * u ** (-a) * scale
        vc = v ** (-c_value) * scale
        comp = beta * u**b * vc
        rows = slice(row, row + len(y))
        col = k * N_COEF
        jac[rows, col] = cap
        jac[rows, col + 1] = -a * lu * cap
        jac[rows, col + 2] = comp
        jac[rows, col + 3] = b * lu * comp
        jac[rows, col + 4] = xi * vc
        jac[rows, col + 5] = eps * scale
        if fixed_c is None:
            jac[rows, -1] = -c_value * lv * (comp + xi * vc)
        row += len(y)
    return jac


def _bounds(n_groups, fixed_c):
    lo, hi = [], []
    for _ in range(n_groups):
        for j in range(N_COEF):
            box = LOG_EXP_BOUNDS if j in (1, 3) else LOG_COEF_BOUNDS
            lo.append(box[0])
            hi.append(box[1])
    if fixed_c is None:
        lo.append(LOG_EXP_BOUNDS[0])
        hi.append(LOG_EXP_BOUNDS[1])
    return np.array(lo), np.array(hi)


def _starts(groups, grid_size, n_starts, fixed_c):
    """Best grid points (shared c) as coefficient starts."""
    a_grid, b_grid, c_grid = exponent_grids(grid_size)
    if fixed_c is not None:
        c_grid = np.array([float(fixed_c)])
    per_group = [grid_costs(u, v, y, w, a_grid, b_grid, c_grid)
                 for u, v, y, w in groups]
    n_ab = len(a_grid) * len(b_grid)
    totals = np.zeros(len(c_grid))
    best_ab = []
    for cost, _ in per_group:
        flat = cost.reshape(len(c_grid), n_ab)
        totals += flat.min(axis=1)
        best_ab.append(np.argsort(flat, axis=1))
    order = np.argsort(totals)
    starts = []
    # Best c values with each group's best (a, b); then, for the best c,
    # each group's runner-up (a, b) regions.
    for ci in order[:n_starts]:
        starts.append((ci, [ranks[ci, 0] for ranks in best_ab]))
    ci = order[0]
    for extra in range(1, n_starts // 2):
        pick = min(extra * 7, n_ab - 1)
        starts.append((ci, [ranks[ci, pick] for ranks in best_ab]))
    out = []
    for ci, abs_ in starts:
        coefs = []
        for k, ab in enumerate(abs_):
            ai, bi = divmod(int(ab), len(b_grid))
            theta = per_group[k][1][ci, ai, bi]
            coefs.append([
                theta[0], a_grid[ai], theta[1], b_grid[bi], theta[2],
                theta[3],
            ])
        out.append((np.array(coefs), c_grid[ci]))
    return out


def fit_groups(
    groups,
    fixed_c=None,
    loss="linear",
    f_scale=None,
    n_starts=6,
    grid_size=20,
    extra_starts=(),
    rng=None,
    tol=1e-12,
    max_nfev=400,
):
    """Fits Eq. (2) to several groups sharing c (or with c fixed).

    Args:
        groups: list of (u, v, y) or (u, v, y, w) normalised arrays, one
            per dimension; `w` weights the points (default 1).
        fixed_c: float or None.
        loss: "linear" or "huber" (scipy name) on relative residuals.
        f_scale: Huber threshold on relative residuals; `None` with
            loss="huber" first fits least squares, then uses
            `huber_scale` of its residuals.
        n_starts: int. Number of grid starts to polish.
        grid_size: int. Points per exponent grid axis.
        extra_starts: iterable of (coefs, c) to polish as well.
        rng: numpy Generator for jittered starts (optional).
        tol: float. ftol = xtol = gtol of the polish.
        max_nfev: int. Evaluation cap of each polish.

    Returns:
        dict with "coefs" (K, 6), "c", "cost", "converged", "residuals".
    """
    groups = [_with_weights(g) for g in groups]
    starts = _starts(groups, grid_size, n_starts, fixed_c)
    starts.extend(extra_starts)
    if rng is not None and starts:
        coefs, c_value = starts[0]
        for _ in range(max(0, n_starts // 3)):
            jitter = np.exp(rng.normal(0, 0.3, size=coefs.shape))
            c_jit = c_value * np.exp(rng.normal(0, 0.1))
            starts.append((coefs * jitter, c_jit))
    lo, hi = _bounds(len(groups), fixed_c)
    auto = loss == "huber" and f_scale is None
    first_loss = "linear" if auto else loss
    best = None
    for coefs, c_value in starts:
        p0 = _pack(coefs, c_value if fixed_c is None else 1.0)
        if fixed_c is not None:
            p0 = p0[:-1]
        res = _polish(
            p0, groups, fixed_c, lo, hi, first_loss, f_scale or 1.0, tol,
            max_nfev,
        )
        if best is None or res.cost < best.cost:
            best = res
    if auto:
        f_scale = huber_scale(best.fun, len(best.x))
        if f_scale > 1e-9:
            best = _polish(
                best.x, groups, fixed_c, lo, hi, "huber", f_scale, tol,
                max_nfev,
            )
    coefs, c_value = _unpack(best.x, len(groups), fixed_c)
    return {
        "coefs": coefs,
        "c": float(c_value),
        "cost": float(best.cost),
        "converged": bool(best.status > 0 or best.cost < 1e-20),
        "nfev": int(best.nfev),
        "residuals": best.fun,
        "at_bounds": _at_bounds(best.x, lo, hi),
        "p": best.x,
        "f_scale": None if f_scale is None else float(f_scale),
    }


def _with_weights(group):
    u, v, y = group[:3]
    w = group[3] if len(group) > 3 else np.ones_like(y)
    return u, v, y, np.asarray(w, dtype=float)


def relative_weights(y, se):
    """Weights 1 / (se / y)² of points, normalised to mean 1.

    Points without a standard error get the median weight of the others
    (all weights are 1 when none has one).
    """
    y = np.asarray(y, dtype=float)
    se = np.array([np.nan if e is None else e for e in se], dtype=float)
    known = np.isfinite(se) & (se > 0)
    if not known.any():
        return np.ones_like(y)
    weights = np.full_like(y, np.nan)
    weights[known] = (y[known] / se[known]) ** 2
    weights[~known] = np.median(weights[known])
    return weights / weights.mean()


def huber_scale(residuals, n_params):
    """1.345 × a robust (MAD) estimate of the residual spread.

    Huber's threshold for 95% efficiency under Gaussian noise; the MAD is
    inflated by sqrt(n / (n − p)) for the fitted parameters.
    """
    r = np.asarray(residuals, dtype=float)
    n = len(r)
    mad = np.median(np.abs(r - np.median(r)))
    sigma = 1.4826 * mad * np.sqrt(n / max(n - n_params, 1))
    return float(max(1.345 * sigma, 1e-12))


def _polish(p0, groups, fixed_c, lo, hi, loss, f_scale, tol, max_nfev):
    p0 = np.clip(p0, lo + 1e-9, hi - 1e-9)
    return optimize.least_squares(
        _residuals,
        p0,
        jac=_jacobian,
        args=(groups, fixed_c),
        bounds=(lo, hi),
        loss=loss,
        f_scale=f_scale,
        method="trf",
        x_scale=1.0,
        ftol=tol,
        xtol=tol,
        gtol=tol,
        max_nfev=max_nfev,
    )


def _at_bounds(p, lo, hi):
    tol = 1e-6
    return np.flatnonzero((p - lo < tol) | (hi - p < tol)).tolist()


def warn_not_converged(what):
    warnings.warn(
        f"{what} did not converge; the fitted parameters may be poor. "
        "Check `.converged_` and `.report()`.",
        RuntimeWarning,
        stacklevel=3,
    )
