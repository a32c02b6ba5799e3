"""Regret of ShapeOracle vs KerasTuner's oracles at equal total compute.

No training: a known law from `keras_sovit.scaling.simulate` answers each
trial at its compute (1% multiplicative noise). Each search gets the same
total compute: what `ShapeOracle` spends on its sweeps plus its final run at
the target. The built-in oracles search the same shape space (width, MLP in
multiples of 16, depth; log-uniform; 16 heads, patch 14):

- `RandomSearch@T` and `Bayesian@T`: every trial trains at the target
  compute T and counts in full; the best trial is the recommendation.
- `RandomSearch@T/10` and `Bayesian@T/10`: trials at T/10, then the best
  shape is trained at T (charged).
- `Hyperband`: `max_epochs` = 27 epochs ↔ T, a trial trained from epoch i
  to e costs T·(e − i)/27; the final run at T is charged unless the
  recommended trial already ran at T.

Regret = f(recommended, T) / f(true optimum, T) − 1 under the noise-free
truth. Truths: `PAPER_LIKE_LAW` (the decomposable Eq. 3) and a data-limited
law. Usage: `python benchmarks/search_efficiency.py [--seeds 3]`.
"""

import argparse
import math
import os
import platform
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras_tuner  # noqa: E402
import numpy as np  # noqa: E402
from keras_tuner.engine.trial import TrialStatus  # noqa: E402

import keras_sovit  # noqa: E402
from keras_sovit.scaling import PAPER_LIKE_LAW  # noqa: E402
from keras_sovit.scaling import DataLimitedLaw  # noqa: E402
from keras_sovit.tuner import ShapeOracle  # noqa: E402

METRIC = "fewshot_10shot_error"
TARGET = 9e12
NOISE = 0.01
TEMPLATE = keras_sovit.ShapeSpec(1024, 12, 4096, 16, patch_size=14)
BOX = {"width": (256, 4096), "depth": (2, 160), "mlp_dim": (256, 65536)}
TRUTHS = {
    "decomposable": PAPER_LIKE_LAW,
    "data-limited": DataLimitedLaw(
        alpha={"width": 30.0, "depth": 1.5, "mlp_dim": 20.0},
        a={"width": 0.6, "depth": 0.5, "mlp_dim": 0.5},
        B=400.0, c=0.35, eps=0.1, image_size=224,
    ),
}


class Answerer:
    """Noisy observations of a law; counts the compute spent."""

    def __init__(self, law, seed):
        self.law = law
        self.rng = np.random.default_rng(seed)
        self.spent = 0.0

    def __call__(self, shape, compute, charge=None):
        self.spent += compute if charge is None else charge
        noise = 1.0 + NOISE * self.rng.standard_normal()
        return self.law.loss(shape, compute) * noise


def end(oracle, trial, metrics, step=0):
    oracle.update_trial(trial.trial_id, metrics, step=step)
    trial.status = TrialStatus.COMPLETED
    oracle.end_trial(trial)


def run_shape_oracle(law, seed, directory):
    answer = Answerer(law, seed)
    oracle = ShapeOracle(
        objective=keras_tuner.Objective(METRIC, "min"),
        target_compute=TARGET,
        n_bootstrap=0,
        seed=seed + 1,
        max_consecutive_failed_trials=100,
    )
    oracle._set_project_dir(directory, f"shape_{seed}")
    oracle.verbose = 0
    while True:
        trial = oracle.create_trial("tuner0")
        if trial.status == TrialStatus.STOPPED:
            break
        values = trial.hyperparameters.values
        shape = keras_sovit.ShapeSpec.from_dict(values)
        budget = values["compute_gflops"]
        # Checkpoints at 1/4 and 1/2 of the budget come for free.
        for step, t in enumerate((budget / 4, budget / 2, budget)):
            charge = budget if step == 2 else 0.0
            value = answer(shape, t, charge=charge)
            metrics = {METRIC: value, "compute_gflops": t}
            oracle.update_trial(trial.trial_id, metrics, step=step)
        trial.status = TrialStatus.COMPLETED
        oracle.end_trial(trial)
    return oracle.proposal, answer.spent, len(oracle.trials), oracle.method


def shape_space():
    hp = keras_tuner.HyperParameters()
    hp.Int("width", *BOX["width"], step=16, sampling="log")
    hp.Int("depth", *BOX["depth"], sampling="log")
    hp.Int("mlp_dim", *BOX["mlp_dim"], step=16, sampling="log")
    return hp


def to_shape(values):
    return TEMPLATE.replace(
        width=int(values["width"]), depth=int(values["depth"]),
        mlp_dim=int(values["mlp_dim"]),
    )


