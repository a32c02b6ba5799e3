"""A joint scaling law over all shape dimensions and its exact optimum.

Beyond the paper: instead of the w_k = 1/D rule, fit one law to every
observation (star sweep and grid sweep together) and search the integer
shape whose predicted loss is lowest at a target compute, with examples
seen = compute / forward GFLOPs of each candidate shape.
"""

import warnings

import numpy as np
from scipy import optimize

from keras_sovit._validation import check_bounds
from keras_sovit._validation import check_choice
from keras_sovit._validation import check_positive_finite_array
from keras_sovit._validation import check_positive_int
from keras_sovit._validation import check_positive_number
from keras_sovit.scaling import _varpro
from keras_sovit.scaling import formulas
from keras_sovit.scaling.optimum import best_shape
from keras_sovit.scaling.paper.law import _Params
from keras_sovit.scaling.paper.plan import metric_rows
from keras_sovit.scaling.results import largest_compute_runs
from keras_sovit.shapes import POOL_TYPES
from keras_sovit.shapes import SCALED_DIMS
from keras_sovit.shapes import ShapeSpec
from keras_sovit.shapes import check_rounding
from keras_sovit.shapes import check_shape_spec
from keras_sovit.shapes import forward_gflops

FORMS = ("decomposable", "data_limited")

# Search ranges for the exponents (a_k, b_k, c), in the fit's own terms.
_A_BOUNDS = (0.02, 3.0)
_B_BOUNDS = (0.02, 3.0)
_C_BOUNDS = (0.05, 2.0)


def _exponent_bounds(form):
    if form == "decomposable":
        bounds = [_A_BOUNDS] * 3 + [_B_BOUNDS] * 3 + [_C_BOUNDS]
    else:
        bounds = [_A_BOUNDS] * 3 + [_C_BOUNDS]
    lo, hi = np.array(bounds).T
    return np.log(lo), np.log(hi)


def _n_params(form):
    return 15 if form == "decomposable" else 9


def _features(form, exps, x, t, examples):
    """Design matrix; the law is this matrix times non-negative weights.

    `x` is (n, 3) width/depth/mlp_dim, `t` compute, `examples` t / GFLOPs,
    all already divided by their reference values.
    """
    if form == "decomposable":
        terms = formulas.eq3_terms(x.T, t, exps[:3], exps[3:6], exps[6])
    else:
        terms = formulas.data_limited_terms(x.T, examples, exps[:3], exps[3])
    return np.stack(terms, axis=1)


def _solve_weights(phi, y, w):
    """Non-negative coefficients minimising Σ w (f / y − 1)² (projection)."""
    root = np.sqrt(w)
    design = phi * (root / y)[:, None]
    scale = np.linalg.norm(design, axis=0)
    scale[scale == 0] = 1.0
    weights, _ = optimize.nnls(design / scale, root)
    return weights / scale


def _residuals(log_exps, form, x, t, examples, y, w):
    phi = _features(form, np.exp(log_exps), x, t, examples)
    weights = _solve_weights(phi, y, w)
    return (phi @ weights / y - 1.0) * np.sqrt(w)


def _fit_form(form, x, t, examples, y, w, n_starts, n_candidates, rng):
    """Variable projection: exponents by least squares, weights by NNLS."""
    lo, hi = _exponent_bounds(form)
    candidates = rng.uniform(lo, hi, size=(n_candidates, lo.size))
    scores = [
        np.sum(_residuals(c, form, x, t, examples, y, w) ** 2)
        for c in candidates
    ]
    best = None
    for start in candidates[np.argsort(scores)[:n_starts]]:
        result = optimize.least_squares(
            _residuals,
            start,
            bounds=(lo, hi),
            args=(form, x, t, examples, y, w),
            x_scale=1.0,
            max_nfev=400,
        )
        if best is None or result.cost < best.cost:
            best = result
    exps = np.exp(best.x)
    weights = _solve_weights(_features(form, exps, x, t, examples), y, w)
    return exps, weights, bool(best.status > 0)


