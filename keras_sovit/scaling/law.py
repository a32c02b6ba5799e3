"""Eq. (2) of the paper: one shape dimension against compute.

f(x, t) = α·x^(−a) + (β·x^b + ξ)·t^(−c) + ε, all seven parameters positive;
the compute-optimal x★(t) = (α a t^c / (β b))^(1/(a+b)) = O(t^s) with
s = c / (a + b) (Eq. 4).
"""

import warnings

import numpy as np

from keras_sovit._validation import check_choice
from keras_sovit._validation import check_non_negative_int
from keras_sovit._validation import check_positive_finite_array
from keras_sovit._validation import check_positive_int
from keras_sovit._validation import check_positive_number
from keras_sovit.scaling import _varpro
from keras_sovit.scaling.formulas import EQ2_PARAMS as PARAM_NAMES
from keras_sovit.scaling.results import SweepResults
from keras_sovit.scaling.results import largest_compute_runs
from keras_sovit.shapes import SCALED_DIMS
from keras_sovit.shapes import ShapeSpec
from keras_sovit.shapes import check_shape_spec

LOSSES = ("relative", "huber")


def _check_fit_arrays(x, t, y, min_points):
    x, t, y = (
        check_positive_finite_array(name, value).ravel()
        for name, value in (("x", x), ("t", t), ("y", y))
    )
    if not len(x) == len(t) == len(y):
        raise ValueError(
            "`x`, `t` and `y` must have the same length. Received lengths "
            f"{len(x)}, {len(t)}, {len(y)}"
        )
    if len(x) < min_points:
        raise ValueError(
            f"Too few points to fit Eq. (2): need at least {min_points} (the "
            f"number of free parameters). Received: {len(x)} points"
        )
    if len(np.unique(x)) < 2:
        raise ValueError(
            "`x` must take at least 2 distinct values (the dimension was "
            f"not swept). Received: x={x}"
        )
    return x, t, y


class _Params:
    """sklearn-style access to the constructor arguments named in `_PARAMS`."""

    _PARAMS = ()

    def get_params(self, deep=True):
        """Constructor arguments as a dict (sklearn protocol)."""
        return {key: getattr(self, key) for key in self._PARAMS}

    def set_params(self, **params):
        """Sets constructor arguments (sklearn protocol); returns self."""
        for key, value in params.items():
            if key not in self._PARAMS:
                raise ValueError(
                    f"Invalid parameter {key!r} for {type(self).__name__}. "
                    f"Valid: {sorted(self._PARAMS)}"
                )
            setattr(self, key, value)
        return self


