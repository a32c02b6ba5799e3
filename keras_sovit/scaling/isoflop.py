"""A model-agnostic compute-optimal shape search: IsoFLOP trust regions.

Pure numpy/scipy. The search assumes only that, at a fixed compute, the
metric is smooth in log-shape with one basin, and that the optimum moves
smoothly with compute; it never assumes a functional form for the loss.
See `IsoFlopSearch` for the phases and their contracts.
"""

import itertools
import numbers

import numpy as np

from keras_sovit.shapes import ShapeSpec
from keras_sovit._validation import image_hw

DIMS = ("width", "depth", "mlp_dim")


class ShapeCost:
    """Vectorised exact parameter and forward-GFLOP counts of `ShapeSpec`.

    Both counts are polynomials in (width, depth, mlp_dim) of degree at
    most (2, 1, 1). Their coefficients are read off `ShapeSpec.num_params`
    and `ShapeSpec.gflops` by exact interpolation on 12 small shapes, so
    the formulas live in one place (`ShapeSpec`) and this class only
    vectorises them. The interpolant is checked against `ShapeSpec` on two
    large shapes; a `RuntimeError` says so if `ShapeSpec` ever leaves this
    polynomial family. The head count does not enter either count.

    Args:
        patch_size: int. Defaults to `14`.
        image_size: int or (height, width). Defaults to `224`.
        pool_type: str. As in `ShapeSpec.gflops`. Defaults to `"map"`.

    Example:

    ```python
    from keras_sovit.scaling.isoflop import ShapeCost
    cost = ShapeCost(patch_size=14)
    cost.gflops(1152, 27, 4304)  # 220.35..., as ShapeSpec.gflops()
    cost.num_params([608, 1152], [10, 27], [928, 4304])
    ```
    """

    _POWERS = list(itertools.product((0, 1, 2), (0, 1), (0, 1)))

    def __init__(self, patch_size=14, image_size=224, pool_type="map"):
        self.patch_size = patch_size
        self.image_size = image_hw(image_size)
        self.pool_type = pool_type
        nodes = list(itertools.product((1, 2, 3), (1, 2), (1, 2)))
        basis = np.array([self._monomials(*n) for n in nodes])
        self._coef = {}
        for kind in ("gflops", "num_params"):
            values = [self._exact(kind, *n) for n in nodes]
            self._coef[kind] = np.linalg.solve(basis, np.array(values))
        self._check()

    def _exact(self, kind, width, depth, mlp_dim):
        shape = ShapeSpec(width, depth, mlp_dim, 1, self.patch_size)
        return getattr(shape, kind)(
            self.image_size, pool_type=self.pool_type, strict=False
        )

    def _monomials(self, width, depth, mlp_dim):
        w, d, m = (np.asarray(v, dtype=float) for v in (width, depth, mlp_dim))
        return np.stack(
            np.broadcast_arrays(*[w**i * d**j * m**k for i, j, k in
                                  self._POWERS]),
            axis=-1,
        )

    def _check(self):
        for shape in ((608, 10, 928), (1968, 40, 6144)):
            for kind in ("gflops", "num_params"):
                exact = self._exact(kind, *shape)
                got = float(getattr(self, kind)(*shape))
                if abs(got - exact) > 1e-9 * abs(exact):
                    raise RuntimeError(
                        f"ShapeSpec.{kind} is no longer a polynomial of "
                        f"degree (2, 1, 1): {got} vs {exact} at {shape}."
                    )

    def gflops(self, width, depth, mlp_dim):
        """Forward GFLOPs per image, as `ShapeSpec.gflops`, vectorised."""
        return self._monomials(width, depth, mlp_dim) @ self._coef["gflops"]

    def num_params(self, width, depth, mlp_dim):
        """Weights of the backbone, as `ShapeSpec.num_params`, vectorised."""
        return (
            self._monomials(width, depth, mlp_dim) @ self._coef["num_params"]
        )


# ---------------------------------------------------------------------------
# Response surfaces in log-shape at one compute.

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
    from keras_sovit.scaling.isoflop import ccd_design, fit_surface
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


# ---------------------------------------------------------------------------
# Trainable shapes and constrained minimisation.