def _to_params(form, exps, weights, ref):
    """Converts normalised exponents/weights to the original units."""
    xr, tr, er = ref["x"], ref["t"], ref["examples"]
    a = exps[:3]
    params = {
        "alpha": {
            d: float(weights[k] * xr[k] ** a[k])
            for k, d in enumerate(SCALED_DIMS)
        },
        "a": {d: float(a[k]) for k, d in enumerate(SCALED_DIMS)},
    }
    if form == "decomposable":
        b, c = exps[3:6], exps[6]
        params["beta"] = {
            d: float(weights[3 + k] * xr[k] ** -b[k] * tr**c)
            for k, d in enumerate(SCALED_DIMS)
        }
        params["b"] = {d: float(b[k]) for k, d in enumerate(SCALED_DIMS)}
        params["xi"] = float(weights[6] * tr**c)
        params["c"] = float(c)
    else:
        c = exps[3]
        params["B"] = float(weights[3] * er**c)
        params["c"] = float(c)
    params["eps"] = float(weights[-1])
    return params


def _law_value(form, params, x, t, examples):
    """The law in original units; x is (n, 3), t and examples (n,)."""
    per_dim = {k: [params[k][d] for d in SCALED_DIMS]
               for k in ("alpha", "a", "beta", "b") if k in params}
    if form == "decomposable":
        return formulas.eq3(
            x.T, t, per_dim["alpha"], per_dim["a"], per_dim["beta"],
            per_dim["b"], params["xi"], params["eps"], params["c"],
        )
    return formulas.data_limited(
        x.T, examples, per_dim["alpha"], per_dim["a"], params["B"],
        params["c"], params["eps"],
    )


