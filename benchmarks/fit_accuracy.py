"""Fit accuracy of Eq. (2) star-sweep fits on synthetic data.

Truth: `keras_sovit.scaling.EQ2_STAR_TRUTH` (known Eq. (2) parameters per
dimension, s = (0.22, 0.45, 0.6), c = 0.65 shared), the paper's star grids
and budgets 5e10, 1e11, 2e11 GFLOPs. Compares

- plain: per-dimension least squares of the relative error, c fitted per
  dimension, 3 random starts (scipy.optimize.least_squares, log-params);
- robust: `fit_star_sweep` (shared c, variable-projection multi-start,
  Huber on the relative error).

Prints the exponent error (median |Δs| over seeds and dimensions), the
median regret of the predicted optimum at 10x the largest budget, and the
20-seed 1%-noise check with bootstrap interval coverage.

Run: python benchmarks/fit_accuracy.py [--seeds 10] [--n_bootstrap 100]
"""

import argparse
import os
import sys
import time

import numpy as np
from scipy import optimize

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_sovit.scaling import _varpro  # noqa: E402
from keras_sovit.scaling.paper.plan import PAPER_STAR_CENTER  # noqa: E402
from keras_sovit.scaling.paper.plan import PAPER_STAR_GRIDS  # noqa: E402
from keras_sovit.scaling.paper.star_sweep import fit_star_sweep  # noqa: E402
from keras_sovit.scaling.truths.laws import EQ2_STAR_TRUTH  # noqa: E402
from keras_sovit.scaling.truths.laws import eq2_loss  # noqa: E402
from keras_sovit.scaling.truths.laws import simulate_star  # noqa: E402

DIMS = ("width", "depth", "mlp_dim")
BUDGETS = {3: (5e10, 1e11, 2e11), 5: tuple(5e10 * 2 ** (k / 2) for k in
                                           range(5))}


def true_exponent(dim):
    p = EQ2_STAR_TRUTH[dim]
    return p["c"] / (p["a"] + p["b"])


def true_optimum(p, t):
    return (p["alpha"] * p["a"] * t ** p["c"] / (p["beta"] * p["b"])) ** (
        1 / (p["a"] + p["b"])
    )


def regret(dim, x_hat, t):
    p = EQ2_STAR_TRUTH[dim]
    return float(eq2_loss(p, x_hat, t) / eq2_loss(p, true_optimum(p, t), t)
                 - 1)


def plain_fit(x, t, y, seed):
    """Per-dimension least squares, c per dimension, 3 random starts."""
    refs = [np.exp(np.mean(np.log(v))) for v in (x, t, y)]
    group = [(x / refs[0], t / refs[1], y / refs[2])]
    rng = np.random.default_rng(seed)
    best = None
    for _ in range(3):
        coefs = [0.25, rng.uniform(0.2, 1.5), 0.25, rng.uniform(0.2, 1.5),
                 0.25, 0.25]
        p0 = _varpro._pack(np.array([coefs]), rng.uniform(0.3, 1.0))
        with np.errstate(over="ignore", invalid="ignore"):
            res = optimize.least_squares(
                _varpro._residuals, p0, args=(group, None), method="lm",
                max_nfev=2000,
            )
        if best is None or res.cost < best.cost:
            best = res
    coefs, c = _varpro._unpack(best.x, 1, None)
    alpha, a, beta, b, _, _ = coefs[0]
    s = c / (a + b)

    def optimal(tt):
        v = tt / refs[1]
        return refs[0] * (alpha * a * v**c / (beta * b)) ** (1 / (a + b))

    return s, optimal


def star_data(results, dim):
    center = PAPER_STAR_CENTER
    others = [d for d in DIMS if d != dim]
    rows = [r for r in results if all(r[o] == getattr(center, o)
                                      for o in others)]
    return (np.array([r[dim] for r in rows], float),
            np.array([r["compute_gflops"] for r in rows]),
            np.array([r["metric_value"] for r in rows]))


