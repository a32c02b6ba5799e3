"""Joint optimum vs the paper's w_k = 1/D rule, on simulated truths.

For each truth (the paper's decomposable Eq. (3), `PAPER_LIKE_LAW`, and a
data-limited law where examples = compute / GFLOPs(shape)) and each seed:

1. Simulate the paper's star sweep (centre 1968/40/6144, 6 values per
   dimension, 64M/128M/256M examples) with 1% multiplicative noise.
2. Simulate a grid sweep of 4 × 4 × 4 shapes, every shape trained to the
   same compute (600M examples of x = 608/10/928) with the metric recorded
   at 1/8, 1/4, 1/2 and 1 of it. As the paper prescribes, the grid is
   extended (one more value, same ratio) in each direction
   `select_grid_optimum` names until its optimum is interior.
3. Propose a shape at 10× and 100× the grid budget with
   - the paper's rule: `fit_star_sweep` → s_k, `select_grid_optimum` →
     (x⁽⁰⁾, t⁽⁰⁾), `scale_shape` (w_k = 1/3, multiples of 16, 16 heads);
   - the same rule with the s_k a noise-free star sweep gives, to separate
     the cost of the w_k = 1/D assumption from exponent-estimation noise;
   - the other reading of the paper's sentence, x_k ∝ τ^(s_k) (noise-free
     s_k), which is the exact optimal path of Eq. (3) when t does not
     depend on the shape;
   - the joint optimum: `JointLaw` fitted on all runs (star + grid),
     `optimal_shape` at the target.
4. Regret = true loss of the proposal / true optimal loss − 1, the optimum
   from the truth's `true_optimum` (16 heads, patch 14).

Run: `python benchmarks/joint_vs_paper.py [--seeds 10] [--noise 0.01]`.
"""

import argparse
import platform
import time
import warnings

import numpy as np

from keras_sovit.scaling.paper.joint import JointLaw
from keras_sovit.scaling.paper.joint import optimal_shape
from keras_sovit.scaling.paper.plan import PAPER_GRID_SWEEP
from keras_sovit.scaling.paper.plan import PAPER_STAR_CENTER
from keras_sovit.scaling.paper.plan import PAPER_STAR_GRIDS
from keras_sovit.scaling.paper.plan import GridBoundaryError
from keras_sovit.scaling.paper.plan import grid_sweep_plan
from keras_sovit.scaling.paper.plan import scale_shape
from keras_sovit.scaling.paper.plan import select_grid_optimum
from keras_sovit.scaling.paper.plan import star_sweep_plan
from keras_sovit.scaling.paper.star_sweep import fit_star_sweep
from keras_sovit.scaling.truths.laws import PAPER_LIKE_LAW
from keras_sovit.scaling.truths.laws import DataLimitedLaw
from keras_sovit.scaling.truths.laws import simulate
from keras_sovit.shapes import ShapeSpec

DATA_LIMITED_LAW = DataLimitedLaw(
    alpha={"width": 30.0, "depth": 1.5, "mlp_dim": 20.0},
    a={"width": 0.6, "depth": 0.5, "mlp_dim": 0.5},
    B=400.0,
    c=0.35,
    eps=0.1,
)
TRUTHS = {"decomposable (PAPER_LIKE_LAW)": PAPER_LIKE_LAW,
          "data-limited": DATA_LIMITED_LAW}
TEMPLATE = ShapeSpec(608, 10, 928, 16, 14)
GRID_BUDGET = 600e6 * TEMPLATE.gflops(224)
CHECKPOINTS = (0.125, 0.25, 0.5, 1.0)
STAR_EXAMPLES = (64e6, 128e6, 256e6)
FACTORS = (10, 100)


def _extend(grid, dim, direction):
    """Adds one value beyond the boundary (same ratio; depth in ints)."""
    values = list(grid[dim])
    ratio = (values[-1] / values[0]) ** (1 / (len(values) - 1))
    unit = 1 if dim == "depth" else 16
    if direction == "upward":
        new = max(values[-1] + unit,
                  int(round(values[-1] * ratio / unit)) * unit)
    else:
        new = min(values[0] - unit,
                  int(round(values[0] / ratio / unit)) * unit)
        if new < unit:
            raise RuntimeError(f"cannot extend {dim} below {values[0]}")
    return {**grid, dim: sorted(values + [new])}