class JointLaw(_Params):
    """A scaling law over width, depth and MLP size, fitted to all runs.

    Two forms are offered, both linear in non-negative coefficients once
    the exponents are fixed:

    - `"decomposable"`, the paper's Eq. (3):
      f(x, t) = Σ_k α_k x_k^(−a_k) + (Σ_k β_k x_k^(b_k) + ξ) t^(−c) + ε.
    - `"data_limited"`, in the Chinchilla spirit:
      f(x, t) = Σ_k α_k x_k^(−a_k) + B (t / GFLOPs(x))^(−c) + ε,
      where t / GFLOPs(x) is the number of examples seen.

    `fit` minimises the relative error (the paper's criterion), each point
    weighted by its measured variance when rows carry `metric_se`, by variable
    projection: the exponents are searched with `scipy.optimize.
    least_squares` from the best of many random starts, and for each
    candidate the coefficients solve a non-negative least-squares problem.
    With `form="auto"` both forms are fitted without each shape's
    largest-compute run (`keras_sovit.scaling.results.largest_compute_runs`,
    the library's one hold-out rule) and the one that extrapolates to those
    runs best (mean absolute relative error) is refitted on all data.

    Args:
        form: str. `"auto"`, `"decomposable"` or `"data_limited"`.
            Defaults to `"auto"`.
        image_size: int or (height, width). Image size for the GFLOPs of
            each shape. Defaults to `224`.
        pool_type: str. Pooling head counted in GFLOPs. Defaults to
            `"map"`.
        n_starts: int. Local optimisations per fit. Defaults to `8`.
        n_candidates: int. Random exponent vectors scored to pick the
            starts. Defaults to `256`.
        random_state: int. Seed of the multi-start. Defaults to `0`.
        metric_name: str or None. Metric to fit when results mix several.
            Defaults to `None`.

    Fitted attributes:
        form_: str. The form kept.
        params_: dict. Its parameters in original units (`alpha`, `a`,
            and `beta`, `b`, `xi` or `B`; `c`, `eps`).
        holdout_error_: dict. Mean |relative error| on the held-out runs
            (each shape's largest compute), per form (empty for a fixed
            form).
        train_error_: float. Mean |relative error| of the final fit.
        converged_: bool. Whether the best local optimisation converged.
        template_: `ShapeSpec`. Carries the most common `num_heads` and
            `patch_size` of the runs (other fields are placeholders).

    Example:

    ```python
    from keras_sovit.scaling.paper.joint import JointLaw
    rows = []
    for w in (32, 48, 64, 96):
        for d in (2, 3, 4, 6):
            shape = keras_sovit.ShapeSpec(w, d, 4 * w, 4, 4)
            for t in (1e3, 4e3, 1.6e4):
                ex = t / shape.gflops(32)
                rows.append({**shape.to_dict(), "compute_gflops": t,
                             "metric_name": "err",
                             "metric_value": 0.1 + 2 * w**-0.5
                             + 0.5 * d**-0.7 + 30 * ex**-0.5})
    law = JointLaw(image_size=32).fit(rows)
    law.form_  # "data_limited"
    ```
    """

    _PARAMS = (
        "form", "image_size", "pool_type", "n_starts",
        "n_candidates", "random_state", "metric_name",
    )

    def __init__(
        self,
        form="auto",
        image_size=224,
        pool_type="map",
        n_starts=8,
        n_candidates=256,
        random_state=0,
        metric_name=None,
    ):
        self.form = form
        self.image_size = image_size
        self.pool_type = pool_type
        self.n_starts = n_starts
        self.n_candidates = n_candidates
        self.random_state = random_state
        self.metric_name = metric_name

    def _validate(self):
        check_choice("form", self.form, ("auto",) + FORMS)
        check_choice("pool_type", self.pool_type, POOL_TYPES)
        for name in ("n_starts", "n_candidates"):
            check_positive_int(name, getattr(self, name))

    def _arrays(self, results):
        rows = metric_rows(results, self.metric_name)
        shapes = [ShapeSpec.from_dict(r) for r in rows]
        t = check_positive_finite_array(
            "compute_gflops", [float(r["compute_gflops"]) for r in rows]
        )
        y = check_positive_finite_array(
            "metric_value", [float(r["metric_value"]) for r in rows]
        )
        w = _varpro.relative_weights(y, [r.get("metric_se") for r in rows])
        return shapes, t, y, w

    def _design(self, shapes):
        x = np.array(
            [[getattr(s, d) for d in SCALED_DIMS] for s in shapes], float
        )
        gflops = np.array([self._gflops(s) for s in shapes])
        return x, gflops

    def _gflops(self, shape):
        return shape.gflops(self.image_size, pool_type=self.pool_type)

    def _fit_one(self, form, x, t, examples, y, w, rng):
        ref = {
            "x": _varpro.geomean(x, axis=0),
            "t": _varpro.geomean(t),
            "examples": _varpro.geomean(examples),
        }
        exps, weights, converged = _fit_form(
            form,
            x / ref["x"],
            t / ref["t"],
            examples / ref["examples"],
            y,
            w,
            self.n_starts,
            self.n_candidates,
            rng,
        )
        return _to_params(form, exps, weights, ref), converged

    def _holdout_errors(self, forms, held, needed, x, t, examples, y, w,
                        rng):
        """Mean |relative error| on the `held` runs of each form."""
        train = ~held
        if train.sum() < needed + 2:
            raise ValueError(
                f"Too few points ({int(train.sum())}) remain after holding "
                "out each shape's largest-compute run; pass a fixed `form`."
            )
        errors = {}
        for form in forms:
            params, _ = self._fit_one(
                form, x[train], t[train], examples[train], y[train],
                w[train], rng,
            )
            pred = _law_value(form, params, x[held], t[held], examples[held])
            errors[form] = float(np.mean(np.abs(pred / y[held] - 1.0)))
        return errors

    def fit(self, results):
        """Fits the law to `SweepResults` or an iterable of row dicts."""
        self._validate()
        shapes, t, y, w = self._arrays(results)
        forms = FORMS if self.form == "auto" else (self.form,)
        needed = max(_n_params(f) for f in forms)
        if len(y) < needed + 2:
            raise ValueError(
                f"`results` has {len(y)} usable rows; the joint law needs "
                f"at least {needed + 2} (form={self.form!r})."
            )
        x, gflops = self._design(shapes)
        examples = t / gflops
        rng = np.random.default_rng(self.random_state)
        self.holdout_error_ = {}
        form = forms[0]
        if len(forms) > 1:
            held = largest_compute_runs(shapes, t)
            self.holdout_error_ = self._holdout_errors(
                forms, held, needed, x, t, examples, y, w, rng
            )
            form = min(self.holdout_error_, key=self.holdout_error_.get)
        self.params_, self.converged_ = self._fit_one(
            form, x, t, examples, y, w, rng
        )
        self.form_ = form
        pred = _law_value(form, self.params_, x, t, examples)
        self.train_error_ = float(np.mean(np.abs(pred / y - 1.0)))
        if not self.converged_:
            warnings.warn(
                f"JointLaw ({form}) fit did not converge; see `converged_`.",
                RuntimeWarning,
            )
        counts = {}
        for s in shapes:
            key = (s.num_heads, s.patch_size)
            counts[key] = counts.get(key, 0) + 1
        heads, patch = max(counts, key=counts.get)
        self.template_ = ShapeSpec(heads * 16, 1, 16, heads, patch)
        return self

    def _check_fitted(self):
        if not hasattr(self, "params_"):
            raise ValueError(
                "This JointLaw is not fitted yet; call `fit(results)` first."
            )

    def predict(self, shapes, compute_gflops):
        """Predicted metric of shape(s) trained for `compute_gflops`.

        Args:
            shapes: a `ShapeSpec` or a list of them.
            compute_gflops: float or array broadcastable to the shapes.

        Returns:
            A float for one shape and a scalar compute, else an array.
        """
        self._check_fitted()
        single = isinstance(shapes, ShapeSpec)
        shape_list = [shapes] if single else list(shapes)
        for i, s in enumerate(shape_list):
            check_shape_spec(f"shapes[{i}]", s)
        t = check_positive_finite_array("compute_gflops", compute_gflops)
        x, gflops = self._design(shape_list)
        t_b = np.broadcast_to(t, (len(shape_list),)) if t.ndim <= 1 else t
        values = _law_value(self.form_, self.params_, x, t_b, t_b / gflops)
        if single and t.ndim == 0:
            return float(values[0])
        return values

    def to_dict(self):
        """JSON-safe state (constructor arguments and fitted values)."""
        self._check_fitted()
        state = self.get_params()
        if isinstance(state["image_size"], tuple):
            state["image_size"] = list(state["image_size"])
        state.update(
            form_=self.form_,
            params_=self.params_,
            holdout_error_=dict(getattr(self, "holdout_error_", {})),
            converged_=bool(getattr(self, "converged_", True)),
            train_error_=getattr(self, "train_error_", None),
            template_=self.template_.to_dict(),
        )
        return state

    @classmethod
    def from_dict(cls, state):
        """Rebuilds a fitted `JointLaw` from `to_dict()` output."""
        state = dict(state)
        fitted = {k: state.pop(k) for k in list(state) if k.endswith("_")}
        if "form_" not in fitted or "params_" not in fitted:
            raise ValueError(
                "`state` must come from JointLaw.to_dict(); missing "
                "'form_' or 'params_'."
            )
        if isinstance(state.get("image_size"), list):
            state["image_size"] = tuple(state["image_size"])
        law = cls(**state)
        for key, value in fitted.items():
            setattr(law, key, value)
        law.template_ = ShapeSpec.from_dict(fitted["template_"])
        return law