class Trainability:
    """Which shapes a compute budget can train, in log-shape coordinates.

    A shape is trainable at compute t when it lies in the box `bounds` and
    sees at least `min_examples_per_param` examples per weight:
    t / GFLOPs(x) ≥ floor · N(x). `margin` is the log of that ratio over the
    floor (≥ 0 when trainable).

    Args:
        cost: `ShapeCost`.
        min_examples_per_param: float. Defaults to `1.0`.
        bounds: dict `{dim: (low, high)}` of shape values.
    """

    def __init__(self, cost, min_examples_per_param, bounds):
        self.cost = cost
        self.floor = float(min_examples_per_param)
        self.lo = np.log([bounds[d][0] for d in DIMS])
        self.hi = np.log([bounds[d][1] for d in DIMS])

    def margin(self, u, t):
        """log(examples / (floor · params)); vectorised over rows of u."""
        x = np.exp(np.asarray(u, dtype=float))
        w, d, m = x[..., 0], x[..., 1], x[..., 2]
        examples = t / self.cost.gflops(w, d, m)
        if self.floor <= 0:
            return np.full(np.shape(w), np.inf)
        return np.log(examples / (self.floor * self.cost.num_params(w, d, m)))

    def clip(self, u):
        """Clips log-shapes to the box."""
        return np.clip(u, self.lo, self.hi)

    def shrink_in(self, u, t):
        """Shrinks each row of `u` uniformly in log (all dimensions by the
        same factor) until it is trainable at t: an untrainable design
        point lands on the trainability boundary."""
        u = self.clip(np.atleast_2d(np.asarray(u, dtype=float)))
        out = u.copy()
        for i, row in enumerate(u):
            if self.margin(row, t) >= 0:
                continue
            lo, hi = 0.0, 10.0  # log factor
            for _ in range(40):
                mid = 0.5 * (lo + hi)
                lo, hi = (lo, mid) if self.margin(row - mid, t) >= 0 else (
                    mid, hi)
            out[i] = self.clip(row - hi)
        return out


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
    from keras_sovit.scaling.isoflop import minimise_quadratic
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


# ---------------------------------------------------------------------------
# The optimum's path over compute.


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
    from keras_sovit.scaling.isoflop import fit_path
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


# ---------------------------------------------------------------------------
# The search: phases with a plan / done / finish contract, driven by
# ask / tell.

# The paper's published procedure (§3, App. B.3, Fig. 5): only a prior here,
# used to centre the first isoFLOP design.
PAPER_PRIOR = ((608, 10, 928), 9.3e9, (0.22 / 3, 0.45 / 3, 0.6 / 3))


class Trial:
    """One training run the search asks for: `shape` trained with
    `compute` GFLOPs (examples = compute / shape.gflops)."""

    def __init__(self, trial_id, shape, compute, phase, level=None):
        self.trial_id = trial_id
        self.shape = shape
        self.compute = float(compute)
        self.phase = phase
        self.level = level
        self.value = None

    def __repr__(self):
        return (f"Trial({self.trial_id}, {self.shape.width}/"
                f"{self.shape.depth}/{self.shape.mlp_dim}, "
                f"{self.compute:.3g}, {self.phase!r})")


class LevelFit:
    """What one isoFLOP level found: its surface, optimum and spread."""

    def __init__(self, compute, surface, optimum, boot, box, predicted):
        self.compute = compute
        self.surface = surface
        self.optimum = optimum
        self.boot = boot  # (B, 3) bootstrap optima, by trial
        self.box = box  # (lo, hi) trust region of the last round
        self.predicted = predicted  # the centre its first round used
        spread = np.cov(boot.T) if len(boot) > 2 else np.eye(3)
        self.cov = spread + np.eye(3) * _COV_FLOOR**2
        if not self.bracketed:  # an optimum on its trust region's edge
            self.cov = self.cov * _UNBRACKETED
        self.surfaces = []  # bootstrap surfaces (for paired decisions)
        metric = positive_definite(surface.hessian)
        du = boot - optimum
        self.expected_regret = float(
            0.5 * np.mean(np.einsum("bi,ij,bj->b", du, metric, du))
        ) if len(boot) else np.inf

    @property
    def bracketed(self):
        lo, hi = self.box
        edge = np.minimum(self.optimum - lo, hi - self.optimum)
        return bool(np.all(edge > 1e-3 * (hi - lo)))


_COV_FLOOR = 0.02  # log units; no level is trusted beyond ±2%
_UNBRACKETED = 4.0  # variance inflation of a level whose optimum is unsure