class ShapeLaw(_Params):
    """Fits the paper's Eq. (2) for one shape dimension.

    f(x, t) = α·x^(−a) + (β·x^b + ξ)·t^(−c) + ε with all seven parameters
    positive, x a shape dimension and t the compute in GFLOPs. The fit
    minimises the relative error (the paper's criterion), optionally with a
    Huber loss on the relative error. It searches the exponents by
    variable projection (for fixed a, b, c the law is linear in α, β, ξ, ε,
    which are solved by non-negative least squares over a grid of
    exponents), then polishes the best starts jointly with
    `scipy.optimize.least_squares` in log-parametrisation. x, t and y are
    normalised internally; `params` are in the original units.

    Args:
        loss: str. `"relative"` (least squares of the relative error) or
            `"huber"` (Huber on the relative error). Defaults to
            `"relative"`.
        huber_delta: float or `None`. Huber threshold on the relative
            error; `None` sets it from the data: 1.345 × the robust (MAD)
            spread of the least-squares relative residuals (95% Gaussian
            efficiency). Defaults to `None`.
        n_starts: int. Grid starts polished. Defaults to `6`.
        fixed_c: float or `None`. Fix the data exponent c instead of
            fitting it. Defaults to `None`.
        random_state: int. Seed for jittered extra starts. Defaults to `0`.
        grid_size: int. Points per exponent axis of the start grid.
            Defaults to `20`.

    Example:

    ```python
    import numpy as np
    truth = keras_sovit.scaling.ShapeLaw.from_params(dict(
        alpha=2.0, a=0.5, beta=0.01, b=1.0, xi=1.0, eps=0.1, c=0.65))
    x = np.repeat([8.0, 10, 12, 16, 20, 24], 3)
    t = np.tile([1e3, 2e3, 4e3], 6)
    law = keras_sovit.scaling.ShapeLaw().fit(x, t, truth.predict(x, t))
    law.exponent  # 0.65 / 1.5
    law.optimal(1e5)  # compute-optimal x at 1e5 GFLOPs (Eq. 4)
    ```

    Reference:
    - [Alabdulmohsin et al., 2023](https://arxiv.org/abs/2305.13035)
    """

    _PARAMS = (
        "loss", "huber_delta", "n_starts", "fixed_c", "random_state",
        "grid_size",
    )

    def __init__(
        self,
        loss="relative",
        huber_delta=None,
        n_starts=6,
        fixed_c=None,
        random_state=0,
        grid_size=20,
    ):
        self.loss = loss
        self.huber_delta = huber_delta
        self.n_starts = n_starts
        self.fixed_c = fixed_c
        self.random_state = random_state
        self.grid_size = grid_size

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"ShapeLaw({args})"

    def _validate_params(self):
        check_choice("loss", self.loss, LOSSES)
        for name in ("huber_delta", "fixed_c"):
            if getattr(self, name) is not None:
                check_positive_number(name, getattr(self, name))
        for name in ("n_starts", "grid_size"):
            check_positive_int(name, getattr(self, name))

    @property
    def _n_free(self):
        return 6 if self.fixed_c is not None else 7

    # --- fitting ---------------------------------------------------------
    def fit(self, x, t, y):
        """Fits Eq. (2) to points (x, t, y); returns `self`."""
        self._validate_params()
        x, t, y = _check_fit_arrays(x, t, y, self._n_free)
        if self.fixed_c is None and len(np.unique(t)) < 2:
            raise ValueError(
                "`t` must take at least 2 distinct values to fit c (or set "
                f"`fixed_c`). Received: t={t}"
            )
        refs = (_varpro.geomean(x), _varpro.geomean(t), _varpro.geomean(y))
        groups = [(x / refs[0], t / refs[1], y / refs[2])]
        out = _varpro.fit_groups(
            groups,
            fixed_c=self.fixed_c,
            loss=self._scipy_loss,
            f_scale=self.huber_delta,
            n_starts=self.n_starts,
            grid_size=self.grid_size,
            rng=np.random.default_rng(self.random_state),
        )
        self._set_fitted(out["coefs"][0], out["c"], refs, out["converged"])
        self.huber_delta_ = out["f_scale"]
        self._set_diagnostics(x, t, y, out["at_bounds"])
        if not self.converged_:
            _varpro.warn_not_converged("ShapeLaw.fit")
        return self

    @property
    def _scipy_loss(self):
        return "huber" if self.loss == "huber" else "linear"

    def _set_fitted(self, coefs, c_value, refs, converged):
        """Stores normalised coefficients and their original-unit values."""
        self._coefs = np.array(coefs, dtype=float)
        self._refs = tuple(float(r) for r in refs)
        self.c_ = float(c_value)
        x_ref, t_ref, y_ref = self._refs
        alpha, a, beta, b, xi, eps = self._coefs
        self.alpha_ = float(alpha * y_ref * x_ref**a)
        self.a_ = float(a)
        self.beta_ = float(beta * y_ref * x_ref ** (-b) * t_ref**c_value)
        self.b_ = float(b)
        self.xi_ = float(xi * y_ref * t_ref**c_value)
        self.eps_ = float(eps * y_ref)
        self.converged_ = bool(converged)
        return self

    def _set_diagnostics(self, x, t, y, at_bounds):
        rel = self.predict(x, t) / y - 1.0
        self.n_points_ = int(len(x))
        self.relative_errors_ = rel
        names = [n for n in PARAM_NAMES[:6]]
        if self.fixed_c is None:
            names.append("c")
        self.params_at_bounds_ = [
            names[i] for i in at_bounds if i < len(names)
        ]

    @classmethod
    def from_params(cls, params, **kwargs):
        """A fitted-looking law with the given Eq. (2) parameters.

        Args:
            params: dict with keys alpha, a, beta, b, xi, eps, c (> 0).
            **kwargs: constructor arguments.
        """
        missing = [k for k in PARAM_NAMES if k not in params]
        if missing:
            raise ValueError(
                f"`params` is missing {missing}. Received: params={params!r}"
            )
        values = {}
        for key in PARAM_NAMES:
            values[key] = check_positive_number(f"params[{key!r}]",
                                                params[key])
        law = cls(**kwargs)
        c = values["c"]
        coefs = [
            values["alpha"], values["a"], values["beta"], values["b"],
            values["xi"], values["eps"],
        ]
        return law._set_fitted(coefs, c, (1.0, 1.0, 1.0), True)

    # --- fitted quantities ---------------------------------------------
    def _check_fitted(self):
        if not hasattr(self, "c_"):
            raise ValueError(
                "This ShapeLaw is not fitted yet. Call `fit(x, t, y)` first."
            )

    @property
    def params(self):
        """The seven Eq. (2) parameters in original units (dict)."""
        self._check_fitted()
        return {
            "alpha": self.alpha_,
            "a": self.a_,
            "beta": self.beta_,
            "b": self.b_,
            "xi": self.xi_,
            "eps": self.eps_,
            "c": self.c_,
        }

    @property
    def exponent(self):
        """s = c / (a + b): x★(t) grows as t^s."""
        self._check_fitted()
        return self.c_ / (self.a_ + self.b_)

    def predict(self, x, t):
        """Eq. (2) at (x, t); broadcasts like numpy."""
        self._check_fitted()
        x_ref, t_ref, y_ref = self._refs
        u = np.asarray(x, dtype=float) / x_ref
        v = np.asarray(t, dtype=float) / t_ref
        if np.any(u <= 0) or np.any(v <= 0):
            raise ValueError(
                f"`x` and `t` must be positive. Received: x={x!r}, t={t!r}"
            )
        out = _varpro.predict(self._coefs, self.c_, u, v) * y_ref
        return float(out) if np.ndim(out) == 0 else out

    def optimal(self, t):
        """Compute-optimal x★(t) of Eq. (4), continuous."""
        self._check_fitted()
        t = np.asarray(t, dtype=float)
        if np.any(t <= 0):
            raise ValueError(f"`t` must be positive. Received: t={t!r}")
        x_ref, t_ref, _ = self._refs
        alpha, a, beta, b, _, _ = self._coefs
        v = t / t_ref
        out = x_ref * (alpha * a * v**self.c_ / (beta * b)) ** (1.0 / (a + b))
        return float(out) if np.ndim(out) == 0 else out

    def report(self):
        """Fit quality: relative-error RMSE and max, points, flags."""
        self._check_fitted()
        rel = getattr(self, "relative_errors_", np.zeros(0))
        return {
            "n_points": int(getattr(self, "n_points_", 0)),
            "rmse_relative": float(np.sqrt(np.mean(rel**2)))
            if len(rel)
            else None,
            "max_abs_relative": float(np.max(np.abs(rel))) if len(rel)
            else None,
            "converged": self.converged_,
            "params_at_bounds": list(getattr(self, "params_at_bounds_", [])),
            "huber_delta": getattr(self, "huber_delta_", None),
            "exponent": self.exponent,
            "params": self.params,
        }


