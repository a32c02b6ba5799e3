"""Regret of the IsoFLOP shape search vs KerasTuner at equal total compute.

No training: a truth of `keras_sovit.scaling.truths.suite.SUITE` answers each
trial at its compute with multiplicative noise (1% and 3%). The search under
test is driven trial by trial through its ask / tell interface (`drive`);
swapping in an oracle means writing one adapter with `ask`, `tell`, `done`
and `result`. Every built-in search gets the same total compute as the
IsoFLOP search in the same seed (its sweeps plus its final run at T) over
the same space (width and MLP in multiples of 16, depth; log-uniform; 16
heads, patch 14):

- `Random@T`, `Bayesian@T`: every trial trains at T and counts in full;
  the best trial is the recommendation.
- `Random@T/10`, `Bayesian@T/10`: trials at T/10, then the best shape is
  trained at T (charged).
- `Hyperband`: 27 epochs ↔ T; a trial trained from epoch i to e costs
  T·(e − i)/27 and reads the (un-cooled, see `--uncooled`) value at e;
  the final run at T is charged unless the recommendation already ran at T.

Regret = f(recommended, T) / f(x*, T) − 1 under the noise-free truth, where
x* is the best shape that sees at least one example per parameter at T
(the search's trainability floor; for the two in-menu truths the
unconstrained optimum is untrainable, see the README). Reference lines: the
paper's published procedure (x⁽⁰⁾ = 608/10/928 at 9.3e9 GFLOPs scaled by
τ^(s_k/3), s = 0.22/0.45/0.6) and the best standard ViT shape (B, L, H, g,
G at patch 14) chosen in hindsight at T.

With `--oracle`, the same truths drive `keras_sovit.tuner.ShapeOracle`
(its default IsoFLOP phases and final trial) through KerasTuner's
create_trial / update_trial / end_trial, and the script prints its regret,
the report's total compute in units of T and (unless `--no_builtins`) the
best built-in search given, per seed, the oracle's own total compute, with
the ratio of the two median regrets.

Usage:
    python benchmarks/search_efficiency.py [--seeds 5] [--noise 0.01 0.03]
        [--truths aspect-ratio ...] [--budgets 1.5 1.0] [--oracle]
"""

import argparse
import os
import platform
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from oracle_driver import answer_trials  # noqa: E402
from oracle_driver import complete_trial  # noqa: E402

from keras_sovit.scaling.isoflop.search import IsoFlopSearch  # noqa: E402
from keras_sovit.scaling.paper.plan import PAPER_EXPONENTS  # noqa: E402
from keras_sovit.scaling.paper.plan import Rounding  # noqa: E402
from keras_sovit.scaling.paper.plan import scale_shape  # noqa: E402
from keras_sovit.scaling.truths.laws import _Law  # noqa: E402
from keras_sovit.scaling.truths.suite import SUITE  # noqa: E402
from keras_sovit.scaling.truths.suite import Observer  # noqa: E402
from keras_sovit.shapes import VARIANTS  # noqa: E402
from keras_sovit.shapes import ShapeSpec  # noqa: E402
from keras_sovit.shapes import forward_gflops  # noqa: E402
from keras_sovit.shapes import param_count  # noqa: E402

METRIC = "fewshot_10shot_error"
TARGET = 8.8e12
TEMPLATE = ShapeSpec(1152, 27, 4304, 16, patch_size=14)
BOX = {"width": (256, 4096), "depth": (2, 160), "mlp_dim": (256, 65536)}
FLOOR = 1.0  # examples per parameter, as IsoFlopSearch's default
STANDARD = ("B", "L", "H", "g", "G")
BUILTINS = ("Random@T", "Random@T/10", "Bayesian@T", "Bayesian@T/10",
            "Hyperband")


# --- the search under test -------------------------------------------------


def drive(search, observe):
    """Runs an ask / tell search to the end against `observe`; one worker,
    so every asked trial is told before the next ask."""
    while not search.done:
        for trial in search.ask():
            search.tell(trial.trial_id, observe(trial.shape, trial.compute))
    return search.result()


def run_isoflop(law, noise, seed, budget):
    """The IsoFLOP search with its defaults and a sweep budget in T."""
    observe = Observer(law, noise=noise, seed=seed)
    search = IsoFlopSearch(
        TARGET, TEMPLATE, max_search_compute=budget, seed=seed + 1
    )
    result = drive(search, observe)
    return result["proposal"], observe.spent, result


