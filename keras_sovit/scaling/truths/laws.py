"""Known scaling laws ("truths") and noisy observations drawn from them.

Used to test fits, planners and the oracle without training anything.
"""

import numbers

import numpy as np

from keras_sovit._validation import check_bounds
from keras_sovit._validation import check_dim_dict
from keras_sovit._validation import check_positive_int
from keras_sovit._validation import check_positive_number
from keras_sovit._validation import image_hw
from keras_sovit.scaling import formulas
from keras_sovit.scaling.formulas import eq2_loss  # noqa: F401 (public)
from keras_sovit.scaling.optimum import best_shape
from keras_sovit.scaling.paper.plan import PAPER_STAR_CENTER
from keras_sovit.scaling.paper.plan import PAPER_STAR_GRIDS
from keras_sovit.scaling.results import DEFAULT_METRIC
from keras_sovit.scaling.results import SweepResults
from keras_sovit.shapes import SCALED_DIMS
from keras_sovit.shapes import Rounding
from keras_sovit.shapes import check_shape_spec
from keras_sovit.shapes import forward_gflops

# The box `true_optimum` searches unless told otherwise.
_TRUTH_BOX = {"width": (1, 32768), "depth": (1, 512), "mlp_dim": (1, 131072)}


def _check_dim_dict(name, value):
    return check_dim_dict(
        name, value, check_positive_number, SCALED_DIMS, require_all=True
    )


