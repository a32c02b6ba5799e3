"""Figures for star-sweep fits and scaling plans (matplotlib, Agg).

matplotlib is imported only when a plot is drawn, so the rest of
`keras_sovit.scaling` works without it.
"""

import math
import os

import numpy as np

from keras_sovit.scaling.paper.plan import SCALED_DIMS
from keras_sovit.scaling.paper.plan import scale_shape
from keras_sovit.shapes import ShapeSpec

_LABELS = {"width": "width", "depth": "depth", "mlp_dim": "MLP dim"}


def _pyplot():
    try:
        import matplotlib
    except ImportError as error:  # pragma: no cover - depends on the env
        raise ImportError(
            "Plots need matplotlib: pip install matplotlib."
        ) from error
    matplotlib.use("Agg", force=False)
    from matplotlib import pyplot

    return pyplot


def _check_path(path):
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ValueError(f"`path` must be a file path. Received: path={path!r}")
    return os.fspath(path)


def _check_fit(fit):
    for attr in ("exponents", "laws"):
        if not hasattr(fit, attr):
            raise ValueError(
                "`fit` must be a StarSweepFit (from `fit_star_sweep`). "
                f"Received: fit={fit!r}"
            )


def _infer_center(rows):
    return ShapeSpec.from_dict(
        {
            **rows[0],
            **{d: max(int(r[d]) for r in rows) for d in SCALED_DIMS},
        }
    )


def _budget_key(row):
    examples = row.get("examples_seen")
    if examples not in (None, "") and float(examples) > 0:
        return "examples", float(f"{float(examples):.3g}")
    return "compute", float(f"{float(row['compute_gflops']):.3g}")


def _sweep_points(rows, center, dim):
    """Rows of the sweep along `dim` (and the centre), by budget."""
    others = [d for d in SCALED_DIMS if d != dim]
    groups = {}
    for row in rows:
        if any(int(row[d]) != getattr(center, d) for d in others):
            continue
        key = _budget_key(row)
        x = int(row[dim])
        groups.setdefault(key, []).append(
            (x, float(row["compute_gflops"]), float(row["metric_value"]),
             x == getattr(center, dim))
        )
    return dict(sorted(groups.items(), key=lambda kv: kv[0][1]))