def run_oracle(law, noise, seed, budget):
    """The same search as `keras_sovit.tuner.ShapeOracle`'s default phases,
    driven through KerasTuner's create_trial / update_trial / end_trial
    (one worker); its final trial at T is part of the run. Returns the
    proposal, the report's total compute in units of T and the number of
    trials."""
    from keras_sovit.tuner import ShapeOracle

    observe = Observer(law, noise=noise, seed=seed)
    oracle = ShapeOracle(
        METRIC, TARGET, template=TEMPLATE, image_size=224, seed=seed + 1,
        isoflop={"max_search_compute": budget},
        max_consecutive_failed_trials=1,
    )
    report = answer_trials(oracle, lambda values: {METRIC: observe(
        ShapeSpec.from_dict(values), values["compute_gflops"])})
    return oracle.proposal, report["compute"]["total"], len(oracle.trials)


def run_oracle_suite(truths, noises, seeds, budget, builtins=True):
    """Regret and total compute / T of the ShapeOracle on the suite, and
    (with `builtins`) the best KerasTuner built-in given, per seed, the
    oracle's total compute (`ratio`: oracle / best built-in, medians)."""
    print(f"ShapeOracle (create/update/end), sweeps <= {budget:g} T, "
          f"{seeds} seeds, target {TARGET:.3g} GFLOPs")
    print(f"  {'truth':<13} {'role':<9} {'noise':>5} {'median regret':>14}"
          f" {'max':>7} {'median C/T':>10} {'max C/T':>8} {'trials':>7}"
          f" {'s/run':>6}" + (f" {'best built-in':>21} {'ratio':>6}"
                              if builtins else ""))
    for noise in noises:
        for name in truths:
            law, role = SUITE[name]
            best, _ = yardsticks(law)
            rows, others = [], {}
            start = time.time()
            for seed in range(seeds):
                shape, total, n = run_oracle(law, noise, seed, budget)
                rows.append((regret(law, shape, best), total, n))
                if builtins:
                    found = run_builtins(law, noise, seed, total * TARGET, 0.0)
                    for method, (pick, _) in found.items():
                        others.setdefault(method, []).append(
                            regret(law, pick, best))
            rows = np.array(rows)
            seconds = (time.time() - start) / seeds
            line = (f"  {name:<13} {role:<9} {noise:>5.0%} "
                    f"{_pct(np.median(rows[:, 0])):>14} "
                    f"{_pct(rows[:, 0].max()):>7} "
                    f"{np.median(rows[:, 1]):>10.2f} {rows[:, 1].max():>8.2f}"
                    f" {np.median(rows[:, 2]):>7.0f} {seconds:>6.1f}")
            if builtins:
                method = min(others, key=lambda m: np.median(others[m]))
                top = float(np.median(others[method]))
                line += (f" {method:>13} {_pct(top):>7}"
                         f" {np.median(rows[:, 0]) / max(top, 1e-12):>6.3f}")
            print(line, flush=True)


# --- KerasTuner's built-in searches at equal total compute ------------------


def shape_space():
    import keras_tuner

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