def gflops_array(width, depth, mlp_dim, patch_size=16, image_size=224):
    """Vectorised `ShapeSpec.gflops(image_size, pool_type="map")`.

    Args:
        width, depth, mlp_dim: arrays (broadcastable) of shape values.
        patch_size: int or array of ints. Defaults to `16`.
        image_size: int or (height, width). Defaults to `224`.

    Returns:
        Forward GFLOPs per image (MAP head, no classifier), 1 MAC = 2 FLOPs.
    """
    height, side = image_hw(image_size)
    patch = np.asarray(patch_size)
    num_patches = (height // patch) * (side // patch)
    return forward_gflops(
        np.asarray(width, dtype=float), np.asarray(depth, dtype=float),
        np.asarray(mlp_dim, dtype=float), num_patches.astype(float),
        patch.astype(float),
    )


class _Law:
    """Shared machinery: scalar loss, vectorised loss and the true optimum.

    A truth implements `loss_array(width, depth, mlp_dim, t, patch_size)`
    (vectorised) and has an `image_size`.
    """

    def _dims(self, name):
        return [getattr(self, name)[d] for d in SCALED_DIMS]

    def loss(self, shape, compute_gflops):
        """True metric of `shape` trained with `compute_gflops`."""
        shape = check_shape_spec("shape", shape, allow_dict=True)
        t = check_positive_number("compute_gflops", compute_gflops)
        value = self.loss_array(
            shape.width, shape.depth, shape.mlp_dim, t, shape.patch_size
        )
        return float(value)

    def losses(self, shapes, computes):
        """Vectorised `loss` over lists of shapes and computes."""
        shapes = [
            check_shape_spec("shapes", s, allow_dict=True) for s in shapes
        ]
        computes = np.asarray(computes, dtype=float)
        if computes.shape != (len(shapes),) or np.any(computes <= 0):
            raise ValueError(
                "`computes` must be positive, one per shape. "
                f"Received: computes={computes!r}"
            )
        cols = {f: np.array([getattr(s, f) for s in shapes])
                for f in SCALED_DIMS}
        patches = np.array([s.patch_size for s in shapes])
        return self.loss_array(
            cols["width"], cols["depth"], cols["mlp_dim"], computes, patches
        )

    def true_optimum(
        self,
        target_compute,
        template,
        bounds=None,
        width_multiple=None,
        mlp_multiple=1,
    ):
        """The integer shape with the lowest true loss at a compute.

        The lattice has width a multiple of `width_multiple` (defaults to
        the template's `num_heads`), depth any integer and mlp_dim a
        multiple of `mlp_multiple`; `num_heads` and `patch_size` come from
        `template`. The search is `keras_sovit.scaling.optimum.best_shape`.

        Args:
            target_compute: float. Compute budget in GFLOPs.
            template: ShapeSpec. Supplies num_heads and patch_size.
            bounds: dict `{dim: (low, high)}` or `None` for wide defaults.
            width_multiple: int or `None`.
            mlp_multiple: int. Defaults to `1`.
        """
        t = check_positive_number("target_compute", target_compute)
        template = check_shape_spec("template", template, allow_dict=True)
        width_multiple = check_positive_int(
            "width_multiple", width_multiple or template.num_heads
        )
        if width_multiple % template.num_heads:
            raise ValueError(
                "`width_multiple` must be a multiple of num_heads="
                f"{template.num_heads}. Received: "
                f"width_multiple={width_multiple}"
            )
        rounding = Rounding(
            width_multiple=width_multiple,
            mlp_multiple=check_positive_int("mlp_multiple", mlp_multiple),
            num_heads=template.num_heads,
        )
        box = check_bounds("bounds", bounds, _TRUTH_BOX)
        shape, _ = best_shape(
            lambda w, d, m: self.loss_array(w, d, m, t, template.patch_size),
            template, rounding, box,
        )
        return shape


class DecomposableLaw(_Law):
    """The paper's decomposable multi-dimension law, Eq. (3).

    f(x, t) = Σ_k α_k x_k^(−a_k) + (Σ_k β_k x_k^(b_k) + ξ) t^(−c) + ε,
    with x = (width, depth, mlp_dim) and t the compute in GFLOPs. A star
    sweep along dimension k (the other dimensions held at the centre) then
    follows Eq. (2) exactly, with ξ_k and ε_k absorbing the fixed
    dimensions: see `star_params`.

    Args:
        alpha: dict `{dim: float}`. Capacity coefficients α_k.
        a: dict `{dim: float}`. Capacity exponents a_k.
        beta: dict `{dim: float}`. Compute-term coefficients β_k.
        b: dict `{dim: float}`. Compute-term exponents b_k.
        xi: float. Shape-independent compute-term coefficient ξ.
        eps: float. Irreducible error ε.
        c: float. Data exponent.
        image_size: int or (height, width). Kept for `simulate`'s
            `examples_seen`. Defaults to `224`.

    Example:

    ```python
    law = keras_sovit.scaling.PAPER_LIKE_LAW
    center = keras_sovit.ShapeSpec(1968, 40, 6144, 16, patch_size=14)
    law.loss(center, 1e11)
    law.star_params(center)["mlp_dim"]["s"]  # 0.6
    best = law.true_optimum(1e11, template=center)
    ```

    Reference:
    - [Alabdulmohsin et al., 2023](https://arxiv.org/abs/2305.13035)
    """

    def __init__(self, alpha, a, beta, b, xi, eps, c, image_size=224):
        self.alpha = _check_dim_dict("alpha", alpha)
        self.a = _check_dim_dict("a", a)
        self.beta = _check_dim_dict("beta", beta)
        self.b = _check_dim_dict("b", b)
        self.xi = check_positive_number("xi", xi, allow_zero=True)
        self.eps = check_positive_number("eps", eps, allow_zero=True)
        self.c = check_positive_number("c", c)
        image_hw(image_size)
        self.image_size = image_size

    def loss_array(self, width, depth, mlp_dim, t, patch_size=16):
        """Vectorised loss (patch size is ignored by this law)."""
        return formulas.eq3(
            (width, depth, mlp_dim), t, self._dims("alpha"),
            self._dims("a"), self._dims("beta"), self._dims("b"), self.xi,
            self.eps, self.c,
        )

    def star_params(self, center):
        """Exact Eq. (2) parameters of each star sweep around `center`.

        Returns `{dim: {"alpha", "a", "beta", "b", "xi", "eps", "c", "s"}}`
        where ξ_k and ε_k absorb the dimensions held at the centre and
        s = c / (a + b).
        """
        center = check_shape_spec("center", center, allow_dict=True)
        out = {}
        for dim in SCALED_DIMS:
            others = [d for d in SCALED_DIMS if d != dim]
            xi = self.xi + sum(
                self.beta[d] * getattr(center, d) ** self.b[d] for d in others
            )
            eps = self.eps + sum(
                self.alpha[d] * getattr(center, d) ** (-self.a[d])
                for d in others
            )
            out[dim] = {
                "alpha": self.alpha[dim],
                "a": self.a[dim],
                "beta": self.beta[dim],
                "b": self.b[dim],
                "xi": xi,
                "eps": eps,
                "c": self.c,
                "s": self.c / (self.a[dim] + self.b[dim]),
            }
        return out

    def star_exponents(self, center=None):
        """`{dim: s_k}` with s_k = c / (a_k + b_k) (centre-independent)."""
        return {d: self.c / (self.a[d] + self.b[d]) for d in SCALED_DIMS}


class DataLimitedLaw(_Law):
    """A data-limited truth in the Chinchilla spirit.

    f(x, t) = Σ_k α_k x_k^(−a_k) + B · (t / GFLOPs(x))^(−c) + ε,
    where t / GFLOPs(x) is the number of examples seen: the compute divided
    by the exact forward GFLOPs of the shape
    (`ShapeSpec.gflops(image_size, pool_type="map")`). Dimensions interact
    through the FLOP count, so star-sweep exponents and the exponents of
    the true compute-optimal path need not agree.

    Args:
        alpha: dict `{dim: float}`. Capacity coefficients α_k.
        a: dict `{dim: float}`. Capacity exponents a_k.
        B: float. Data-term coefficient.
        c: float. Data exponent.
        eps: float. Irreducible error.
        image_size: int or (height, width). Defaults to `224`.

    Example:

    ```python
    law = keras_sovit.scaling.DataLimitedLaw(
        alpha={"width": 30.0, "depth": 1.5, "mlp_dim": 20.0},
        a={"width": 0.6, "depth": 0.5, "mlp_dim": 0.5},
        B=400.0, c=0.35, eps=0.1,
    )
    shape = keras_sovit.ShapeSpec(768, 12, 3072, 12, patch_size=16)
    law.loss(shape, 1e10)
    ```
    """

    def __init__(self, alpha, a, B, c, eps, image_size=224):
        self.alpha = _check_dim_dict("alpha", alpha)
        self.a = _check_dim_dict("a", a)
        self.B = check_positive_number("B", B)
        self.c = check_positive_number("c", c)
        self.eps = check_positive_number("eps", eps, allow_zero=True)
        image_hw(image_size)
        self.image_size = image_size

    def loss_array(self, width, depth, mlp_dim, t, patch_size=16):
        """Vectorised loss; examples = t / gflops_array(...)."""
        flops = gflops_array(width, depth, mlp_dim, patch_size,
                             self.image_size)
        examples = np.asarray(t, dtype=float) / flops
        return formulas.data_limited(
            (width, depth, mlp_dim), examples, self._dims("alpha"),
            self._dims("a"), self.B, self.c, self.eps,
        )


def simulate(
    law, plan, noise=0.01, seed=0, metric_name=DEFAULT_METRIC, **extra
):
    """Noisy observations of a known law at the runs of a plan.

    Each run (shape, compute) gives y = f(shape, t) · (1 + noise · N(0, 1)),
    with `examples_seen` = t / `shape.gflops(law.image_size)`.

    Args:
        law: a `DecomposableLaw` or `DataLimitedLaw` (anything with
            `.loss(shape, t)` and `.image_size`).
        plan: list of `(ShapeSpec, compute_gflops)`.
        noise: float. Relative noise level. Defaults to `0.01`.
        seed: int. Seed of the noise. Defaults to `0`.
        metric_name: str. Defaults to `"fewshot_10shot_error"`.
        **extra: str fields added to every row (e.g. `phase="star"`).

    Returns:
        A `SweepResults`.

    Example:

    ```python
    law = keras_sovit.scaling.PAPER_LIKE_LAW
    center = keras_sovit.ShapeSpec(1968, 40, 6144, 16, patch_size=14)
    plan = [(center.replace(depth=d), 1e11) for d in (8, 12, 16)]
    results = keras_sovit.scaling.simulate(law, plan, noise=0.01, seed=0)
    ```
    """
    noise = check_positive_number("noise", noise, allow_zero=True)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"`seed` must be an int. Received: seed={seed!r}")
    plan = list(plan)
    if not plan:
        raise ValueError(f"`plan` must not be empty. Received: plan={plan!r}")
    rng = np.random.default_rng(seed)
    draws = rng.standard_normal(len(plan))
    results = SweepResults()
    for (shape, t), z in zip(plan, draws):
        shape = check_shape_spec("shape", shape, allow_dict=True)
        value = law.loss(shape, t) * (1.0 + noise * z)
        if value <= 0:
            raise ValueError(
                "`noise` is so large that a metric became non-positive. "
                f"Received: noise={noise}"
            )
        examples = float(t) / shape.gflops(law.image_size, strict=False)
        results.append(
            shape,
            compute_gflops=float(t),
            metric_value=float(value),
            metric_name=metric_name,
            examples_seen=examples,
            **extra,
        )
    return results