class StarSweepFit:
    """Per-dimension Eq. (2) laws fitted to a star sweep.

    Returned by `fit_star_sweep`. Holds one `ShapeLaw` per swept
    dimension, the exponents s_k = c / (a_k + b_k), bootstrap 90%
    intervals, the shared data exponent c and the relative error of the
    predictions on held-out runs. `to_dict()`/`from_dict()` round-trip
    through JSON-safe plain Python values.

    Args:
        laws: dict `{dim: ShapeLaw}` (fitted).
        intervals: dict `{dim: (low, high)}` or `{}`.
        holdout_error: dict `{dim: mean |relative error| or None}`.
        center: ShapeSpec. The star centre.
        metric_name: str.
        bootstrap_exponents: dict `{dim: list of float}`.
        holdout_errors: dict `{dim: list of relative errors}`.
        shared_c: bool.
        bootstrap_c: list of float. Bootstrap values of c.
        c_interval: `(low, high)` or `None`. 90% interval of c.

    Bootstrap refits resample trials (all runs of a trial together), and
    points are weighted by their measured variance when the rows carry
    `metric_se`.

    Example:

    ```python
    results = keras_sovit.scaling.simulate_star(noise=0.01, seed=0)
    center = keras_sovit.ShapeSpec(1968, 40, 6144, 16, patch_size=14)
    fit = keras_sovit.scaling.fit_star_sweep(results, center, n_bootstrap=20)
    fit.exponents  # {"width": ..., "depth": ..., "mlp_dim": ...}
    fit.intervals  # 90% bootstrap intervals
    fit.optimal("mlp_dim", 1e12)
    state = fit.to_dict()
    again = keras_sovit.scaling.StarSweepFit.from_dict(state)
    ```
    """

    def __init__(
        self,
        laws,
        intervals=None,
        holdout_error=None,
        center=None,
        metric_name=None,
        bootstrap_exponents=None,
        holdout_errors=None,
        shared_c=True,
        bootstrap_c=None,
        c_interval=None,
    ):
        self.laws = dict(laws)
        self.intervals = {
            k: (float(v[0]), float(v[1])) for k, v in (intervals or {}).items()
        }
        self.holdout_error = dict(holdout_error or {})
        self.center = center
        self.metric_name = metric_name
        self.bootstrap_exponents = {
            k: [float(s) for s in v]
            for k, v in (bootstrap_exponents or {}).items()
        }
        self.holdout_errors = {
            k: [float(e) for e in v] for k, v in (holdout_errors or {}).items()
        }
        self.shared_c = bool(shared_c)
        self.bootstrap_c = [float(c) for c in (bootstrap_c or ())]
        self.c_interval = None if c_interval is None else (
            float(c_interval[0]), float(c_interval[1])
        )

    @property
    def dims(self):
        return tuple(self.laws)

    @property
    def exponents(self):
        """`{dim: s_k}`."""
        return {dim: law.exponent for dim, law in self.laws.items()}

    @property
    def c(self):
        """Data exponent (shared c, else the mean over dimensions)."""
        values = [law.c_ for law in self.laws.values()]
        return float(np.mean(values))

    @property
    def converged(self):
        return all(law.converged_ for law in self.laws.values())

    def _law(self, dim):
        if dim not in self.laws:
            raise ValueError(
                f"`dim` must be one of {list(self.laws)}. Received: dim={dim!r}"
            )
        return self.laws[dim]

    def predict(self, dim, x, t):
        """Eq. (2) of dimension `dim` at (x, t)."""
        return self._law(dim).predict(x, t)

    def optimal(self, dim, t):
        """Compute-optimal value of `dim` at compute `t` (Eq. 4)."""
        return self._law(dim).optimal(t)

    def to_dict(self):
        """JSON-safe dict (plain floats, full precision)."""
        return {
            "laws": {dim: law.params for dim, law in self.laws.items()},
            "intervals": {k: list(v) for k, v in self.intervals.items()},
            "holdout_error": dict(self.holdout_error),
            "holdout_errors": {k: list(v) for k, v in
                               self.holdout_errors.items()},
            "bootstrap_exponents": {
                k: list(v) for k, v in self.bootstrap_exponents.items()
            },
            "center": self.center.to_dict() if self.center else None,
            "metric_name": self.metric_name,
            "shared_c": self.shared_c,
            "bootstrap_c": list(self.bootstrap_c),
            "c_interval": None if self.c_interval is None
            else list(self.c_interval),
            "converged": {d: law.converged_ for d, law in self.laws.items()},
        }

    @classmethod
    def from_dict(cls, state):
        """Inverse of `to_dict`."""
        if not isinstance(state, dict) or "laws" not in state:
            raise ValueError(
                "`state` must be a dict from StarSweepFit.to_dict(). "
                f"Received: state={state!r}"
            )
        laws = {}
        for dim, params in state["laws"].items():
            law = ShapeLaw.from_params(params)
            law.converged_ = bool(state.get("converged", {}).get(dim, True))
            laws[dim] = law
        center = state.get("center")
        return cls(
            laws,
            intervals=state.get("intervals"),
            holdout_error=state.get("holdout_error"),
            center=ShapeSpec.from_dict(center) if center else None,
            metric_name=state.get("metric_name"),
            bootstrap_exponents=state.get("bootstrap_exponents"),
            holdout_errors=state.get("holdout_errors"),
            shared_c=state.get("shared_c", True),
            bootstrap_c=state.get("bootstrap_c"),
            c_interval=state.get("c_interval"),
        )

    def __repr__(self):
        exps = ", ".join(f"{k}={v:.3f}" for k, v in self.exponents.items())
        return f"StarSweepFit({exps}, c={self.c:.3f})"


