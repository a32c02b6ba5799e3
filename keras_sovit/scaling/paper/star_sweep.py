"""The star sweep (Sec. 3 of the paper): Eq. (2) fitted per shape dimension.

From the runs of a star sweep (one dimension varied around a centre shape at
several budgets), `fit_star_sweep` fits one `ShapeLaw` per dimension with a
shared data exponent `c` and bootstraps their scaling exponents.
"""

import warnings

import numpy as np

from keras_sovit._validation import check_non_negative_int
from keras_sovit.scaling import _varpro
from keras_sovit.scaling.formulas import EQ2_PARAMS as PARAM_NAMES
from keras_sovit.scaling.paper.law import ShapeLaw
from keras_sovit.scaling.results import SweepResults
from keras_sovit.scaling.results import largest_compute_runs
from keras_sovit.shapes import SCALED_DIMS
from keras_sovit.shapes import ShapeSpec
from keras_sovit.shapes import check_shape_spec


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