def run_cell(method, noise, n_values, n_budgets, seeds):
    grids = {d: v if n_values == 6 else tuple(v[i] for i in (0, 2, 3, 5))
             for d, v in PAPER_STAR_GRIDS.items()}
    budgets = BUDGETS[n_budgets]
    t_eval = 10 * max(budgets)
    errors, regrets = [], []
    for seed in seeds:
        results = simulate_star(grids=grids, budgets=budgets, noise=noise,
                                seed=seed)
        if method == "robust":
            fit = fit_star_sweep(results, PAPER_STAR_CENTER,
                                 n_bootstrap=0, holdout=None)
            for dim in DIMS:
                errors.append(abs(fit.exponents[dim] - true_exponent(dim)))
                regrets.append(regret(dim, fit.optimal(dim, t_eval), t_eval))
        else:
            for dim in DIMS:
                s, optimal = plain_fit(*star_data(results, dim), seed)
                errors.append(abs(s - true_exponent(dim)))
                regrets.append(regret(dim, optimal(t_eval), t_eval))
    return np.array(errors).reshape(-1, 3), np.array(regrets).reshape(-1, 3)


def table(n_seeds):
    print(f"### Exponent error vs noise and runs ({n_seeds} seeds each, "
          "seeds 0..%d)" % (n_seeds - 1))
    print("| method | values/dim | budgets | noise | median abs ds "
          "(w, d, m) | pooled | median regret@10x (pooled) | max regret |")
    print("|---|---|---|---|---|---|---|---|")
    seeds = range(n_seeds)
    for n_values, n_budgets in ((6, 3), (4, 3), (6, 5)):
        for noise in (0.0, 0.005, 0.01, 0.02):
            for method in ("plain", "robust"):
                err, reg = run_cell(method, noise, n_values, n_budgets, seeds)
                med = np.median(err, axis=0)
                print(f"| {method} | {n_values} | {n_budgets} | {noise:.3f} |"
                      f" {med[0]:.3f}, {med[1]:.3f}, {med[2]:.3f} |"
                      f" {np.median(err):.3f} | {np.median(reg):.4f} |"
                      f" {np.max(reg):.4f} |", flush=True)


def check(n_seeds, n_bootstrap):
    print(f"\n## 1% noise, {n_seeds} seeds, robust fit, n_bootstrap="
          f"{n_bootstrap} (paper grids, 3 budgets, centre held out)")
    t_eval = 10 * max(BUDGETS[3])
    errs, regs, cover = [], [], []
    for seed in range(n_seeds):
        start = time.time()
        results = simulate_star(noise=0.01, seed=seed)
        fit = fit_star_sweep(results, PAPER_STAR_CENTER,
                             n_bootstrap=n_bootstrap, random_state=seed)
        row = []
        for dim in DIMS:
            s_true = true_exponent(dim)
            lo, hi = fit.intervals[dim]
            errs.append(abs(fit.exponents[dim] - s_true))
            regs.append(regret(dim, fit.optimal(dim, t_eval), t_eval))
            cover.append(lo <= s_true <= hi)
            row.append(f"{dim} s={fit.exponents[dim]:.3f} "
                       f"[{lo:.3f}, {hi:.3f}]")
        print(f"seed {seed}: c={fit.c:.3f} " + "; ".join(row)
              + f" ({time.time() - start:.1f}s)", flush=True)
    errs = np.array(errs).reshape(-1, 3)
    regs = np.array(regs).reshape(-1, 3)
    cover = np.array(cover).reshape(-1, 3)
    print("median |ds| (w, d, m):", np.round(np.median(errs, 0), 3),
          " pooled:", round(float(np.median(errs)), 3))
    print("median regret@10x (w, d, m):", np.round(np.median(regs, 0), 4),
          " pooled:", round(float(np.median(regs)), 4))
    print("90% interval coverage (w, d, m):", np.round(cover.mean(0), 2),
          " pooled:", round(float(cover.mean()), 3))


def timing():
    results = simulate_star(noise=0.01, seed=0)
    start = time.time()
    fit_star_sweep(results, PAPER_STAR_CENTER, n_bootstrap=0)
    mid = time.time()
    fit_star_sweep(results, PAPER_STAR_CENTER, n_bootstrap=200)
    end = time.time()
    print(f"\nfit of 54 points: {mid - start:.2f}s without bootstrap, "
          f"{end - mid:.1f}s with n_bootstrap=200")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--check_seeds", type=int, default=20)
    parser.add_argument("--n_bootstrap", type=int, default=100)
    parser.add_argument("--skip_table", action="store_true")
    args = parser.parse_args()
    if not args.skip_table:
        table(args.seeds)
    if args.check_seeds:
        check(args.check_seeds, args.n_bootstrap)
        timing()


if __name__ == "__main__":
    main()