def _star_rows(results, center, dim, metric_name):
    """Arrays of the star sweep along `dim`.

    Returns x, t, y, is_center, the standard errors (NaN where unknown)
    and the trial of each run (its row index when no `trial_id` is given).
    """
    rows = []
    others = [d for d in SCALED_DIMS if d != dim]
    for index, row in enumerate(results):
        if row["metric_name"] != metric_name:
            continue
        if row["patch_size"] != center.patch_size:
            continue
        if any(row[d] != getattr(center, d) for d in others):
            continue
        se = row.get("metric_se")
        rows.append((
            row[dim], row["compute_gflops"], row["metric_value"],
            row[dim] == getattr(center, dim),
            np.nan if se is None else se,
            str(row.get("trial_id", f"row {index}")),
        ))
    columns = list(zip(*rows)) or [()] * 6
    return (
        np.array(columns[0], dtype=float),
        np.array(columns[1], dtype=float),
        np.array(columns[2], dtype=float),
        np.array(columns[3], dtype=bool),
        np.array(columns[4], dtype=float),
        np.array(columns[5], dtype=object),
    )


def _resolve_metric(results, metric_name):
    names = results.metric_names
    if metric_name is None:
        if len(names) != 1:
            raise ValueError(
                "`metric_name` must be given when results hold several "
                f"metrics. Received: metric names {names}"
            )
        return names[0]
    if metric_name not in names:
        raise ValueError(
            f"`metric_name` is not in the results. Received: "
            f"metric_name={metric_name!r}, available: {names}"
        )
    return metric_name