def _paper_like_law(weight=0.04, xi=0.03, eps=0.08):
    """Builds PAPER_LIKE_LAW from normalised, readable numbers.

    In units of the geometric middle of the paper's star grids (x_ref) and
    t_ref = 1e11 GFLOPs (about 128M examples at the star centre, 224 px,
    patch 14), each dimension has capacity weight 0.04 and its star-sweep
    optimum at t_ref in the middle of its grid (α a = β b in these units).
    Exponents give s = (0.22, 0.45, 0.6) with c = 0.65.
    """
    c = 0.65
    x_ref = {"width": 1000.0, "depth": 14.0, "mlp_dim": 1830.0}
    a = {"width": 0.85, "depth": 0.6, "mlp_dim": 0.45}
    s = {"width": 0.22, "depth": 0.45, "mlp_dim": 0.6}
    b = {d: c / s[d] - a[d] for d in SCALED_DIMS}
    t_ref = 1e11
    alpha = {d: weight * x_ref[d] ** a[d] for d in SCALED_DIMS}
    beta = {
        d: weight * a[d] / b[d] * x_ref[d] ** (-b[d]) * t_ref**c
        for d in SCALED_DIMS
    }
    return DecomposableLaw(
        alpha=alpha,
        a=a,
        beta=beta,
        b=b,
        xi=xi * t_ref**c,
        eps=eps,
        c=c,
        image_size=224,
    )