_DEFAULT_BOUNDS = {"width": (16, 16384), "depth": (1, 256),
                   "mlp_dim": (16, 65536)}


def _check_constraints(constraints):
    constraints = dict(constraints or {})
    max_params = constraints.pop("max_params", None)
    bounds = check_bounds("constraints", constraints, _DEFAULT_BOUNDS)
    if max_params is not None:
        check_positive_number("constraints['max_params']", max_params)
    return bounds, max_params


def optimal_shape(
    joint_law,
    target_compute,
    image_size=None,
    rounding=None,
    constraints=None,
    template=None,
):
    """The integer shape a `JointLaw` predicts best at a compute budget.

    Every candidate is trained on examples = `target_compute` / its exact
    forward GFLOPs (`keras_sovit.shapes.forward_gflops`). The search is the
    library's one integer optimiser,
    `keras_sovit.scaling.optimum.best_shape`, on the lattice of `rounding`.
    A warning is raised when the answer lies on a bound of the search box.

    Args:
        joint_law: a fitted `JointLaw`.
        target_compute: float. Compute budget in GFLOPs.
        image_size: int, (height, width) or None. Defaults to `None` (the
            law's image size).
        rounding: `Rounding` or None. Defaults to `None` (`Rounding()`:
            multiples of 16 with the template's head count).
        constraints: dict or None. `{"width": (lo, hi), "depth": (lo, hi),
            "mlp_dim": (lo, hi), "max_params": n}`, any subset. Defaults to
            `None` (wide default bounds).
        template: `ShapeSpec` or None. Supplies `num_heads` and
            `patch_size`. Defaults to `None` (the most common in the fit).

    Returns:
        The best `ShapeSpec`.

    Example:

    ```python
    from keras_sovit.scaling.paper.joint import JointLaw, optimal_shape
    law = JointLaw.from_dict({
        "form": "data_limited", "image_size": 224, "pool_type": "map",
        "form_": "data_limited", "template_": keras_sovit.ShapeSpec(
            64, 1, 16, 4, 16).to_dict(),
        "params_": {"alpha": {"width": 3.0, "depth": 0.5, "mlp_dim": 3.0},
                    "a": {"width": 0.5, "depth": 0.7, "mlp_dim": 0.5},
                    "B": 20.0, "c": 0.5, "eps": 0.1},
    })
    optimal_shape(law, 1e6)  # ShapeSpec(528, 17, 2240, 4, 16)
    ```
    """
    if not isinstance(joint_law, JointLaw):
        raise ValueError(
            f"`joint_law` must be a JointLaw. Received: {joint_law!r}"
        )
    joint_law._check_fitted()
    target_compute = check_positive_number("target_compute", target_compute)
    rounding = check_rounding(rounding)
    template = template or joint_law.template_
    check_shape_spec("template", template)
    bounds, max_params = _check_constraints(constraints)
    image_size = joint_law.image_size if image_size is None else image_size
    pool_type = joint_law.pool_type
    num_patches = template.num_patches(image_size)

    def loss(width, depth, mlp_dim):
        gflops = forward_gflops(width, depth, mlp_dim, num_patches,
                                template.patch_size, pool_type=pool_type)
        examples = target_compute / gflops
        x = np.stack(np.broadcast_arrays(width, depth, mlp_dim), axis=-1)
        values = _law_value(
            joint_law.form_, joint_law.params_, x.reshape(-1, 3),
            np.full(x.shape[:-1], target_compute).ravel(), examples.ravel(),
        )
        return values.reshape(x.shape[:-1])

    best, _ = best_shape(loss, template, rounding, bounds, max_params,
                         num_patches)
    _warn_on_bounds(best, bounds, rounding, template)
    return best


