"""Quadratic response surfaces in log-shape at one compute.

Pure numpy/scipy, model-agnostic: a central composite design around a
point (`ccd_design`, whitened by a curvature with `whitened_spread`), a
quadratic fitted to log-metrics there (`fit_surface`, optionally with a
ridge prior on its curvature or a borrowed curvature), and its minimiser
over a box under a constraint (`minimise_quadratic`). `IsoFlopSearch`
(`keras_sovit.scaling.isoflop.search`) builds its isoFLOP levels from these.
"""

import itertools

import numpy as np

_N_COEF = 10  # 1, 3 linear, 3 square, 3 cross terms


def quadratic_features(z):
    """Columns 1, z_k, z_k², z_j z_k of a full quadratic in 3 variables.

    Args:
        z: array (n, 3).

    Returns:
        Array (n, 10).
    """
    z = np.atleast_2d(np.asarray(z, dtype=float))
    cross = [z[:, 0] * z[:, 1], z[:, 0] * z[:, 2], z[:, 1] * z[:, 2]]
    return np.column_stack([np.ones(len(z)), z, z**2, *cross])


class Surface:
    """A quadratic in log-shape fitted to log-metrics at one compute.

    q(u) = c + gᵀ z + ½ zᵀ A z with z = Pᵀ (u − centre): P (`basis`) maps
    log-shape deviations to the design's own coordinates. `gradient` and
    `hessian` are in log-shape units.

    Args:
        centre: array (3,). Log-shape the expansion is taken around.
        basis: array (3, 3). P.
        c: float. Value at the centre.
        g: array (3,). Gradient in z.
        a: array (3, 3). Hessian in z.
        sigma: float. Residual standard deviation of the log-metric.
    """

    def __init__(self, centre, basis, c, g, a, sigma, dof=1):
        self.dof = int(dof)
        self.centre = np.asarray(centre, dtype=float)
        self.basis = np.asarray(basis, dtype=float)
        self.c = float(c)
        self.g = np.asarray(g, dtype=float)
        self.a = np.asarray(a, dtype=float)
        self.sigma = float(sigma)

    def __call__(self, u):
        """Predicted log-metric at log-shapes `u` (n, 3) or (3,)."""
        z = (np.atleast_2d(u) - self.centre) @ self.basis
        out = self.c + z @ self.g + 0.5 * np.einsum("ni,ij,nj->n", z,
                                                     self.a, z)
        return out if np.ndim(u) > 1 else float(out[0])

    @property
    def gradient(self):
        """Gradient at the centre, in log-shape units."""
        return self.basis @ self.g

    @property
    def hessian(self):
        """Hessian in log-shape units (constant)."""
        return self.basis @ self.a @ self.basis.T


def _coef_to_quadratic(coef):
    a = np.diag(2.0 * coef[4:7])
    a[0, 1] = a[1, 0] = coef[7]
    a[0, 2] = a[2, 0] = coef[8]
    a[1, 2] = a[2, 1] = coef[9]
    return coef[0], coef[1:4], a


def fit_surface(u, y, centre, basis, weights=None, hessian=None,
                prior=None):
    """Weighted least-squares `Surface` of log-metrics `y` at `u`.

    A full quadratic (10 coefficients), or, with `hessian` given, a
    borrowed-curvature model c + gᵀ z + λ · ½ (u − centre)ᵀ H (u − centre)
    (5 coefficients: the shape of the curvature comes from another level,
    its scale λ from these points).

    Args:
        u: array (n, 3). Log-shapes.
        y: array (n,). Log-metrics.
        centre: array (3,). The expansion point.
        basis: array (3, 3). Design coordinates z = basisᵀ (u − centre).
        weights: array (n,) or None. Per-trial weights (a bootstrap draw).
        hessian: array (3, 3) or None. A borrowed curvature (log units).
        prior: `(a, weight)` or None. A ridge pulling the full quadratic's
            curvature towards `a` (3 × 3, in design coordinates z) with
            `weight` (noise variance over prior variance): six
            pseudo-observations, so a noisy level cannot turn a bowl into
            a saddle on its own.

    Returns:
        A `Surface`.

    Example:

    ```python
    import numpy as np
    from keras_sovit.scaling.isoflop.surfaces import ccd_design, fit_surface
    u = ccd_design(np.zeros(3), np.eye(3) * 0.5)
    y = 0.3 * ((u - 0.1) ** 2).sum(axis=1)
    surface = fit_surface(u, y, np.zeros(3), np.eye(3) * 2)
    np.linalg.solve(surface.hessian, -surface.gradient)  # [0.1, 0.1, 0.1]
    ```
    """
    u = np.asarray(u, dtype=float)
    y = np.asarray(y, dtype=float)
    z = (u - centre) @ basis
    if hessian is None:
        phi = quadratic_features(z)
    else:
        du = u - centre
        bend = 0.5 * np.einsum("ni,ij,nj->n", du, hessian, du)
        phi = np.column_stack([np.ones(len(z)), z, bend])
    if len(u) < phi.shape[1]:
        raise ValueError(
            f"`u` must hold at least {phi.shape[1]} points for this model. "
            f"Received: {len(u)} points"
        )
    w = np.ones(len(y)) if weights is None else np.asarray(weights, float)
    root = np.sqrt(w)[:, None]
    lhs, rhs = phi * root, y * root[:, 0]
    if prior is not None and hessian is None:
        rows, targets = _curvature_prior(*prior)
        lhs, rhs = np.vstack([lhs, rows]), np.concatenate([rhs, targets])
    coef, *_ = np.linalg.lstsq(lhs, rhs, rcond=None)
    resid = y - phi @ coef
    dof = max(len(y) - phi.shape[1], 1)
    sigma = np.sqrt(np.sum(w * resid**2) / np.sum(w) * len(y) / dof)
    if hessian is None:
        c, g, a = _coef_to_quadratic(coef)
    else:
        inv = np.linalg.inv(basis)
        c, g, a = coef[0], coef[1:4], coef[4] * (inv @ hessian @ inv.T)
    return Surface(centre, basis, c, g, a, sigma, dof)