def run_builtin(kind, law, seed, total, fraction):
    """RandomSearch / Bayesian with trials at `fraction` of the target."""
    answer = Answerer(law, seed)
    budget = TARGET * fraction
    search_budget = total - (0.0 if fraction == 1.0 else TARGET)
    n_trials = max(1, int(search_budget // budget))
    common = dict(
        objective=keras_tuner.Objective(METRIC, "min"),
        max_trials=n_trials, hyperparameters=shape_space(), seed=seed + 1,
    )
    if kind == "random":
        oracle = keras_tuner.oracles.RandomSearchOracle(**common)
    else:
        oracle = keras_tuner.oracles.BayesianOptimizationOracle(**common)
    oracle._set_project_dir(tempfile.mkdtemp(), "builtin")
    oracle.verbose = 0
    best = None
    while True:
        trial = oracle.create_trial("tuner0")
        if trial.status != TrialStatus.RUNNING:
            break
        shape = to_shape(trial.hyperparameters.values)
        value = answer(shape, budget)
        end(oracle, trial, {METRIC: value})
        if best is None or value < best[0]:
            best = (value, shape)
    if fraction != 1.0:
        answer.spent += TARGET  # The recommended shape's final run.
    return best[1], answer.spent, n_trials


def run_hyperband(law, seed, total):
    answer = Answerer(law, seed)
    max_epochs = 27
    oracle = keras_tuner.oracles.HyperbandOracle(
        objective=keras_tuner.Objective(METRIC, "min"),
        max_epochs=max_epochs, factor=3, hyperband_iterations=100,
        hyperparameters=shape_space(), seed=seed + 1,
    )
    oracle._set_project_dir(tempfile.mkdtemp(), "hyperband")
    oracle.verbose = 0
    results = []
    while True:
        trial = oracle.create_trial("tuner0")
        if trial.status != TrialStatus.RUNNING:
            break
        values = trial.hyperparameters.values
        epochs = values["tuner/epochs"]
        initial = values.get("tuner/initial_epoch", 0)
        cost = TARGET * (epochs - initial) / max_epochs
        if answer.spent + cost > total - TARGET:
            break
        shape = to_shape(values)
        value = answer(shape, TARGET * epochs / max_epochs, charge=cost)
        end(oracle, trial, {METRIC: value})
        results.append((epochs, value, shape))
    top = max(e for e, _, _ in results)
    _, _, shape = min((r for r in results if r[0] == top),
                      key=lambda r: r[1])
    if top < max_epochs:
        answer.spent += TARGET
    return shape, answer.spent, len(results)


def regret(law, shape):
    best = law.true_optimum(TARGET, shape)
    return law.loss(shape, TARGET) / law.loss(best, TARGET) - 1.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import logging

    logging.getLogger("keras_sovit").setLevel(logging.ERROR)
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores; target {TARGET:.3g} GFLOPs, "
          f"noise {NOISE:.0%}, seeds {args.seeds}")
    header = (f"{'truth':<13} {'search':<18} {'regret mean':>11} "
              f"{'regret max':>10} {'compute/T':>9} {'trials':>7}")
    print(header)
    print("-" * len(header))
    summary = {}
    for truth, law in TRUTHS.items():
        rows = {}
        directory = tempfile.mkdtemp()
        for seed in range(args.seeds):
            start = time.time()
            shape, spent, n, method = run_shape_oracle(law, seed, directory)
            rows.setdefault("ShapeOracle", []).append(
                (regret(law, shape), spent, n)
            )
            total = spent
            for name, kind, fraction in (
                ("RandomSearch@T", "random", 1.0),
                ("RandomSearch@T/10", "random", 0.1),
                ("Bayesian@T", "bayesian", 1.0),
                ("Bayesian@T/10", "bayesian", 0.1),
            ):
                shape, used, n = run_builtin(kind, law, seed, total, fraction)
                rows.setdefault(name, []).append((regret(law, shape), used, n))
            shape, used, n = run_hyperband(law, seed, total)
            rows.setdefault("Hyperband", []).append(
                (regret(law, shape), used, n)
            )
            print(f"  [{truth} seed {seed}: ShapeOracle method={method}, "
                  f"{time.time() - start:.0f} s]", flush=True)
        for name, values in rows.items():
            regrets = np.array([v[0] for v in values])
            spent = np.mean([v[1] for v in values]) / TARGET
            trials = np.mean([v[2] for v in values])
            summary[(truth, name)] = regrets.mean()
            print(f"{truth:<13} {name:<18} {regrets.mean():>11.2%} "
                  f"{regrets.max():>10.2%} {spent:>9.2f} {trials:>7.0f}")
    for truth in TRUTHS:
        ours = summary[(truth, "ShapeOracle")]
        best = min(v for (t, n), v in summary.items()
                   if t == truth and n != "ShapeOracle")
        ok = ours <= 0.01 and ours <= best / 3
        print(f"{truth}: ShapeOracle {ours:.2%} vs best built-in {best:.2%}"
              f" -> goal (<= 1% and <= 1/3 of best) "
              f"{'met' if ok else 'NOT met'}")
    return 0 if math.isfinite(sum(summary.values())) else 1


if __name__ == "__main__":
    sys.exit(main())
