"""What the real-data study's table says about the scaling-law machinery.

Reads `benchmarks/data/real_data_study.csv` (written by
`real_data_study.py`: cooled-down validation losses of SoViT shapes on
animal_mnist, 2 seeds, budgets B/16 ... B with B = 100 GFLOPs) and reports,
for the objective `val_loss`:

(a) Extrapolation. Each law is fitted on the cooled values at budgets
    <= B/4 only and predicts every shape at B; the relative error against
    the seed mean at B, as a median over shapes with a 90% bootstrap
    interval (shapes resampled). Laws: Eq. (2) per star axis
    (`fit_star_sweep`, the star shapes only), the joint law (`JointLaw`,
    every shape), and a naive baseline (each shape's own line in log-loss
    against log-compute through its B/8 and B/4 values). The seed noise of
    the observed mean is printed beside them.
(b) Search replay. `ShapeOracle`'s paper plan (star around 64/4/256 with
    three cooled budgets B/16, B/8, B/4 per run, a 9-shape grid at B/4,
    one final run of the proposal at T = B) against KerasTuner's
    RandomSearch, BayesianOptimization and Hyperband given the same total
    compute, every trial answered from the table: one seed's value, the
    seed drawn per trial; computes between the table's budgets are
    interpolated in log-compute (Hyperband's rungs read the un-cooled
    values, its full-length runs the cooled ones). A proposed shape that
    is not in the table is answered by the table shape nearest in
    log-shape, which is also the shape scored. Regret = mean loss at T of
    the recommendation / best mean loss at T − 1, median over `--replays`.
(c) Shape at equal compute. At B, the best shape against the best
    standard-aspect one (MLP = 4 × width) and the replay's proposals,
    each with its seed mean ± standard error and a Welch verdict.

    python benchmarks/real_data_analysis.py [--replays 20]
"""

import argparse
import csv
import math
import os
import sys
import tempfile
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np  # noqa: E402
from oracle_driver import answer_trials  # noqa: E402
from oracle_driver import complete_trial  # noqa: E402

from keras_sovit.scaling import JointLaw  # noqa: E402
from keras_sovit.scaling import SweepResults  # noqa: E402
from keras_sovit.scaling import fit_star_sweep  # noqa: E402
from keras_sovit.scaling import noise  # noqa: E402
from keras_sovit.shapes import ShapeSpec  # noqa: E402
from keras_sovit.tuner.protocol import parse_fractions  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
METRIC = "val_loss"
HEADS, PATCH, IMAGE = 4, 4, 28
CENTRE = ShapeSpec(64, 4, 256, HEADS, PATCH)
STAR_GRIDS = {"width": [16, 24, 32, 48], "depth": [1, 2, 3],
              "mlp_dim": [32, 64, 128, 192]}
REPLAY_GRID = {"width": [32, 48, 64], "depth": [1, 2, 4], "mlp_dim": [128]}


# --- the table ---------------------------------------------------------