def _curvature_prior(a, weight):
    """Pseudo-rows tying the quadratic coefficients to the curvature a."""
    index = [(0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2)]
    rows = np.zeros((6, _N_COEF))
    targets = np.zeros(6)
    for r, (j, k) in enumerate(index):
        rows[r, 4 + r] = 1.0
        targets[r] = a[j, k] / 2 if j == k else a[j, k]
    root = np.sqrt(weight)
    return rows * root, targets * root


_ROTATABLE = 8 ** 0.25  # axial distance of a rotatable 3-factor CCD


def ccd_design(centre, spread, axial=_ROTATABLE, centre_points=2,
               corners_only=False):
    """A central composite design in log-shape.

    In design coordinates z: the 8 corners (±1, ±1, ±1), the 6 axial points
    at ±`axial` and `centre_points` replicates of 0; log-shapes are
    u = centre + z · `spread`ᵀ (`spread` maps z to log-shape deviations).
    `corners_only` drops the axial points (for a borrowed curvature).

    Args:
        centre: array (3,). Log-shape.
        spread: array (3, 3). Columns are the log-shape steps of z's axes.
        axial: float. Defaults to 8^(1/4) (rotatable).
        centre_points: int. Replicates of the centre. Defaults to `2`.
        corners_only: bool. Defaults to `False`.

    Returns:
        Array (n, 3) of log-shapes.
    """
    z = [np.array(list(itertools.product((-1.0, 1.0), repeat=3)))]
    if not corners_only:
        z.append(np.vstack([np.eye(3), -np.eye(3)]) * axial)
    z.append(np.zeros((centre_points, 3)))
    return np.asarray(centre, float) + np.vstack(z) @ np.asarray(spread).T


def whitened_spread(hessian, rise, max_step):
    """Design steps whose corners rise by `rise` under `hessian`.

    With H = V Λ Vᵀ, the spread is ρ V Λ^(−1/2) with ρ = sqrt(2·rise/3), so
    every corner (|z|² = 3) sits `rise` above the centre in the quadratic;
    flat directions are capped at `max_step` log units.

    Args:
        hessian: array (3, 3). Curvature of the log-metric.
        rise: float. Target rise at the corners (log units).
        max_step: float. Largest step along any eigen-direction.

    Returns:
        Array (3, 3).
    """
    rho = np.sqrt(2.0 * rise / 3.0)
    vals, vecs = np.linalg.eigh(positive_definite(hessian))
    steps = np.minimum(rho / np.sqrt(np.maximum(vals, 1e-12)), max_step)
    return vecs * steps


def positive_definite(hessian, floor=1e-3):
    """The nearest symmetric matrix with eigenvalues ≥ `floor` · max."""
    sym = 0.5 * (hessian + hessian.T)
    vals, vecs = np.linalg.eigh(sym)
    top = max(np.max(np.abs(vals)), 1e-12)
    vals = np.maximum(vals, floor * top)
    return (vecs * vals) @ vecs.T


def minimise_quadratic(gradient, hessian, centre, lo, hi, feasible=None):
    """Minimiser of gᵀ(u − c) + ½ (u − c)ᵀ H (u − c) over a box.

    The Newton point of the positive-definite part of H, clipped to the box,
    is the answer when it satisfies `feasible(u) ≥ 0`; otherwise SLSQP
    polishes it under the box and that constraint (H as given, so a saddle
    leads to the box's edge).

    Args:
        gradient: array (3,). g.
        hessian: array (3, 3). H.
        centre: array (3,). c.
        lo, hi: arrays (3,). The box.
        feasible: callable u -> float, or None.

    Returns:
        Array (3,).

    Example:

    ```python
    import numpy as np
    from keras_sovit.scaling.isoflop.surfaces import minimise_quadratic
    h = np.diag([2.0, 1.0, 1.0])
    minimise_quadratic(np.array([-2.0, 0, 0]), h, np.zeros(3),
                       -np.ones(3), np.ones(3) * 0.5)  # [0.5, 0, 0]
    ```
    """
    from scipy import optimize

    g, h, c = (np.asarray(v, dtype=float) for v in (gradient, hessian, centre))
    newton = c - np.linalg.solve(positive_definite(h), g)
    start = np.clip(newton, lo, hi)
    inside = np.allclose(start, newton)
    convex = np.all(np.linalg.eigvalsh(0.5 * (h + h.T)) > 0)
    if inside and convex and (feasible is None or feasible(start) >= 0):
        return start

    def value(u):
        du = u - c
        return g @ du + 0.5 * du @ h @ du, g + h @ du

    constraints = [] if feasible is None else [
        {"type": "ineq", "fun": feasible}
    ]
    result = optimize.minimize(
        value, start, jac=True, method="SLSQP",
        bounds=list(zip(lo, hi)), constraints=constraints,
        options={"maxiter": 100, "ftol": 1e-10},
    )
    return np.clip(result.x, lo, hi)