def run_builtin(kind, law, noise, seed, total, fraction):
    """RandomSearch / Bayesian with trials at `fraction` of the target."""
    import keras_tuner
    from keras_tuner.engine.trial import TrialStatus

    observe = Observer(law, noise=noise, seed=seed)
    budget = TARGET * fraction
    search_budget = total - (0.0 if fraction == 1.0 else TARGET)
    n_trials = max(1, int(search_budget // budget))
    common = dict(
        objective=keras_tuner.Objective(METRIC, "min"),
        max_trials=n_trials, hyperparameters=shape_space(), seed=seed + 1,
    )
    oracles = keras_tuner.oracles
    oracle = (oracles.RandomSearchOracle if kind == "random"
              else oracles.BayesianOptimizationOracle)(**common)
    oracle._set_project_dir(tempfile.mkdtemp(), "builtin")
    oracle.verbose = 0
    best = None
    while True:
        trial = oracle.create_trial("tuner0")
        if trial.status != TrialStatus.RUNNING:
            break
        shape = to_shape(trial.hyperparameters.values)
        value = observe(shape, budget)
        complete_trial(oracle, trial, {METRIC: value})
        if best is None or value < best[0]:
            best = (value, shape)
    if fraction != 1.0:
        observe.spent += TARGET  # The recommended shape's final run.
    return best[1], observe.spent


def run_hyperband(law, noise, seed, total, uncooled):
    import keras_tuner
    from keras_tuner.engine.trial import TrialStatus

    observe = Observer(law, noise=noise, seed=seed, uncooled=uncooled)
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
        if observe.spent + cost > total - TARGET:
            break
        shape = to_shape(values)
        value = observe(shape, TARGET * epochs / max_epochs, charge=cost,
                        cooled=epochs == max_epochs)
        complete_trial(oracle, trial, {METRIC: value})
        results.append((epochs, value, shape))
    top = max(e for e, _, _ in results)
    _, _, shape = min((r for r in results if r[0] == top),
                      key=lambda r: r[1])
    if top < max_epochs:
        observe.spent += TARGET
    return shape, observe.spent


def run_builtins(law, noise, seed, total, uncooled):
    out = {}
    for name, kind, fraction in (
        ("Random@T", "random", 1.0), ("Random@T/10", "random", 0.1),
        ("Bayesian@T", "bayesian", 1.0), ("Bayesian@T/10", "bayesian", 0.1),
    ):
        out[name] = run_builtin(kind, law, noise, seed, total, fraction)
    out["Hyperband"] = run_hyperband(law, noise, seed, total, uncooled)
    return out


# --- yardsticks and reference lines ----------------------------------------


class Trainable(_Law):
    """A truth restricted to shapes with ≥ FLOOR examples per parameter
    (others are infinitely bad): its `true_optimum` is the yardstick."""

    def __init__(self, law):
        self.law = law

    def loss_array(self, width, depth, mlp_dim, t, patch_size=14):
        value = self.law.loss_array(width, depth, mlp_dim, t, patch_size)
        patches = (224 // patch_size) ** 2
        examples = np.asarray(t, float) / forward_gflops(
            width, depth, mlp_dim, patches, patch_size)
        params = param_count(width, depth, mlp_dim, patches, patch_size)
        return np.where(examples >= FLOOR * params, value, np.inf)


def yardsticks(law):
    """(trainable optimum, unconstrained optimum) at T."""
    best = Trainable(law).true_optimum(TARGET, TEMPLATE, mlp_multiple=16)
    free = law.true_optimum(TARGET, TEMPLATE, mlp_multiple=16)
    return best, free


def paper_procedure():
    """x⁽⁰⁾ = 608/10/928 at 9.3e9 GFLOPs scaled to T by τ^(s_k/3)."""
    base = ShapeSpec(608, 10, 928, 16, 14)
    return scale_shape(base, 9.3e9, TARGET, PAPER_EXPONENTS,
                       rounding=Rounding(num_heads=16))


def best_standard(law):
    """The standard ViT shape (at patch 14, 16 heads) best at T."""
    shapes = {}
    for name in STANDARD:
        width, depth, mlp_dim, _ = VARIANTS[name]
        shapes[name] = TEMPLATE.replace(width=width, depth=depth,
                                        mlp_dim=mlp_dim)
    name = min(shapes, key=lambda n: law.loss(shapes[n], TARGET))
    return name, shapes[name]


def regret(law, shape, optimum):
    return law.loss(shape, TARGET) / law.loss(optimum, TARGET) - 1.0


# --- the benchmark ----------------------------------------------------------


def verification_outcome(law, result):
    """(verified, true gap at the verification level) for one run."""
    decision = result["decision"]
    t = decision["compute"]
    top = result["levels"][-1]
    predicted = ShapeSpec(*[int(round(v)) for v in top["predicted"]], 1, 14)
    predicted = TEMPLATE.replace(
        width=max(16, int(round(predicted.width / 16)) * 16),
        depth=predicted.depth,
        mlp_dim=max(16, int(round(predicted.mlp_dim / 16)) * 16),
    )
    best = Trainable(law).true_optimum(t, TEMPLATE, mlp_multiple=16)
    gap = law.loss(predicted, t) / law.loss(best, t) - 1.0
    return decision["verified"], gap


def run_truth(name, law, noise, seeds, budgets, uncooled, builtins=True):
    """{(method, budget): [(regret, total / T), ...]} and verification
    outcomes (at the first budget). Built-ins get, per seed and budget, the
    total compute the IsoFLOP search spent."""
    best, _ = yardsticks(law)
    rows, checks = {}, []
    for seed in range(seeds):
        start = time.time()
        for budget in budgets:
            shape, spent, result = run_isoflop(law, noise, seed, budget)
            rows.setdefault(("IsoFLOP", budget), []).append(
                (regret(law, shape, best), spent / TARGET)
            )
            if budget == budgets[0]:
                checks.append(verification_outcome(law, result))
            if not builtins:
                continue
            found = run_builtins(law, noise, seed, spent, uncooled)
            for method, (shape, used) in found.items():
                rows.setdefault((method, budget), []).append(
                    (regret(law, shape, best), used / TARGET)
                )
        print(f"  [{name} noise {noise:.0%} seed {seed}: "
              f"{time.time() - start:.0f} s]", flush=True)
    return rows, checks


def _pct(value):
    return ">999%" if value > 9.99 else f"{value:.2%}"


def _median(rows, key, index=0):
    return float(np.median([v[index] for v in rows[key]]))


def print_truth(name, role, law, noise, rows, budgets):
    """Prints the regret-vs-compute table of one truth and noise level;
    returns {budget: (ours, best built-in)} medians."""
    best, free = yardsticks(law)
    paper = paper_procedure()
    std_name, std = best_standard(law)
    print(f"\n{name} ({role}), noise {noise:.0%}: trainable optimum "
          f"{best.width}/{best.depth}/{best.mlp_dim}"
          + ("" if free == best else
             f" (unconstrained {free.width}/{free.depth}/{free.mlp_dim}, "
             f"{regret(law, best, free):.2%} better, untrainable)"))
    head = "".join(f"{'sweeps <= ' + format(b, 'g') + ' T':>24}"
                   for b in budgets)
    print(f"  {'median (max), C/T':<16}{head}")
    methods = [m for m in ("IsoFLOP",) + BUILTINS if (m, budgets[0]) in rows]
    out = {}
    for method in methods:
        cells = ""
        for b in budgets:
            reg = _median(rows, (method, b))
            worst = max(v[0] for v in rows[(method, b)])
            spent = _median(rows, (method, b), 1)
            cells += f"{_pct(reg):>9} ({_pct(worst):>7}) {spent:4.2f}"
        print(f"  {method:<16}{cells}")
    for b in budgets:
        ours = _median(rows, ("IsoFLOP", b))
        others = [_median(rows, (m, b)) for m in BUILTINS if (m, b) in rows]
        top = min(others) if others else None
        out[b] = (ours, top)
        if top is not None:
            print(f"  sweeps {b:g} T: IsoFLOP / best built-in = "
                  f"{ours / max(top, 1e-12):.3f}")
    print(f"  {'paper procedure':<16}{regret(law, paper, best):>9.2%} at "
          f"1.00T ({paper.width}/{paper.depth}/{paper.mlp_dim}, no search)")
    print(f"  {'best standard':<16}{regret(law, std, best):>9.2%} at 1.00T "
          f"(ViT-{std_name}/14 of {'/'.join(STANDARD)}, in hindsight)")
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--noise", type=float, nargs="+",
                        default=[0.01, 0.03])
    parser.add_argument("--truths", nargs="+", default=list(SUITE))
    parser.add_argument("--budgets", type=float, nargs="+",
                        default=[1.5, 1.0, 0.5],
                        help="sweep budgets in T (the final run adds 1 T); "
                        "the first is the default search")
    parser.add_argument("--uncooled", type=float, default=0.0,
                        help="penalty of Hyperband's un-cooled rungs")
    parser.add_argument("--no_builtins", action="store_true")
    parser.add_argument("--oracle", action="store_true",
                        help="drive keras_sovit.tuner.ShapeOracle (create/"
                        "update/end) instead, at the first sweep budget")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    if args.oracle:
        import logging

        logging.getLogger("keras_sovit").setLevel(logging.ERROR)
        run_oracle_suite(args.truths, args.noise, args.seeds, args.budgets[0],
                         not args.no_builtins)
        return 0
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores; target {TARGET:.3g} GFLOPs; seeds "
          f"{args.seeds}; sweep budgets {args.budgets} T, final run at T "
          "on top")
    summary = []
    for noise in args.noise:
        for name in args.truths:
            law, role = SUITE[name]
            rows, checks = run_truth(name, law, noise, args.seeds,
                                     args.budgets, args.uncooled,
                                     not args.no_builtins)
            medians = print_truth(name, role, law, noise, rows, args.budgets)
            spent = _median(rows, ("IsoFLOP", args.budgets[0]), 1)
            summary.append((name, role, noise, medians, spent, checks))
    print_summary(summary, args.budgets[0])
    return 0


def print_summary(summary, budget):
    print(f"\nsummary (default search: sweeps <= {budget:g} T, medians):")
    wrong_accept = wrong_reject = accepted = rejected = 0
    for name, role, noise, medians, spent, checks in summary:
        ours, best = medians[budget]
        if noise > 0.01:
            limit = 0.02  # every family at 3% noise
        else:  # 1% noise: no regression in-menu, 1% elsewhere
            limit = 0.005 if role == "in-menu" else 0.01
        ok = ours <= limit and (
            best is None or noise > 0.01 or ours <= best / 3
        )
        best_text = "" if best is None else f", best built-in {best:.2%}"
        print(f"  {name:<13} {role:<9} noise {noise:.0%}: {ours:.2%}"
              f"{best_text}, {spent:.2f} T -> goal "
              f"{'met' if ok else 'NOT met'}")
        for verified, gap in checks:
            if verified:
                accepted += 1
                wrong_accept += gap > 0.005
            else:
                rejected += 1
                wrong_reject += gap <= 0.005
    print(f"verification: {accepted} verified, of which {wrong_accept} had "
          f"a true gap > 0.5% at the verification level; {rejected} not "
          f"verified, of which {wrong_reject} had a true gap <= 0.5%")


if __name__ == "__main__":
    sys.exit(main())