def _curve_compute(center, dim, xs, key, image_size):
    """Compute along a budget's curve (GFLOPs are linear between integers
    in depth and MLP size and nearly so in width)."""
    kind, value = key
    if kind == "compute":
        return np.full(xs.shape, value)
    base = center.replace(num_heads=1)
    ints = np.arange(max(1, int(xs.min())), int(xs.max()) + 2)
    step = max(1, len(ints) // 200)
    ints = np.unique(np.append(ints[::step], ints[-1]))
    flops = [base.replace(**{dim: int(x)}).gflops(image_size) for x in ints]
    return value * np.interp(xs, ints, flops)


def _optimum_on_curve(law, xs, ts):
    """The point of a curve whose x is optimal for its own compute."""
    # A steep fitted path can underflow to 0 (log: -inf), which still has
    # a sign; a crossing next to it has no finite interpolation.
    with np.errstate(divide="ignore"):
        optimal = np.log(np.asarray(law.optimal(ts), dtype=float))
    gap = np.log(xs) - optimal
    cross = np.nonzero(np.diff(np.sign(gap)))[0]
    if not len(cross) or not np.isfinite(gap[cross[0]:cross[0] + 2]).all():
        return None
    i = cross[0]
    frac = gap[i] / (gap[i] - gap[i + 1])
    x = float(np.exp(np.log(xs[i]) + frac * np.log(xs[i + 1] / xs[i])))
    t = float(np.exp(np.log(ts[i]) + frac * np.log(ts[i + 1] / ts[i])))
    return x, float(law.predict(x, t))


def plot_star_sweep(fit, results, path, center=None, image_size=224):
    """Plots a star sweep: metric against each dimension, per budget.

    One panel per swept dimension (log x axis). Each budget (examples seen
    when recorded, otherwise compute) gets its observations, the fitted
    Eq. (2) curve and a diamond at the fitted compute-optimal value x*(t)
    (Eq. 4): the point of the curve whose value is compute-optimal for the
    compute spent there (the minimum of the curve when the budget is a
    compute). The star centre, held out of the fit, is an open marker.

    Args:
        fit: `StarSweepFit` from `fit_star_sweep`.
        results: `SweepResults` or iterable of rows used for the fit.
        path: str or path. Where to save the PNG.
        center: `ShapeSpec` or None. The star centre. Defaults to `None`
            (`fit.center`, else the largest value of each dimension in
            `results`).
        image_size: int or (height, width). For the compute along a
            fixed-examples curve. Defaults to `224`.

    Returns:
        The matplotlib `Figure` (already saved).

    Example:

    ```python
    from keras_sovit.scaling.paper.plan import PAPER_STAR_CENTER
    from keras_sovit.scaling.paper.plan import PAPER_STAR_GRIDS
    plan = keras_sovit.scaling.star_sweep_plan(
        PAPER_STAR_CENTER, PAPER_STAR_GRIDS, [64e6, 128e6, 256e6],
        budget_unit="examples",
    )
    results = keras_sovit.scaling.simulate(
        keras_sovit.scaling.PAPER_LIKE_LAW, plan, noise=0.01
    )
    fit = keras_sovit.scaling.fit_star_sweep(results, PAPER_STAR_CENTER)
    fig = keras_sovit.scaling.plot_star_sweep(fit, results, "star.png")
    ```
    """
    _check_fit(fit)
    path = _check_path(path)
    rows = list(results)
    if not rows:
        raise ValueError("`results` must not be empty.")
    metric = getattr(fit, "metric_name", None)
    if metric is not None and any(r.get("metric_name") for r in rows):
        rows = [r for r in rows if r.get("metric_name") == metric] or rows
    center = center or getattr(fit, "center", None) or _infer_center(rows)
    dims = [d for d in SCALED_DIMS if d in fit.laws]
    plt = _pyplot()
    fig, axes = plt.subplots(
        1, len(dims), figsize=(4.2 * len(dims), 3.6), squeeze=False
    )
    cmap = plt.get_cmap("viridis")
    for ax, dim in zip(axes[0], dims):
        law = fit.laws[dim]
        groups = _sweep_points(rows, center, dim)
        all_x = [p[0] for g in groups.values() for p in g]
        xs = np.geomspace(min(all_x) * 0.9, max(all_x) * 1.1, 120)
        for i, (key, points) in enumerate(groups.items()):
            color = cmap(i / max(1, len(groups) - 1) * 0.85)
            px, pt, py, held = map(np.array, zip(*points))
            label = f"{key[1]:.3g} {'ex' if key[0] == 'examples' else 'GF'}"
            ax.scatter(px[~held], py[~held], color=color, s=18, label=label)
            ax.scatter(px[held], py[held], facecolors="none",
                       edgecolors=color, s=36)
            ts = _curve_compute(center, dim, xs, key, image_size)
            ax.plot(xs, law.predict(xs, ts), color=color, lw=1.2)
            opt = _optimum_on_curve(law, xs, ts)
            if opt is not None:
                ax.plot([opt[0]], [opt[1]], marker="D", color=color,
                        markeredgecolor="black", ms=6, ls="none")
        _limit_to_data(ax, [p[2] for g in groups.values() for p in g])
        ax.set_xscale("log")
        ticks = sorted(set(all_x))
        ax.set_xticks(ticks, [str(t) for t in ticks], fontsize=7,
                      rotation=45)
        ax.minorticks_off()
        s = fit.exponents[dim]
        ax.set_title(f"{_LABELS[dim]}: s = {s:.3f}")
        ax.set_xlabel(f"{_LABELS[dim]} (log)")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("metric")
    handles, labels = axes[0][0].get_legend_handles_labels()
    from matplotlib.lines import Line2D

    handles += [
        Line2D([], [], marker="o", ls="none", mfc="none", mec="gray"),
        Line2D([], [], marker="D", ls="none", color="gray", mec="black"),
    ]
    labels += ["held-out centre", "x* for its own compute"]
    fig.legend(handles, labels, fontsize=7, title="budget",
               title_fontsize=7, loc="center left",
               bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return fig


def _limit_to_data(ax, values, pad=0.15):
    """Keeps the y-axis on the measurements, not on curves that run off."""
    lo, hi = min(values), max(values)
    margin = pad * (hi - lo) if hi > lo else pad * abs(hi) or 1.0
    ax.set_ylim(lo - margin, hi + margin)


def plot_scaling(
    fit,
    base_shape,
    base_compute,
    computes,
    path,
    rounding=None,
    weights=None,
):
    """Plots the paper's scaling rule with its confidence band.

    One panel per dimension: x_k against compute on log axes, from
    x⁽⁰⁾ = `base_shape` at t⁽⁰⁾ = `base_compute`, following
    x_k = x_k⁽⁰⁾ · (t / t⁽⁰⁾)^(w_k · s_k) (see `scale_shape`). The band
    spans the fit's 90% bootstrap interval on s_k; dots are the rounded
    shapes `scale_shape` returns.

    Args:
        fit: `StarSweepFit` (uses `.exponents` and `.intervals`).
        base_shape: `ShapeSpec`. x⁽⁰⁾.
        base_compute: float. t⁽⁰⁾ in GFLOPs.
        computes: list of floats. Compute values to plot (GFLOPs).
        path: str or path. Where to save the PNG.
        rounding: `Rounding` or None. As in `scale_shape`. Defaults to
            `None`.
        weights: dict or None. w_k, as in `scale_shape`. Defaults to `None`
            (1/D).

    Returns:
        The matplotlib `Figure` (already saved).

    Example:

    ```python
    # `fit` from `fit_star_sweep` (see `plot_star_sweep`).
    x0, t0 = keras_sovit.ShapeSpec(608, 10, 928, 16, 14), 1e10
    fig = keras_sovit.scaling.plot_scaling(
        fit, x0, t0, [t0 * 10**k for k in range(4)], "scaling.png"
    )
    ```
    """
    _check_fit(fit)
    path = _check_path(path)
    computes = np.asarray(computes, dtype=float)
    if computes.ndim != 1 or computes.size < 2 or not np.all(
        np.isfinite(computes) & (computes > 0)
    ):
        raise ValueError(
            "`computes` must hold at least two positive GFLOPs values. "
            f"Received: computes={computes!r}"
        )
    exponents = {d: float(s) for d, s in fit.exponents.items()}
    shapes = [
        scale_shape(base_shape, base_compute, float(t), exponents,
                    weights=weights, rounding=rounding)
        for t in computes
    ]
    dims = list(exponents)
    w = weights or {d: 1.0 / len(dims) for d in dims}
    intervals = getattr(fit, "intervals", None) or {}
    ts = np.geomspace(computes.min(), computes.max(), 100)
    tau = ts / base_compute
    plt = _pyplot()
    fig, axes = plt.subplots(
        1, len(dims), figsize=(4.2 * len(dims), 3.6), squeeze=False
    )
    for ax, dim in zip(axes[0], dims):
        x0 = getattr(base_shape, dim)
        ax.plot(ts, x0 * tau ** (w[dim] * exponents[dim]), color="C0",
                label=f"s = {exponents[dim]:.3f}")
        if dim in intervals and intervals[dim] is not None:
            lo, hi = intervals[dim]
            if all(math.isfinite(v) for v in (lo, hi)):
                a = x0 * tau ** (w[dim] * lo)
                b = x0 * tau ** (w[dim] * hi)
                ax.fill_between(ts, np.minimum(a, b), np.maximum(a, b),
                                color="C0", alpha=0.2,
                                label=f"90% CI [{lo:.3f}, {hi:.3f}]")
        ax.plot(computes, [getattr(s, dim) for s in shapes], "o",
                color="C1", ms=4, label="rounded")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(_LABELS[dim])
        ax.set_xlabel("compute (GFLOPs)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("optimal value")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return fig