class Table:
    """Cooled and un-cooled values per (shape, seed, nominal budget)."""

    def __init__(self, path):
        self.cooled, self.uncooled, self.compute = {}, {}, {}
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                index = int(row["budget_index"])
                if index < 0:
                    continue
                key = (int(row["width"]), int(row["depth"]),
                       int(row["mlp_dim"]))
                budget = float(row["budget_gflops"])
                store = self.cooled if row["cooled"] == "1" else self.uncooled
                store.setdefault(key, {}).setdefault(budget, {})[
                    int(row["seed"])] = float(row[METRIC])
                if row["cooled"] == "1":
                    self.compute[(key, budget)] = float(row["compute_gflops"])
        self.budgets = sorted({b for v in self.cooled.values() for b in v})
        self.top = self.budgets[-1]
        counts = {k: len(v.get(self.top, ())) for k, v in self.cooled.items()}
        # Shapes with every seed at the top budget (a study in progress
        # has one shape with fewer).
        self.shapes = sorted(k for k, n in counts.items()
                             if n == max(counts.values()))

    def seeds(self, key, budget):
        return self.cooled[key][budget]

    def mean(self, key, budget):
        return float(np.mean(list(self.seeds(key, budget).values())))

    def nearest(self, shape):
        """The table shape nearest to `shape` in log-shape."""
        point = np.log([shape.width, shape.depth, shape.mlp_dim])
        return min(self.shapes, key=lambda k: np.sum(
            (np.log(k) - point) ** 2))

    def value(self, key, compute, seed, cooled=True):
        """One seed's value, interpolated in log-compute if needed."""
        store = self.cooled if cooled else self.uncooled
        budgets = sorted(store[key])
        logs = np.log(budgets)
        values = [store[key][b][seed % len(store[key][b])] for b in budgets]
        return float(np.interp(math.log(compute), logs, values))

    def rows(self, keys, max_budget):
        """`SweepResults` rows of each seed's cooled values <= max_budget."""
        rows = []
        for key in keys:
            for budget, seeds in self.cooled[key].items():
                if budget > max_budget * (1 + 1e-9):
                    continue
                for seed, value in seeds.items():
                    rows.append({
                        **ShapeSpec(*key, HEADS, PATCH).to_dict(),
                        "compute_gflops": self.compute[(key, budget)],
                        "metric_name": METRIC, "metric_value": value,
                        "trial_id": f"{key}-{seed}",
                    })
        return SweepResults(rows)


def star_keys(table):
    out = []
    for dim, values in STAR_GRIDS.items():
        for value in values:
            shape = CENTRE.replace(**{dim: value})
            out.append((dim, (shape.width, shape.depth, shape.mlp_dim)))
    return [k for k in out if k[1] in table.shapes]


# --- (a) extrapolation ---------------------------------------------------


def _median_interval(errors, rng, n=2000):
    errors = np.asarray(errors)
    boot = [np.median(rng.choice(errors, errors.size)) for _ in range(n)]
    return (float(np.median(errors)),
            *map(float, np.percentile(boot, [5, 95])))


def extrapolation(table):
    top, fit_max = table.top, table.top / 4
    rng = np.random.default_rng(0)
    out = {}
    star = star_keys(table)
    centre = (CENTRE.width, CENTRE.depth, CENTRE.mlp_dim)
    fit = fit_star_sweep(table.rows([centre] + [k for _, k in star],
                                    fit_max), CENTRE, n_bootstrap=0,
                         holdout=None)
    out["Eq. (2) per star axis"] = [
        abs(fit.predict(dim, getattr(ShapeSpec(*key, HEADS, PATCH), dim),
                        table.compute[(key, top)]) / table.mean(key, top) - 1)
        for dim, key in star]
    law = JointLaw(image_size=IMAGE).fit(table.rows(table.shapes, fit_max))
    out[f"joint law ({law.form_})"] = [
        abs(law.predict(ShapeSpec(*k, HEADS, PATCH),
                        table.compute[(k, top)]) / table.mean(k, top) - 1)
        for k in table.shapes]
    out["naive: line through B/8, B/4"] = [
        abs(_naive(table, k) / table.mean(k, top) - 1) for k in table.shapes]
    out["seed noise of the mean at B (se/mean)"] = [
        noise.summarize(list(table.seeds(k, top).values()))["se"]
        / table.mean(k, top) for k in table.shapes]
    return {name: _median_interval(errors, rng)
            for name, errors in out.items()}


def _naive(table, key):
    b8, b4, top = table.top / 8, table.top / 4, table.top
    slope = (math.log(table.mean(key, b4)) - math.log(table.mean(key, b8))) / (
        math.log(b4) - math.log(b8))
    return table.mean(key, b4) * (top / b4) ** slope


# --- (b) search replay ---------------------------------------------------