def _check_sweep_args(results, center, dims, holdout, n_bootstrap):
    if not isinstance(results, SweepResults):
        results = SweepResults.from_rows(results)
    center = check_shape_spec("center", center, allow_dict=True)
    dims = tuple(dims)
    unknown = any(d not in SCALED_DIMS for d in dims)
    if not dims or unknown or len(set(dims)) != len(dims):
        raise ValueError(
            f"`dims` must be distinct names from {list(SCALED_DIMS)}. "
            f"Received: dims={dims!r}"
        )
    if holdout not in ("center", "largest", None):
        raise ValueError(
            "`holdout` must be 'center', 'largest' or None. "
            f"Received: holdout={holdout!r}"
        )
    check_non_negative_int("n_bootstrap", n_bootstrap)
    return results, center, dims


def fit_star_sweep(
    results,
    center,
    dims=SCALED_DIMS,
    shared_c=True,
    n_bootstrap=200,
    holdout="center",
    robust=True,
    random_state=0,
    metric_name=None,
    huber_delta=None,
    n_starts=6,
):
    """Fits Eq. (2) to each star sweep of a results table.

    The star sweep along dimension k is every run whose other two
    dimensions (and patch size) equal the centre's. With `shared_c=True`
    the data exponent c is fitted jointly across dimensions (the paper
    finds c ≈ 0.65 for every dimension). With `holdout="center"` runs at
    the star centre are excluded from the fit and used to measure the
    extrapolation error (the paper's Fig. 4); `"largest"` holds out each
    model's largest-compute run instead. Bootstrap intervals resample each
    dimension's runs with replacement and refit everything (grid search and
    polish), giving honest 90% percentile intervals for s_k.

    Args:
        results: `SweepResults` (or list of row dicts).
        center: ShapeSpec. The star centre.
        dims: tuple of str. Swept dimensions. Defaults to all three.
        shared_c: bool. Share c across dimensions. Defaults to `True`.
        n_bootstrap: int. Bootstrap refits (0 for none). Defaults to `200`.
        holdout: `"center"`, `"largest"` or `None`. Defaults to `"center"`.
        robust: bool. Huber loss on the relative error. Defaults to `True`.
        random_state: int. Seed of the bootstrap. Defaults to `0`.
        metric_name: str or `None` (the only metric present).
        huber_delta: float or `None` (set from the data, see `ShapeLaw`).
            Bootstrap refits reuse the threshold of the main fit.
        n_starts: int. Multi-start count. Defaults to `6`.

    Returns:
        A `StarSweepFit`.

    Example:

    ```python
    import keras_sovit
    truth = keras_sovit.scaling.PAPER_LIKE_LAW
    center = keras_sovit.ShapeSpec(1968, 40, 6144, 16, patch_size=14)
    grids = {"width": [608, 768, 928, 1088, 1328, 1648],
             "depth": [8, 10, 12, 16, 20, 24],
             "mlp_dim": [1088, 1360, 1728, 2160, 2592, 3072]}
    plan = [(center.replace(**{d: v}), t) for d in grids
            for v in grids[d] for t in (5e10, 1e11, 2e11)]
    results = keras_sovit.scaling.simulate(truth, plan, noise=0.0)
    fit = keras_sovit.scaling.fit_star_sweep(results, center, n_bootstrap=0)
    fit.exponents  # ≈ {"width": 0.22, "depth": 0.45, "mlp_dim": 0.6}
    ```
    """
    results, center, dims = _check_sweep_args(
        results, center, dims, holdout, n_bootstrap
    )
    metric_name = _resolve_metric(results, metric_name)
    min_points = 6 if (shared_c and len(dims) > 1) else 7
    data = {
        dim: _star_data(results, center, dim, metric_name, holdout,
                        min_points)
        for dim in dims
    }
    loss = "huber" if robust else "linear"
    t_all = np.concatenate([data[d][1][data[d][3]] for d in dims])
    t_ref = _varpro.geomean(t_all)
    laws = _fit_dims(
        data, dims, shared_c, loss, huber_delta, n_starts, t_ref, None, 20
    )
    holdout_errors, holdout_error = {}, {}
    if holdout is not None:
        holdout_errors = {d: _holdout_errors(laws[d], *data[d]) for d in dims}
        holdout_error = {
            d: float(np.mean(np.abs(e))) if e else None
            for d, e in holdout_errors.items()
        }
    boot, intervals, boot_c, c_interval = _bootstrap(
        data, dims, shared_c, loss, huber_delta, t_ref, n_bootstrap,
        random_state, laws,
    )
    fit = StarSweepFit(
        laws,
        intervals=intervals,
        holdout_error=holdout_error,
        center=center,
        metric_name=metric_name,
        bootstrap_exponents=boot,
        holdout_errors=holdout_errors,
        shared_c=shared_c,
        bootstrap_c=boot_c,
        c_interval=c_interval,
    )
    if not fit.converged:
        _varpro.warn_not_converged("fit_star_sweep")
    return fit