class IsoFlopLevel:
    """Phase: isoFLOP rounds at one compute, T · `fraction`.

    Contract:
        plan(search) -> trials: a central composite design (corners, axial
            points, a replicated centre) in log-shape, centred at the path's
            prediction for this compute (the prior for the first level) and
            whitened by the curvature found so far, so that its corners sit
            about `rise` above the centre; after a round whose optimum is on
            its trust region's edge (or, on the first level, after its first
            round) another round centred at that optimum, up to
            `max_rounds`. With `borrowed=True` the design is the 8 corners
            plus the centre and the fit borrows the curvature's shape from
            the level below (5 coefficients instead of 10).
        done(search) -> bool: the last round is told and its optimum is
            bracketed (and `min_rounds` ran), or no round is left.
        finish(search): appends a `LevelFit` (surface over the rounds'
            trials inside the last trust region, optimum there, bootstrap by
            trial).
    """

    name = "isoflop"

    def __init__(self, fraction, max_rounds, min_rounds=1, borrowed=False):
        self.fraction = fraction
        self.max_rounds = max_rounds
        self.min_rounds = min_rounds
        self.borrowed = borrowed
        self.rounds = []  # (centre, spread, trial ids)
        self._fit = None

    def fit(self, search):
        if self._fit is None and self.rounds:
            self._fit = search.fit_level(self.rounds, self.borrowed)
        return self._fit

    def _more(self, search, fit):
        if len(self.rounds) >= self.max_rounds:
            return False
        if not fit.bracketed or len(self.rounds) < self.min_rounds:
            return True
        return fit.expected_regret > search.level_regret

    def plan(self, search):
        t = search.target_compute * self.fraction
        if not self.rounds:
            centre = search.predict(t)
            spread, curvature = search.spread()
        else:
            fit = self.fit(search)
            if not self._more(search, fit):
                return []
            centre = fit.optimum
            spread, curvature = search.spread(fit)
        trials = search.design(centre, spread, t, self.borrowed)
        if not trials:
            return []
        ids = [tr.trial_id for tr in trials]
        self.rounds.append((centre, spread, ids, curvature))
        self._fit = None
        return trials

    def done(self, search):
        return bool(self.rounds) and not self._more(search, self.fit(search))

    def finish(self, search):
        if self.rounds:
            search.levels.append(self.fit(search))


class Propose:
    """Phase: the path fit, the proposal at T, and the verification.

    Contract:
        plan(search) -> []: no trials of its own.
        done(search) -> True.
        finish(search): fits u*(t) = a + s log t through the levels (GLS,
            weighted by each level's bootstrap covariance), proposes the
            trainable lattice shape at T nearest the extrapolation in the
            top level's curvature, bootstraps the proposal (refitting every
            level with per-trial weights), and runs the paired decision of
            `IsoFlopSearch.verify` on the top level. If the proposal is not
            verified or its expected regret exceeds `target_regret`, and an
            extra level fits the budget, inserts that level and another
            `Propose` before the final run.
    """

    name = "propose"

    def plan(self, search):
        return []

    def done(self, search):
        return True

    def finish(self, search):
        search.propose()
        decision = search.report["decision"]
        ok = decision["verified"] and (
            search.report["expected_regret"] <= search.target_regret
        )
        extra = search.next_extra_level()
        if not ok and extra is not None:
            index = search.phase_index
            search.phases[index + 1:index + 1] = [extra, Propose()]


class Final:
    """Phase: the proposal trained at T.

    Contract:
        plan(search) -> [the proposal at T] once.
        done(search) -> its value is told.
        finish(search): records the final value in the report.
    """

    name = "final"

    def __init__(self):
        self.trial_id = None

    def plan(self, search):
        if self.trial_id is not None:
            return []
        trial = search.new_trial(search.proposal, search.target_compute,
                                 self.name)
        self.trial_id = trial.trial_id
        return [trial]

    def done(self, search):
        return self.trial_id is not None and (
            search.trials[self.trial_id].value is not None
        )

    def finish(self, search):
        search.report["final_value"] = search.trials[self.trial_id].value


_BOUNDS = {"width": (64, 16384), "depth": (2, 256), "mlp_dim": (64, 65536)}