def replay_oracle(table, rng):
    """ShapeOracle's paper plan answered from the table."""
    from keras_sovit.tuner import ShapeOracle
    from keras_sovit.tuner import checkpoint_metric_name

    top = table.top
    oracle = ShapeOracle(
        METRIC, top, phases="paper", star_center=CENTRE,
        star_grids=STAR_GRIDS, star_budgets=[top / 16, top / 8, top / 4],
        grid=REPLAY_GRID, grid_budget=top / 4, branch_budgets=True,
        final_trials=("proposal",), image_size=IMAGE, n_bootstrap=50,
        seed=int(rng.integers(1 << 30)), max_consecutive_failed_trials=1,
    )

    def answer(values):
        key = table.nearest(ShapeSpec.from_dict(values))
        seed = int(rng.integers(2))
        budget = values["compute_gflops"]
        metrics = {METRIC: table.value(key, budget, seed),
                   "compute_gflops": budget}
        fractions = parse_fractions(values.get("budget_fractions", "1"))
        for i, fraction in enumerate(fractions[:-1]):
            metrics[checkpoint_metric_name(METRIC, i)] = table.value(
                key, budget * fraction, seed)
            metrics[checkpoint_metric_name("compute_gflops", i)] = (
                budget * fraction)
            metrics[checkpoint_metric_name("cooled", i)] = 1.0
        return metrics

    report = answer_trials(oracle, answer)
    # A stopped search proposes nothing; it is scored on its centre.
    proposal = oracle.proposal or CENTRE
    return (table.nearest(proposal), report["compute"]["total"] * top,
            report.get("stopped_"))


def _space():
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    hp.Int("width", 16, 128, step=8, sampling="log")
    hp.Int("depth", 1, 8, sampling="log")
    hp.Int("mlp_dim", 32, 512, step=16, sampling="log")
    return hp


def _key(table, values):
    return table.nearest(ShapeSpec(values["width"], values["depth"],
                                   values["mlp_dim"], HEADS, PATCH))