PAPER_LIKE_LAW = _paper_like_law()


STAR_BUDGETS = (5e10, 1e11, 2e11)


def _eq2_star_truth(scale=0.1, xi=0.3, eps=0.3, a_share=0.5):
    """Eq. (2) truth per dimension used for the fit-accuracy checks.

    In units x / x_ref (x_ref the geometric middle of the paper's grid)
    and t / 1e11 GFLOPs: α = 1, a = a_share · c / s, b = c / s − a,
    β = α a / b (so the optimum at 1e11 GFLOPs is the grid's middle),
    ξ = `xi`, ε = `eps`, all times `scale`; c = 0.65 and
    s = (0.22, 0.45, 0.6). Returned in original units.
    """
    c = 0.65
    s = {"width": 0.22, "depth": 0.45, "mlp_dim": 0.6}
    t_ref = 1e11
    out = {}
    for dim, grid in PAPER_STAR_GRIDS.items():
        x_ref = float(np.sqrt(grid[0] * grid[-1]))
        a = a_share * c / s[dim]
        b = c / s[dim] - a
        out[dim] = {
            "alpha": scale * x_ref**a,
            "a": a,
            "beta": scale * a / b * x_ref ** (-b) * t_ref**c,
            "b": b,
            "xi": scale * xi * t_ref**c,
            "eps": scale * eps,
            "c": c,
        }
    return out


# Eq. (2) parameters per dimension (original units) whose star sweeps over
# the paper's grids and budgets are identifiable at 1% noise; errors range
# from about 0.2 to 0.45. Used by the fit-accuracy tests and benchmark.
EQ2_STAR_TRUTH = _eq2_star_truth()


def simulate_star(
    truth=None,
    center=None,
    grids=None,
    budgets=STAR_BUDGETS,
    noise=0.01,
    seed=0,
    metric_name=DEFAULT_METRIC,
):
    """Star-sweep observations drawn from per-dimension Eq. (2) truths.

    For each dimension k and each grid value and budget, the run is the
    centre with x_k replaced; its metric is Eq. (2) with `truth[k]`, times
    (1 + noise · N(0, 1)).

    Args:
        truth: dict `{dim: Eq. (2) params}`. Defaults to `EQ2_STAR_TRUTH`.
        center: ShapeSpec. Defaults to the paper's star centre.
        grids: dict `{dim: values}`. Defaults to the paper's star grids.
        budgets: tuple of GFLOPs. Defaults to `(5e10, 1e11, 2e11)`.
        noise: float. Relative noise. Defaults to `0.01`.
        seed: int. Defaults to `0`.
        metric_name: str.

    Returns:
        A `SweepResults`.

    Example:

    ```python
    results = keras_sovit.scaling.simulate_star(noise=0.01, seed=3)
    len(results)  # 54
    ```
    """
    truth = EQ2_STAR_TRUTH if truth is None else truth
    if center is None:
        center = PAPER_STAR_CENTER
    center = check_shape_spec("center", center, allow_dict=True)
    grids = PAPER_STAR_GRIDS if grids is None else grids
    noise = check_positive_number("noise", noise, allow_zero=True)
    if not set(grids) <= set(truth):
        raise ValueError(
            "`truth` must hold params for every swept dimension. Received "
            f"grids for {sorted(grids)} and truth for {sorted(truth)}"
        )
    rng = np.random.default_rng(seed)
    results = SweepResults()
    for dim, values in grids.items():
        for value in values:
            shape = center.replace(**{dim: int(value)})
            for t in budgets:
                y = float(eq2_loss(truth[dim], value, t))
                y *= 1.0 + noise * rng.standard_normal()
                results.append(
                    shape, compute_gflops=float(t), metric_value=y,
                    metric_name=metric_name,
                )
    return results