def _star_data(results, center, dim, metric_name, holdout, min_points):
    """(x, t, y, fit mask, weights, trials) along `dim`, validated.

    Points are weighted by their measured variance (1 / relative SE²;
    all 1 when no SE is known).
    """
    x, t, y, is_center, se, trials = _star_rows(
        results, center, dim, metric_name
    )
    for name, arr in (("compute_gflops", t), ("metric_value", y)):
        if len(arr) and (np.any(np.isnan(arr)) or np.any(arr <= 0)):
            raise ValueError(
                f"Star sweep along {dim!r} has non-positive or NaN "
                f"`{name}` values: {arr}"
            )
    if holdout == "center":
        held = is_center
    elif holdout == "largest":
        held = largest_compute_runs(x, t)
    else:
        held = np.zeros(len(x), dtype=bool)
    fit_mask = ~held
    if len(np.unique(x[fit_mask])) < 2:
        raise ValueError(
            f"Dimension {dim!r} was not swept around the centre: fewer "
            "than 2 distinct values among the fitted runs. Received: "
            f"{dim} values {sorted(set(x.tolist()))}"
        )
    if fit_mask.sum() < min_points:
        raise ValueError(
            f"Too few runs in the star sweep along {dim!r}: need at "
            f"least {min_points}, got {int(fit_mask.sum())}"
        )
    if len(np.unique(t[fit_mask])) < 2:
        raise ValueError(
            f"Star sweep along {dim!r} needs at least 2 distinct compute "
            f"values. Received: {sorted(set(t.tolist()))}"
        )
    weights = _varpro.relative_weights(y, se)
    return x, t, y, fit_mask, weights, trials


def _holdout_errors(law, x, t, y, fit_mask, *_):
    """Relative errors of `law` on the held-out runs (a list)."""
    held = ~fit_mask
    if not held.any():
        return []
    return (law.predict(x[held], t[held]) / y[held] - 1.0).tolist()


def _groups_for(data, dims, t_ref, index=None):
    groups, refs = [], []
    for dim in dims:
        x, t, y, fit_mask, w, _ = data[dim]
        x, t, y, w = x[fit_mask], t[fit_mask], y[fit_mask], w[fit_mask]
        # References from the full data, so bootstrap replicates share
        # the normalisation (and warm starts) of the main fit.
        ref = (_varpro.geomean(x), t_ref, _varpro.geomean(y))
        if index is not None:
            x, t, y, w = (a[index[dim]] for a in (x, t, y, w))
        refs.append(ref)
        groups.append((x / ref[0], t / ref[1], y / ref[2], w))
    return groups, refs