def replay_builtin(table, kind, total, fraction, rng):
    """RandomSearch / Bayesian, trials at `fraction` of T."""
    import keras_tuner
    from keras_tuner.engine.trial import TrialStatus

    top = table.top
    budget = top * fraction
    n_trials = max(1, int((total - (0 if fraction == 1 else top)) // budget))
    cls = (keras_tuner.oracles.RandomSearchOracle if kind == "random"
           else keras_tuner.oracles.BayesianOptimizationOracle)
    oracle = cls(objective=keras_tuner.Objective(METRIC, "min"),
                 max_trials=n_trials, hyperparameters=_space(),
                 seed=int(rng.integers(1 << 30)))
    oracle._set_project_dir(tempfile.mkdtemp(), "builtin")
    oracle.verbose = 0
    best = None
    while True:
        trial = oracle.create_trial("tuner0")
        if trial.status != TrialStatus.RUNNING:
            break
        key = _key(table, trial.hyperparameters.values)
        value = table.value(key, budget, int(rng.integers(2)))
        complete_trial(oracle, trial, {METRIC: value})
        if best is None or value < best[0]:
            best = (value, key)
    return best[1]


def replay_hyperband(table, total, rng):
    """Hyperband, 16 epochs <-> T; rungs read un-cooled values."""
    import keras_tuner
    from keras_tuner.engine.trial import TrialStatus

    top, epochs_max = table.top, 16
    oracle = keras_tuner.oracles.HyperbandOracle(
        objective=keras_tuner.Objective(METRIC, "min"),
        max_epochs=epochs_max, factor=3, hyperband_iterations=100,
        hyperparameters=_space(), seed=int(rng.integers(1 << 30)))
    oracle._set_project_dir(tempfile.mkdtemp(), "hyperband")
    oracle.verbose = 0
    spent, results = 0.0, []
    while True:
        trial = oracle.create_trial("tuner0")
        if trial.status != TrialStatus.RUNNING:
            break
        values = trial.hyperparameters.values
        epochs = values["tuner/epochs"]
        cost = top * (epochs - values.get("tuner/initial_epoch", 0)) / (
            epochs_max)
        if spent + cost > total - top:
            break
        spent += cost
        key = _key(table, values)
        value = table.value(key, max(top * epochs / epochs_max,
                                     table.budgets[0]),
                            int(rng.integers(2)), cooled=epochs == epochs_max)
        complete_trial(oracle, trial, {METRIC: value})
        results.append((epochs, value, key))
    top_epochs = max(e for e, _, _ in results)
    return min((r for r in results if r[0] == top_epochs),
               key=lambda r: r[1])[2]


def replays(table, count):
    import logging

    logging.getLogger("keras_sovit").setLevel(logging.ERROR)
    best = min(table.mean(k, table.top) for k in table.shapes)
    rows, proposals = {}, []
    for r in range(count):
        rng = np.random.default_rng(r)
        key, total, stopped = replay_oracle(table, rng)
        proposals.append((key, stopped))
        picks = {"ShapeOracle (paper plan)": key,
                 "Random@T": replay_builtin(table, "random", total, 1.0, rng),
                 "Random@T/4": replay_builtin(table, "random", total, 0.25,
                                              rng),
                 "Bayesian@T": replay_builtin(table, "bayesian", total, 1.0,
                                              rng),
                 "Bayesian@T/4": replay_builtin(table, "bayesian", total,
                                                0.25, rng),
                 "Hyperband": replay_hyperband(table, total, rng)}
        for name, pick in picks.items():
            rows.setdefault(name, []).append(
                (table.mean(pick, table.top) / best - 1, total / table.top))
    return rows, proposals


# --- (c) and the report ----------------------------------------------------


def compare_at_top(table, proposals):
    top = table.top
    means = {k: table.mean(k, top) for k in table.shapes}
    best = min(means, key=means.get)
    standard = [k for k in table.shapes if k[2] == 4 * k[0]]
    best_standard = min(standard, key=means.get)
    out = [("best shape", best), ("best standard (MLP = 4 x width)",
                                  best_standard)]
    for key in sorted({k for k, _ in proposals}):
        count = sum(k == key for k, _ in proposals)
        out.append((f"replay proposal ({count}/{len(proposals)} replays)",
                    key))
    lines = []
    for label, key in out:
        seeds = list(table.seeds(key, top).values())
        summary = noise.summarize(seeds)
        verdict = noise.compare(seeds, list(table.seeds(best_standard,
                                                        top).values()))
        lines.append((label, key, summary, verdict["verdict"]))
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--table", default=os.path.join(
        HERE, "data", "real_data_study.csv"))
    parser.add_argument("--replays", type=int, default=20)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    table = Table(args.table)
    print(f"table: {len(table.shapes)} shapes with every seed, budgets "
          f"{table.budgets} GFLOPs, objective {METRIC}")
    print("\n(a) fit on budgets <= B/4, predict B: median |relative error| "
          "over shapes [90% interval]")
    for name, (median, low, high) in extrapolation(table).items():
        print(f"  {name:<40} {median:6.1%} [{low:.1%}, {high:.1%}]")
    rows, proposals = replays(table, args.replays)
    print(f"\n(b) replay at T = B = {table.top:g} GFLOPs, {args.replays} "
          "replays: median regret [max], total compute / T")
    for name, values in rows.items():
        values = np.array(values)
        print(f"  {name:<26} {np.median(values[:, 0]):6.1%} "
              f"[{values[:, 0].max():.1%}]  {np.median(values[:, 1]):.2f} T")
    stops = sum(s is not None for _, s in proposals)
    print(f"  signal gate stopped the oracle in {stops}/{len(proposals)} "
          "replays (scored on the star centre then)")
    print(f"\n(c) at B = {table.top:g} GFLOPs, mean +- se over seeds, "
          "Welch against the best standard-aspect shape")
    for label, key, summary, verdict in compare_at_top(table, proposals):
        print(f"  {label:<36} {'/'.join(map(str, key)):<12} "
              f"{summary['mean']:.3f} +- {summary['se']:.3f}  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
