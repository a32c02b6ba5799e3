"""Eq. (2) of the paper: one shape dimension against compute.

f(x, t) = α·x^(−a) + (β·x^b + ξ)·t^(−c) + ε, all seven parameters positive;
the compute-optimal x★(t) = (α a t^c / (β b))^(1/(a+b)) = O(t^s) with
s = c / (a + b) (Eq. 4).
"""


import numpy as np

from keras_sovit._validation import check_choice
from keras_sovit._validation import check_positive_finite_array
from keras_sovit._validation import check_positive_int
from keras_sovit._validation import check_positive_number
from keras_sovit.scaling import _varpro
from keras_sovit.scaling.formulas import EQ2_PARAMS as PARAM_NAMES

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