def _fit_dims(
    data, dims, shared_c, loss, delta, n_starts, t_ref, index, grid_size,
    warm=None, quick=False,
):
    """Fits all dims (jointly when c is shared); returns {dim: ShapeLaw}."""
    groups, refs = _groups_for(data, dims, t_ref, index)
    law_kwargs = {
        "loss": "huber" if loss == "huber" else "relative",
        "huber_delta": delta,
        "n_starts": n_starts,
        "grid_size": grid_size,
    }
    speed = {"tol": 1e-8, "max_nfev": 150} if quick else {}
    if shared_c:
        extra = [warm] if warm is not None else []
        outs = [
            _varpro.fit_groups(
                groups, loss=loss, f_scale=delta, n_starts=n_starts,
                grid_size=grid_size, extra_starts=extra, **speed,
            )
        ]
        parts = [(outs[0], k) for k in range(len(dims))]
    else:
        parts = []
        for k, group in enumerate(groups):
            extra = []
            if warm is not None:
                extra = [(warm[0][k : k + 1], warm[1][k])]
            out = _varpro.fit_groups(
                [group], loss=loss, f_scale=delta, n_starts=n_starts,
                grid_size=grid_size, extra_starts=extra, **speed,
            )
            parts.append((out, 0))
    laws = {}
    for k, dim in enumerate(dims):
        out, j = parts[k]
        law = ShapeLaw(**law_kwargs)
        law._set_fitted(out["coefs"][j], out["c"], refs[k], out["converged"])
        law.huber_delta_ = out["f_scale"]
        x, t, y, fit_mask = data[dim][:4]
        law._set_diagnostics(x[fit_mask], t[fit_mask], y[fit_mask], [])
        law.params_at_bounds_ = _bound_names(out, j, shared_c)
        laws[dim] = law
    return laws


def _bound_names(out, group, shared_c):
    """Names of one group's parameters that ended at their bounds."""
    n_coef = _varpro.N_COEF
    n_params = len(out["p"])
    names = []
    for index in out["at_bounds"]:
        if index == n_params - 1 and index >= n_coef * (group + 1):
            names.append("c")
        elif group * n_coef <= index < (group + 1) * n_coef:
            names.append(PARAM_NAMES[index - group * n_coef])
    return names


def _resample_trials(dim_data, rng):
    """Positions of the fitted runs of trials drawn with replacement.

    A trial's runs (its budgets and checkpoints) are correlated, so the
    bootstrap resamples trials, not rows.
    """
    trials = dim_data[5][dim_data[3]]
    names = np.unique(trials)
    drawn = rng.choice(names, size=len(names), replace=True)
    members = {n: np.flatnonzero(trials == n) for n in names}
    return np.concatenate([members[n] for n in drawn])


def _bootstrap(
    data, dims, shared_c, loss, delta, t_ref, n_bootstrap, random_state,
    laws,
):
    if not n_bootstrap:
        return {}, {}, [], None
    rng = np.random.default_rng(random_state)
    if loss == "huber" and delta is None:
        scales = [law.huber_delta_ for law in laws.values()]
        scales = [v for v in scales if v]
        delta = float(np.median(scales)) if scales else None
    coefs = np.array([laws[d]._coefs for d in dims])
    c_values = np.array([laws[d].c_ for d in dims])
    warm = (coefs, c_values[0]) if shared_c else (coefs, c_values)
    samples = {d: [] for d in dims}
    samples_c = []
    for _ in range(n_bootstrap):
        index = {dim: _resample_trials(data[dim], rng) for dim in dims}
        try:
            boot = _fit_dims(
                data, dims, shared_c, loss, delta, 1, t_ref, index, 12,
                warm=warm, quick=True,
            )
        except (ValueError, np.linalg.LinAlgError):
            continue
        for dim in dims:
            samples[dim].append(boot[dim].exponent)
        samples_c.append(float(np.mean([boot[d].c_ for d in dims])))
    intervals = {}
    samples["c"] = samples_c
    for dim in (*dims, "c"):
        if len(samples[dim]) >= 10:
            lo, hi = np.percentile(samples[dim], [5, 95])
            intervals[dim] = (float(lo), float(hi))
        else:
            warnings.warn(
                f"Too few successful bootstrap refits for {dim!r}; no "
                "interval.",
                RuntimeWarning,
                stacklevel=3,
            )
    return samples, intervals, samples.pop("c"), intervals.pop("c", None)


