"""How often the paper plan's validation decision is wrong on the truth suite.

The `validation` phase of `keras_sovit.tuner.ShapeOracle` trains the
proposal and its ×1.2 / ÷1.2 neighbours (`ShapeGrid.neighbours`) with
`validation_seeds` seeds each and calls the proposal "not locally optimal"
only when `keras_sovit.scaling.noise.local_optimality` finds a neighbour
significantly better. This script measures that decision's error rates on
every truth of `keras_sovit.scaling.truths.suite.SUITE`, with the same neighbour
construction and the same decision function, at the validation compute of
the paper-scale searches (the geometric mean of the grid anchor's 9.3e9 and
the target 8.8e12 GFLOPs); each observation is the truth's value times
(1 + noise · z):

- at the optimum: the proposal is the exact lattice optimum x*(t); a
  "not locally optimal" answer is a false alarm unless some neighbour is
  truly better (a neighbour can sit between lattice points);
- off the optimum: x* with one dimension ×1.5 or ÷1.5 (six proposals per
  truth); a "locally optimal" answer is a miss when a neighbour is truly
  better by more than `--gap` (0.5%).

Beside it, the rule the phase used before (one run per shape, "not locally
optimal" when any neighbour's run beat the proposal's), on the first
replicate of the same draws.

Usage:
    python benchmarks/validation_error_rates.py [--repeats 200]
        [--noise 0.01 0.03] [--seeds 3] [--alpha 0.1]
"""

import argparse
import math
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from keras_sovit.scaling.noise import local_optimality  # noqa: E402
from keras_sovit.scaling.paper.plan import Rounding  # noqa: E402
from keras_sovit.scaling.truths.suite import GRID_ANCHOR  # noqa: E402
from keras_sovit.scaling.truths.suite import SOVIT_ANCHOR  # noqa: E402
from keras_sovit.scaling.truths.suite import SUITE  # noqa: E402
from keras_sovit.shapes import SCALED_DIMS  # noqa: E402
from keras_sovit.tuner.proposals import ShapeGrid  # noqa: E402

COMPUTE = math.sqrt(GRID_ANCHOR[1] * SOVIT_ANCHOR[1])
TEMPLATE = SOVIT_ANCHOR[0]
GRID = ShapeGrid(Rounding(), {"width": 16, "depth": 1, "mlp_dim": 16},
                 TEMPLATE, (224, 224))


def proposals(law):
    """`[(case, shape)]`: the lattice optimum and six shapes off it."""
    best = law.true_optimum(COMPUTE, TEMPLATE, mlp_multiple=16)
    cases = [("optimum", best)]
    for dim in SCALED_DIMS:
        for factor in (1.5, 1 / 1.5):
            sizes = {d: getattr(best, d) for d in SCALED_DIMS}
            sizes[dim] *= factor
            cases.append(("off", GRID.snap(**sizes)))
    return cases


def true_gaps(law, shape, neighbours):
    """Relative true gap of each neighbour below `shape` (> 0: better)."""
    own = law.loss(shape, COMPUTE)
    return {i: 1.0 - law.loss(n, COMPUTE) / own
            for i, n in enumerate(neighbours)}


def decide(law, shape, neighbours, args, rng):
    """One noisy validation: the decision on `seeds` replicates each, and
    the former single-run rule on each shape's first replicate (flagged
    when any neighbour's one run beat the proposal's)."""
    def replicates(s):
        z = rng.standard_normal(args.seeds)
        return law.loss(s, COMPUTE) * (1.0 + args.noise_level * z)

    own = replicates(shape)
    others = {i: replicates(n) for i, n in enumerate(neighbours)}
    single = min(v[0] for v in others.values()) < own[0]
    return local_optimality(own, others, args.alpha), single


def run_case(law, shape, args, rng):
    """Counts of one proposal over `repeats` noisy validations."""
    neighbours = GRID.neighbours(shape, SCALED_DIMS)
    gaps = true_gaps(law, shape, neighbours)
    beatable = max(gaps.values()) > 0.0
    meaningful = max(gaps.values()) > args.gap
    counts = {"alarm": 0, "miss": 0, "wrong_flag": 0, "single_alarm": 0,
              "single_miss": 0}
    for _ in range(args.repeats):
        decision, single = decide(law, shape, neighbours, args, rng)
        flagged = decision["locally_optimal"] is False
        counts["alarm"] += flagged and not beatable
        counts["miss"] += meaningful and not flagged
        counts["wrong_flag"] += any(gaps[i] <= 0 for i in decision["better"])
        counts["single_alarm"] += single and not beatable
        counts["single_miss"] += meaningful and not single
    return max(gaps.values()), counts


def run_truth(name, law, args, rng):
    totals = {"null": 0, "alarm": 0, "meaningful": 0, "miss": 0,
              "decisions": 0, "wrong_flag": 0, "single_alarm": 0,
              "single_miss": 0, "gaps": []}
    for _, shape in proposals(law):
        gap, counts = run_case(law, shape, args, rng)
        totals["decisions"] += args.repeats
        totals["wrong_flag"] += counts["wrong_flag"]
        if gap <= 0.0:
            totals["null"] += args.repeats
            totals["alarm"] += counts["alarm"]
            totals["single_alarm"] += counts["single_alarm"]
        if gap > args.gap:
            totals["meaningful"] += args.repeats
            totals["miss"] += counts["miss"]
            totals["single_miss"] += counts["single_miss"]
            totals["gaps"].append(gap)
    return totals


def _rate(hits, total):
    if not total:
        return "      -"
    p = hits / total
    return f"{p:6.1%} ± {math.sqrt(p * (1 - p) / total):.1%} (n={total})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--noise", type=float, nargs="+",
                        default=[0.01, 0.03])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--gap", type=float, default=0.005)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores; validation compute {COMPUTE:.3g} "
          f"GFLOPs; {args.seeds} seeds per shape; alpha {args.alpha}; "
          f"{args.repeats} noisy validations per proposal")
    begin = time.time()
    rng = np.random.default_rng(0)
    for noise in args.noise:
        args.noise_level = noise
        print(f"\nnoise {noise:.0%}: truth, false alarms at the optimum, "
              f"misses (a neighbour better by > {args.gap:.1%}), "
              "neighbours flagged that are not better")
        grand = {}
        for name, (law, role) in SUITE.items():
            totals = run_truth(name, law, args, rng)
            for key, value in totals.items():
                grand[key] = grand.get(key, type(value)()) + value
            _print(f"{name} ({role})", totals)
        _print("all truths", grand)
    print(f"\n{time.time() - begin:.0f} s")
    return 0


def _print(label, totals):
    print(f"  {label:<24} alarms {_rate(totals['alarm'], totals['null'])}"
          f"   misses {_rate(totals['miss'], totals['meaningful'])}"
          f"   wrong flags "
          f"{_rate(totals['wrong_flag'], totals['decisions'])}"
          f"   median gap {np.median(totals['gaps']):.1%}")
    print(f"  {'':<24} single-run rule: alarms "
          f"{_rate(totals['single_alarm'], totals['null'])}   misses "
          f"{_rate(totals['single_miss'], totals['meaningful'])}")


if __name__ == "__main__":
    sys.exit(main())