def _grid_sweep(truth, noise, seed, max_rounds=30):
    grid = {d: list(v) for d, v in PAPER_GRID_SWEEP.items()}
    runs = []
    for round_ in range(max_rounds):
        plan = grid_sweep_plan(grid, GRID_BUDGET, TEMPLATE)
        plan = [(s, t * f) for s, t in plan for f in CHECKPOINTS]
        results = simulate(truth, plan, noise=noise, seed=seed + 1000 * round_)
        runs.append(results)
        try:
            x0, t0 = select_grid_optimum(results)
            return x0, t0, results, round_
        except GridBoundaryError as error:
            for dim, direction in error.extend.items():
                grid = _extend(grid, dim, direction)
    raise RuntimeError("grid sweep did not find an interior optimum")


_EXACT = {}


def _exact_star_exponents(truth, star_plan):
    """s_k the star sweep measures without noise (cached per truth)."""
    if id(truth) not in _EXACT:
        clean = simulate(truth, star_plan, noise=0.0)
        _EXACT[id(truth)] = fit_star_sweep(
            clean, PAPER_STAR_CENTER, n_bootstrap=0
        ).exponents
    return _EXACT[id(truth)]


def run_seed(truth, noise, seed):
    star_plan = star_sweep_plan(
        PAPER_STAR_CENTER, PAPER_STAR_GRIDS, STAR_EXAMPLES,
        budget_unit="examples",
    )
    star = simulate(truth, star_plan, noise=noise, seed=seed)
    x0, t0, grid, rounds = _grid_sweep(truth, noise, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        fit = fit_star_sweep(star, PAPER_STAR_CENTER, n_bootstrap=0,
                             random_state=seed)
    exact = _exact_star_exponents(truth, star_plan)
    joint = JointLaw(random_state=seed).fit(list(star) + list(grid))
    out = {"form": joint.form_, "rounds": rounds,
           "converged": bool(fit.converged),
           "exponents": fit.exponents}
    for factor in FACTORS:
        target = factor * GRID_BUDGET
        best = truth.true_optimum(target, TEMPLATE)
        best_loss = truth.loss(best, target)
        paper = scale_shape(x0, t0, target, fit.exponents)
        paper_exact = scale_shape(x0, t0, target, exact)
        tau_s = scale_shape(
            x0, t0, target, {d: 3 * v for d, v in exact.items()}
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mine = optimal_shape(joint, target, template=TEMPLATE)
        out[factor] = {
            "best": best,
            "paper": (paper, truth.loss(paper, target) / best_loss - 1),
            "paper_exact": (
                paper_exact, truth.loss(paper_exact, target) / best_loss - 1
            ),
            "tau_s": (tau_s, truth.loss(tau_s, target) / best_loss - 1),
            "joint": (mine, truth.loss(mine, target) / best_loss - 1),
        }
    return out


def _fmt(shape):
    return f"{shape.width}/{shape.depth}/{shape.mlp_dim}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--noise", type=float, default=0.01)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"python {platform.python_version()}")
    print(f"noise {args.noise:.0%}, seeds 0..{args.seeds - 1}, grid budget "
          f"{GRID_BUDGET:.3g} GFLOPs (600M examples of 608/10/928)\n")
    start = time.time()
    for name, truth in TRUTHS.items():
        runs = [run_seed(truth, args.noise, s) for s in range(args.seeds)]
        forms = [r["form"] for r in runs]
        s = {d: np.median([r["exponents"][d] for r in runs])
             for d in runs[0]["exponents"]}
        print(f"## truth: {name}")
        print("JointLaw form chosen: " + ", ".join(
            f"{f} {forms.count(f)}/{len(forms)}" for f in sorted(set(forms))))
        exact = _EXACT[id(truth)]
        print("star-sweep s_k, median fitted (noise-free): " + ", ".join(
            f"{d} {v:.3f} ({exact[d]:.3f})" for d, v in s.items()))
        print("fit_star_sweep converged: "
              f"{sum(r['converged'] for r in runs)}/{len(runs)}")
        print("grid extensions needed (median, max): "
              f"{np.median([r['rounds'] for r in runs]):.0f}, "
              f"{max(r['rounds'] for r in runs)}")
        print("| target | true optimum (w/d/mlp) | method | median regret "
              "| 90th pct | max | example proposal (seed 0) |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for factor in FACTORS:
            for method in ("paper", "paper_exact", "tau_s", "joint"):
                regrets = np.array([r[factor][method][1] for r in runs])
                label = {"paper": "paper rule (w_k = 1/3)",
                         "paper_exact": "paper rule, noise-free s_k",
                         "tau_s": "τ^(s_k) reading, noise-free s_k",
                         "joint": "joint optimum"}[method]
                print(f"| {factor}× | {_fmt(runs[0][factor]['best'])} | "
                      f"{label} | {np.median(regrets):.2%} | "
                      f"{np.quantile(regrets, 0.9):.2%} | "
                      f"{regrets.max():.2%} | "
                      f"{_fmt(runs[0][factor][method][0])} |")
        print()
    print(f"wall time: {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