def _warn_on_bounds(shape, bounds, rounding, template):
    for dim in _dims_on_bounds(shape, bounds, rounding, template):
        lo, hi = bounds[dim]
        warnings.warn(
            f"optimal_shape: {dim}={getattr(shape, dim)} lies on the search "
            f"bound {(int(lo), int(hi))}; widen `constraints[{dim!r}]`.",
            RuntimeWarning,
        )


def on_search_bound(shape, constraints=None, rounding=None):
    """Dimensions of an `optimal_shape` result that sit on a search bound.

    A law whose predicted loss keeps falling up to a bound has no interior
    optimum in the searched box: it is extrapolating, and the proposal
    should not be trusted.

    Args:
        shape: `ShapeSpec` returned by `optimal_shape`.
        constraints: dict or None. The constraints given to `optimal_shape`.
        rounding: `Rounding` or None. The rounding given to `optimal_shape`.

    Returns:
        A list of dimension names, empty when the optimum is interior.

    Example:

    ```python
    from keras_sovit.scaling.paper.joint import on_search_bound
    on_search_bound(keras_sovit.ShapeSpec(16384, 12, 1024, 16, 16))
    # ['width']
    ```
    """
    check_shape_spec("shape", shape)
    bounds, _ = _check_constraints(constraints)
    return _dims_on_bounds(shape, bounds, check_rounding(rounding), shape)


def _dims_on_bounds(shape, bounds, rounding, template):
    units = rounding.steps(shape.width, template.num_heads)
    dims = []
    for dim in SCALED_DIMS:
        lo, hi = bounds[dim]
        value = getattr(shape, dim)
        if value - units[dim] < lo or value + units[dim] > hi:
            dims.append(dim)
    return dims