class IsoFlopSearch:
    """A model-agnostic compute-optimal shape search, driven by ask / tell.

    Chinchilla's IsoFLOP profiles (Hoffmann et al. 2022, approach 2) in
    three dimensions, as a trust-region response-surface method:

    1. `IsoFlopLevel` at T/4096, T/1024, T/256 and T/64 (by default): at
       each compute, rounds of a central composite design in log(width,
       depth, MLP) around the predicted optimum, whitened by the curvature
       seen so far so that its corners rise by about three noise standard
       deviations; a full quadratic (ridge prior on its curvature) fitted
       to the log-metrics of every trial (off-axis points included) gives
       the level's optimum in its trust region and, bootstrapped by trial,
       its spread. More rounds while the optimum is on the trust region's
       edge or its own expected regret exceeds `target_regret` / 5.
    2. `Propose`: the optimum's path u*(t) = a + s log t (robust GLS over
       the levels, the path model chosen by held-out levels' decisions)
       extrapolated to T and projected onto the trainable shapes; the
       proposal's expected regret from the bootstrap; and a paired decision
       on the top level (`verify`). An unverified or uncertain proposal
       buys a level closer to T (T/32 by default, up to two rounds) while
       the budget allows, and is proposed again.
    3. `Final`: the proposal trained at T.

    Nothing here assumes a functional form for the loss: only one basin in
    log-shape at a fixed compute and a smooth optimum path. Every trial is
    trainable: at least `min_examples_per_param` examples per weight. The
    paper's published procedure serves only to centre the first design.

    Args:
        target_compute: float. T in GFLOPs.
        template: ShapeSpec. Supplies `num_heads` and `patch_size`.
        image_size: int. Defaults to `224`.
        fractions: tuple of floats. Compute of the base levels as fractions
            of T, increasing. Defaults to `(1/4096, 1/1024, 1/256, 1/64)`.
        extra_fractions: tuple of floats. Levels bought when the proposal
            is not verified. Defaults to `(1/32,)`.
        rise_per_sigma: float. Target rise of a design's corners in noise
            standard deviations. Defaults to `3.0`.
        rise_bounds: (float, float). Bounds on that rise (log units).
            Defaults to `(0.05, 0.15)`.
        first_step: float. Half-side of the first, isotropic design in log
            units. Defaults to `0.4`.
        max_step: float. Largest design step along any direction (log
            units). Defaults to `0.5`.
        curvature_prior_sd: float. Relative standard deviation of the ridge
            prior on each round's curvature (0 turns it off). Defaults to
            `0.5`.
        slope_prior_sd: float. Standard deviation of a Gaussian prior on
            the path's exponents, centred on the prior's (0 turns it off).
            Defaults to `0.1`.
        max_rounds: tuple of ints. Rounds per base level (the last value
            repeats). Defaults to `(4, 4, 2, 2)`.
        borrowed_top: bool. Extra levels fit 5 coefficients on 10 points,
            borrowing the curvature's shape from the level below. Defaults
            to `False`.
        prior: `(shape tuple, compute, exponents)` centring the first level.
            Defaults to the paper's published procedure, `PAPER_PRIOR`.
        min_examples_per_param: float. Trainability floor. Defaults to `1`.
        max_search_compute: float. Budget of the sweeps in units of T (the
            final run at T comes on top). Defaults to `1.5`.
        target_regret: float. Stop once the bootstrap expected regret is
            below this. Defaults to `0.005`.
        tolerance: float. The verification's allowed gap. Defaults to
            `0.005`.
        error_rate: float. The verification's error rate α. Defaults to
            `0.1`.
        n_bootstrap: int. Defaults to `100`.
        bounds: dict `{dim: (low, high)}`. Defaults to wide bounds.
        width_multiple: int or None. Width is a multiple of
            lcm(`width_multiple`, num_heads). Defaults to 16.
        mlp_multiple: int. Defaults to `16`.
        seed: int. Seeds the bootstrap. Defaults to `0`.

    Example:

    ```python
    from keras_sovit.scaling.isoflop import IsoFlopSearch
    from keras_sovit.scaling.truths import Observer, SATURATING_LAW
    search = IsoFlopSearch(8.8e12, keras_sovit.ShapeSpec(
        608, 10, 928, 16, 14), n_bootstrap=20)
    observe = Observer(SATURATING_LAW, noise=0.01, seed=0)
    while not search.done:
        for trial in search.ask():
            search.tell(trial.trial_id, observe(trial.shape, trial.compute))
    search.proposal, search.report["expected_regret"]
    ```
    """

    def __init__(
        self,
        target_compute,
        template,
        image_size=224,
        fractions=(1 / 4096, 1 / 1024, 1 / 256, 1 / 64),
        extra_fractions=(1 / 32,),
        rise_per_sigma=3.0,
        rise_bounds=(0.05, 0.15),
        first_step=0.4,
        max_step=0.5,
        curvature_prior_sd=0.5,
        slope_prior_sd=0.1,
        max_rounds=(4, 4, 2, 2),
        borrowed_top=False,
        prior=PAPER_PRIOR,
        min_examples_per_param=1.0,
        max_search_compute=1.5,
        target_regret=0.005,
        tolerance=0.005,
        error_rate=0.1,
        n_bootstrap=100,
        bounds=None,
        width_multiple=None,
        mlp_multiple=16,
        seed=0,
    ):
        from keras_sovit.shapes import Rounding

        self.target_compute = _positive("target_compute", target_compute)
        if not isinstance(template, ShapeSpec):
            raise ValueError(
                "`template` must be a ShapeSpec. Received: "
                f"template={template!r}"
            )
        self.template = template
        self.fractions = _fractions("fractions", fractions, minimum=1)
        self.extra_fractions = _fractions("extra_fractions", extra_fractions)
        self.rise_per_sigma = _positive("rise_per_sigma", rise_per_sigma)
        self.rise_bounds = tuple(
            _positive("rise_bounds", r) for r in rise_bounds
        )
        self.first_step = _positive("first_step", first_step)
        self.max_step = _positive("max_step", max_step)
        self.curvature_prior_sd = _positive(
            "curvature_prior_sd", curvature_prior_sd, allow_zero=True
        )
        self.slope_prior_sd = _positive(
            "slope_prior_sd", slope_prior_sd, allow_zero=True
        )
        self.max_rounds = tuple(
            int(_positive("max_rounds", r)) for r in max_rounds
        )
        self.borrowed_top = bool(borrowed_top)
        self.prior = _check_prior(prior)
        self.max_search_compute = _positive(
            "max_search_compute", max_search_compute
        )
        self.target_regret = _positive("target_regret", target_regret)
        self.tolerance = _positive("tolerance", tolerance)
        self.error_rate = _positive("error_rate", error_rate)
        if not self.error_rate < 0.5:
            raise ValueError(
                f"`error_rate` must be below 0.5. Received: {error_rate!r}"
            )
        self.n_bootstrap = int(_positive("n_bootstrap", n_bootstrap))
        self.cost = ShapeCost(template.patch_size, image_size)
        box = dict(_BOUNDS, **(bounds or {}))
        self.trainable = Trainability(
            self.cost, _positive("min_examples_per_param",
                                 min_examples_per_param, allow_zero=True),
            box,
        )
        self.rounding = Rounding(
            width_multiple=width_multiple or 16, mlp_multiple=mlp_multiple,
            num_heads=template.num_heads,
        )
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise ValueError(f"`seed` must be an int. Received: seed={seed!r}")
        self.seed = int(seed)
        self.trials = {}
        self.levels = []
        self.report = {}
        self.proposal = None
        self._queue = []
        self.level_regret = self.target_regret / 5
        rounds = self.max_rounds + self.max_rounds[-1:] * len(self.fractions)
        self.phases = [
            IsoFlopLevel(f, rounds[i], min_rounds=2 if i == 0 else 1)
            for i, f in enumerate(self.fractions)
        ] + [Propose(), Final()]
        self.phase_index = 0

    @classmethod
    def from_observations(cls, rows, target_compute, template, **kwargs):
        """The proposal rule alone, on finished runs of any design.

        Runs are grouped by compute (within 1%); every group with at least
        10 distinct shapes is one level, its surface expanded around its
        best run in coordinates whitened by the group's spread of
        log-shapes, and `Propose` runs on those levels. No trial is asked.

        Args:
            rows: iterable of `(ShapeSpec, compute_gflops, metric)`.
            target_compute: float. T in GFLOPs.
            template: ShapeSpec.
            **kwargs: as in `IsoFlopSearch`.

        Returns:
            The search, with `proposal` and `report` filled.
        """
        search = cls(target_compute, template, **kwargs)
        groups = {}
        for shape, compute, value in rows:
            key = round(float(np.log(compute)) / 0.01)
            groups.setdefault(key, []).append((shape, compute, value))
        for key in sorted(groups):
            group = groups[key]
            if len({g[0] for g in group}) < _N_COEF:
                continue
            ids = []
            for shape, compute, value in group:
                trial = search.new_trial(shape, group[0][1], "observed")
                search.tell(trial.trial_id, value)
                ids.append(trial.trial_id)
            u = np.array([search.log_shape(g[0]) for g in group])
            best = u[int(np.argmin([g[2] for g in group]))]
            spread = np.linalg.cholesky(np.cov(u.T) + np.eye(3) * 1e-6)
            search.levels.append(
                search.fit_level([(best, spread, ids, None)])
            )
        if not search.levels:
            raise ValueError(
                "`rows` must hold at least one compute with 10 distinct "
                "shapes."
            )
        search.propose()
        search.phases, search.phase_index = [], 0
        return search

    # --- ask / tell ------------------------------------------------------

    @property
    def done(self):
        """True once the final run is told."""
        return self.phase_index >= len(self.phases)

    @property
    def pending(self):
        """Trials asked for and not told yet."""
        return [t for t in self.trials.values()
                if t.value is None and t not in self._queue]

    def ask(self, n=None):
        """Up to `n` trials to run now (all available if `None`).

        An empty list while trials are pending means: wait for them (the
        next step depends on their values); parallel workers never get the
        same trial twice.
        """
        self._advance()
        count = len(self._queue) if n is None else n
        out, self._queue = self._queue[:count], self._queue[count:]
        return out

    def tell(self, trial_id, value):
        """Records the metric (lower is better) of a finished trial."""
        if trial_id not in self.trials:
            raise ValueError(
                f"`trial_id` is unknown. Received: trial_id={trial_id!r}"
            )
        self.trials[trial_id].value = _positive("value", value)

    def _advance(self):
        while not self._queue and not self.pending and not self.done:
            phase = self.phases[self.phase_index]
            if phase.done(self):
                phase.finish(self)
                self.phase_index += 1
                continue
            batch = phase.plan(self)
            if not batch:
                phase.finish(self)
                self.phase_index += 1
                continue
            self._queue.extend(batch)

    # --- bookkeeping -----------------------------------------------------

    def new_trial(self, shape, compute, phase, level=None):
        """Registers a trial (used by phases)."""
        trial = Trial(len(self.trials), shape, compute, phase, level)
        self.trials[trial.trial_id] = trial
        return trial

    def spent(self, phase=None):
        """Compute of every trial planned so far (in GFLOPs)."""
        return sum(t.compute for t in self.trials.values()
                   if phase is None or t.phase == phase)

    def search_budget_left(self):
        budget = self.max_search_compute * self.target_compute
        return budget - self.spent() + self.spent("final")

    # --- designs and fits ------------------------------------------------

    def log_shape(self, shape):
        return np.log([shape.width, shape.depth, shape.mlp_dim])

    def snap(self, u, t):
        """The lattice shape nearest e^u, trainable at t."""
        x = np.exp(u)
        for _ in range(50):
            shape = self.rounding.snap(*x, patch_size=self.template.patch_size)
            if self.trainable.margin(self.log_shape(shape), t) >= 0:
                return shape
            x = x * 0.99
        return shape

    def noise(self, fit=None):
        """Pooled residual standard deviation of the log-metric so far."""
        fits = self.levels + ([fit] if fit and fit not in self.levels else [])
        if not fits:
            return None
        dof = np.array([f.surface.dof for f in fits], float)
        var = np.array([f.surface.sigma**2 for f in fits])
        return float(np.sqrt(np.sum(dof * var) / np.sum(dof)))

    def spread(self, fit=None):
        """Design steps, and the curvature they were whitened by with the
        noise estimate (`None` for the first round): isotropic
        on the very first round, else whitened by `fit` (default: the top
        level so far) so that the corners rise by a multiple of the noise.
        """
        if fit is None and not self.levels:
            return np.eye(3) * self.first_step, None
        fit = fit or self.levels[-1]
        sigma = self.noise(fit)
        rise = np.clip(self.rise_per_sigma * sigma, *self.rise_bounds)
        hessian = positive_definite(fit.surface.hessian)
        return whitened_spread(hessian, rise, self.max_step), (hessian, sigma)

    def design(self, centre, spread, t, borrowed=False):
        """Trials of one central composite design at compute t."""
        centre = self.trainable.shrink_in(centre, t)[0]
        points = self.trainable.shrink_in(
            ccd_design(centre, spread, corners_only=borrowed), t
        )
        if len(points) * t > self.search_budget_left() * (1 + 1e-9):
            return []
        level = len(self.levels)
        return [self.new_trial(self.snap(u, t), t, "isoflop", level)
                for u in points]

    def fit_level(self, rounds, borrowed=False):
        """A `LevelFit` from the told trials of a level's rounds.

        The fit uses the last round's trials and any earlier trial inside
        its trust region (the design's bounding box, enlarged by a quarter).
        """
        centre, spread, ids, curvature = rounds[-1]
        trials = [self.trials[i] for i in ids]
        t = trials[0].compute
        u_last = np.array([self.log_shape(tr.shape) for tr in trials])
        half = np.max(np.abs(u_last - centre), axis=0) * 1.25
        lo = np.maximum(self.trainable.lo, centre - half)
        hi = np.minimum(self.trainable.hi, centre + half)
        for _, _, earlier, _ in rounds[:-1]:
            for i in earlier:
                u_i = self.log_shape(self.trials[i].shape)
                if np.all((u_i >= lo) & (u_i <= hi)):
                    trials.append(self.trials[i])
        u = np.array([self.log_shape(tr.shape) for tr in trials])
        y = np.log([tr.value for tr in trials])
        basis = np.linalg.inv(spread.T)
        borrowed_h = self.levels[-1].surface.hessian if (
            borrowed and self.levels) else None
        prior = self._curvature_prior(curvature, spread)
        feasible = lambda v: self.trainable.margin(v, t)  # noqa: E731

        def fit_and_argmin(weights=None):
            s = fit_surface(u, y, centre, basis, weights, borrowed_h, prior)
            return s, minimise_quadratic(s.gradient, s.hessian, centre, lo,
                                         hi, feasible)

        surface, optimum = fit_and_argmin()
        # One generator per fit, keyed by where the fit stands: replaying
        # the same trials (a resumed search) gives the same draws.
        rng = np.random.default_rng([self.seed, len(self.levels),
                                     len(rounds), len(y)])
        draws = [fit_and_argmin(rng.dirichlet(np.ones(len(y))) * len(y))
                 for _ in range(self.n_bootstrap)]
        fit = LevelFit(t, surface, optimum, np.array([d[1] for d in draws]),
                       (lo, hi), np.asarray(rounds[0][0], float))
        fit.surfaces = [d[0] for d in draws]
        noise = self.noise()
        if noise:  # lack of fit beyond the noise widens the level's spread
            fit.cov = fit.cov * max(1.0, (surface.sigma / noise) ** 2)
        return fit

    def _curvature_prior(self, curvature, spread):
        """Ridge prior (a, weight) on a round's curvature: the curvature its
        design was whitened by, in design coordinates, with a standard
        deviation of `curvature_prior_sd` times its mean diagonal."""
        if curvature is None or not self.curvature_prior_sd:
            return None
        curvature, sigma = curvature
        a = spread.T @ curvature @ spread
        tau = self.curvature_prior_sd * np.mean(np.diag(a))
        return a, (sigma / tau) ** 2

    def predict(self, t):
        """Predicted optimal log-shape at compute t from the levels so far
        (the prior's exponents carry a single level)."""
        shape, t0, s = self.prior
        if not self.levels:
            return np.log(shape) + np.array(s) * np.log(t / t0)
        if len(self.levels) == 1:
            top = self.levels[0]
            return top.optimum + np.array(s) * np.log(t / top.compute)
        a, slope, _ = self._path(self.levels)
        return a + slope * np.log(t / self.target_compute)

    def _path(self, levels, optima=None):
        v = np.log([lv.compute / self.target_compute for lv in levels])
        optima = [lv.optimum for lv in levels] if optima is None else optima
        prior = None if not self.slope_prior_sd else (
            np.array(self.prior[2]), self.slope_prior_sd)
        return fit_path(v, optima, [lv.cov for lv in levels],
                        slope_prior=prior)

    # --- proposal and verification ---------------------------------------

    def _project(self, u, metric):
        """Nearest trainable log-shape at T in the metric `metric`."""
        t = self.target_compute
        return minimise_quadratic(
            np.zeros(3), metric, u, self.trainable.lo, self.trainable.hi,
            lambda v: self.trainable.margin(v, t),
        )

    def _lattice(self, u, metric):
        """Best trainable lattice neighbour of e^u under the metric."""
        t = self.target_compute
        best, best_cost = None, np.inf
        x = np.exp(u)
        steps = (self.rounding.width_step(x[0]), 1,
                 self.rounding.mlp_multiple)
        options = [
            sorted({max(step, np.floor(v / step) * step),
                    max(step, np.ceil(v / step) * step)})
            for v, step in zip(x, steps)
        ]
        for w, d, m in itertools.product(*options):
            cand = np.log([w, d, m])
            if self.trainable.margin(cand, t) < 0:
                continue
            cost = (cand - u) @ metric @ (cand - u)
            if cost < best_cost:
                best, best_cost = (int(w), int(d), int(m)), cost
        if best is None:
            return self.snap(u, t)
        return self.template.replace(
            width=best[0], depth=best[1], mlp_dim=best[2]
        )

    def propose(self):
        """Fits the path, proposes the shape at T and fills `report`."""
        levels = self.levels
        model, scores = self._select_path_model()
        chosen = _PATH_MODELS[model](levels)
        metric = self._metric()
        a, slope, cov = self._path(chosen)
        u = self._project(a, metric)
        self.proposal = self._lattice(u, metric)
        boot = []
        for b in range(self.n_bootstrap):
            ab, _, _ = self._path(chosen, [lv.boot[b] for lv in chosen])
            boot.append(self._project(ab, metric))
        boot = np.array(boot)
        du = boot - u
        expected = 0.5 * np.mean(np.einsum("bi,ij,bj->b", du, metric, du))
        self.report.update(
            path_model=model,
            path_scores=scores,
            exponents=dict(zip(DIMS, slope.tolist())),
            log_shape=u.tolist(),
            spread=dict(zip(DIMS, np.std(boot, axis=0).tolist())),
            expected_regret=float(expected),
            decision=self.verify(),
            levels=[_level_summary(lv) for lv in levels],
        )

    def _metric(self):
        """Curvature used at T: the levels' positive-definite curvatures,
        each normalised to unit trace and averaged with their degrees of
        freedom as weights (the shape of the bowl), scaled to the top
        level's trace (its size, the nearest to T)."""
        shapes, weights = [], []
        for level in self.levels:
            h = positive_definite(level.surface.hessian)
            shapes.append(h / np.trace(h))
            weights.append(level.surface.dof)
        shape = np.average(shapes, axis=0, weights=weights)
        top = np.trace(positive_definite(self.levels[-1].surface.hessian))
        return shape * top

    def _select_path_model(self):
        """Chooses the path model by the decisions it makes on held-out
        levels: each level k ≥ 2 is predicted from the levels below it
        (forward chaining, so no level's trials ever score a fit that used
        them), and the prediction is scored by that level's own paired
        bootstrap gap. The default "all" stands unless another model has
        the smaller total gap in at least 1 − α of the draws."""
        totals = {name: 0.0 for name in _PATH_MODELS}
        for k in range(2, len(self.levels)):
            lower, held = self.levels[:k], self.levels[k]
            for name, pick in _PATH_MODELS.items():
                a, slope, _ = self._path(pick(lower))
                u = a + slope * np.log(held.compute / self.target_compute)
                totals[name] = totals[name] + _gaps(held, u)
        if len(self.levels) < 3:
            return "all", {}
        scores = {name: float(np.mean(g)) for name, g in totals.items()}
        best = "all"
        for name, g in totals.items():
            wins = np.mean(g < totals["all"])
            if wins >= 1 - self.error_rate and scores[name] < scores[best]:
                best = name
        return best, scores

    def verify(self):
        """Paired decision: is the lower levels' prediction for the top
        level within `tolerance` of that level's own optimum?

        For every bootstrap draw (per-trial weights on the top level's
        trials, replicated centre included), the gap is the surface's value
        at the prediction minus its minimum, both under the same draw
        (paired). Verified when the (1 − α) quantile of the gap is at most
        `tolerance`: if the prediction really is worse by more than the
        tolerance, it is verified with probability about α.
        """
        top = self.levels[-1]
        gaps = _gaps(top, top.predicted)
        upper = float(np.quantile(gaps, 1 - self.error_rate))
        return {
            "compute": top.compute,
            "gap": float(top.surface(top.predicted) - top.surface(
                top.optimum)),
            "gap_upper": upper,
            "verified": upper <= self.tolerance,
        }

    def next_extra_level(self):
        """The next extra level above the top one that the budget affords."""
        top = self.levels[-1].compute / self.target_compute
        for fraction in self.extra_fractions:
            points = 10 if self.borrowed_top else 16
            cost = points * fraction * self.target_compute
            if fraction > top * (1 + 1e-9) and cost <= (
                self.search_budget_left() * (1 + 1e-9)
            ):
                return IsoFlopLevel(fraction, 2, borrowed=self.borrowed_top)
        return None

    def result(self):
        """The proposal, its diagnostics, and the compute spent (units of
        T) by phase."""
        t = self.target_compute
        return dict(
            self.report,
            proposal=self.proposal,
            compute={p: self.spent(p) / t for p in ("isoflop", "final")},
            total_compute=self.spent() / t,
            n_trials=len(self.trials),
        )


# Path models: which levels the power-law path is fitted through. Dropping
# the lowest level guards against a path that bends at small compute.
_PATH_MODELS = {
    "all": lambda levels: list(levels),
    "drop-lowest": lambda levels: list(levels[1:]) if len(levels) > 2 else (
        list(levels)),
}


def _gaps(level, u):
    """Paired bootstrap gaps q_b(u) − q_b(optimum_b) on one level."""
    return np.array([
        s(u) - s(opt) for s, opt in zip(level.surfaces, level.boot)
    ])


def _level_summary(level):
    return {
        "compute": level.compute,
        "optimum": np.exp(level.optimum).round(1).tolist(),
        "predicted": np.exp(level.predicted).round(1).tolist(),
        "bracketed": level.bracketed,
        "sigma": level.surface.sigma,
    }


def _positive(name, value, allow_zero=False):
    from keras_sovit._validation import check_positive_number

    return check_positive_number(name, value, allow_zero=allow_zero)


def _fractions(name, values, minimum=0):
    values = tuple(values)
    if len(values) < minimum or any(
        not 0 < _positive(name, v) < 1 for v in values
    ) or list(values) != sorted(values):
        raise ValueError(
            f"`{name}` must be increasing fractions of the target in (0, 1)"
            f". Received: {name}={values!r}"
        )
    return tuple(float(v) for v in values)


def _check_prior(prior):
    try:
        shape, t0, s = prior
        shape = tuple(float(_positive("prior", v)) for v in shape)
        s = tuple(float(v) for v in s)
        t0 = _positive("prior", t0)
        assert len(shape) == 3 and len(s) == 3
    except (TypeError, ValueError, AssertionError):
        raise ValueError(
            "`prior` must be ((width, depth, mlp_dim), compute, "
            f"(s_width, s_depth, s_mlp)). Received: prior={prior!r}"
        ) from None
    return shape, t0, s
