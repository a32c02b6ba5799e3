"""Search the compute-optimal SoViT shape for a dataset and a compute budget.

The main job of keras_sovit (`make demo`). A `keras_sovit.tuner.ShapeOracle`
drives a `keras_tuner.Tuner` through the procedure of "Getting ViT in
Shape", on real training runs of `keras_sovit.tuner.SoViTHyperModel`:

1. a star sweep around a centre shape: one run per shape trains three
   budgets (B/4, B/2, B), each cooled down on its own branch of the run;
2. a fit of the per-dimension scaling laws (exponents with bootstrap
   intervals over trials) and a small grid sweep for the compute-optimal
   small shape x0;
3. a signal gate: the search stops, with advice and exit status 1, unless
   the centre improves with compute by more than two standard errors, the
   trained networks beat the untrained one, and the data exponent's
   interval lies above 0;
4. the proposal for `--target-compute`, then the final comparison at that
   compute with `--final-seeds` seeds each: the proposal, a standard-aspect
   ViT chosen without the proposal (MLP = 4 x width, the ViT family's
   depth), and x0. Each gets mean +- standard error and the proposal a
   verdict: "better", "worse" or "not distinguishable".

The objective is the validation loss of the trained head (the loss it was
trained with) on a stratified validation subset, with its standard error;
the final trials also report test accuracy. The small-scale recipe is used
(AdamW, softmax, class-prior head bias, crops of at least 35%).

    python examples/shape_search.py                      # animal_mnist
    python examples/shape_search.py --backend tensorflow --final-seeds 5

Outputs (in `--output-dir`): the KerasTuner project (trials, the oracle's
`shape_report.json`, `sweep_results.csv`, plots) and
`shape_search_report.json` with the signal, the exponents, the final table
and the verdict. Run again without `--overwrite` to resume: completed
trials are never lost, and a seeded run repeats exactly on one machine.
"""

import argparse
import json
import math
import os
import sys
import time

# Run from a source checkout without installing: the repository root.
sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _ints(text):
    return [int(v) for v in text.split(",") if v]


def _floats(text):
    return [float(v) for v in text.split(",") if v]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--dataset", default="animal_mnist",
        help="A prepared tfds image-classification dataset "
        "(animal_mnist is prepared offline on first use).",
    )
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--validation-split", default="validation")
    parser.add_argument(
        "--validation-per-class", type=int, default=100,
        help="Stratified validation images per class (the objective).",
    )
    parser.add_argument("--test-split", default="test")
    parser.add_argument(
        "--backend", choices=("tensorflow", "jax", "torch"),
        default=os.environ.get("KERAS_BACKEND", "jax"),
        help="Sets KERAS_BACKEND before Keras is imported.",
    )
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--patch-size", type=int, default=4)
    parser.add_argument(
        "--star-center", type=_ints, default=[64, 4, 256, 4],
        help="width,depth,mlp_dim,num_heads of the star centre.",
    )
    parser.add_argument("--star-widths", type=_ints, default=[16, 32, 48])
    parser.add_argument("--star-depths", type=_ints, default=[1, 2, 3])
    parser.add_argument("--star-mlps", type=_ints, default=[64, 128, 192])
    parser.add_argument(
        "--star-budget", type=float, default=100.0,
        help="GFLOPs B of the star runs; each also reports B/4 and B/2.",
    )
    parser.add_argument(
        "--exponents", type=_floats, default=None,
        help="s_width,s_depth,s_mlp: skip the star sweep and scale with "
        "these exponents (e.g. the paper's 0.22,0.45,0.6).",
    )
    parser.add_argument("--grid-widths", type=_ints, default=[16, 32, 48])
    parser.add_argument("--grid-depths", type=_ints, default=[2])
    parser.add_argument("--grid-mlps", type=_ints, default=[128])
    parser.add_argument("--grid-budget", type=float, default=50.0)
    parser.add_argument(
        "--target-compute", type=float, default=150.0,
        help="GFLOPs of each final run.",
    )
    parser.add_argument("--final-seeds", type=int, default=3)
    parser.add_argument("--replicates", type=int, default=1,
                        help="Seeds of every sweep trial.")
    parser.add_argument(
        "--proposal-method", choices=("auto", "paper", "joint"),
        default="auto",
    )
    parser.add_argument("--n-bootstrap", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--output-dir", default="shape_search_output")
    parser.add_argument("--project-name", default="shape_search")
    parser.add_argument(
        "--overwrite", action="store_true",
        help="Start a new search instead of resuming the saved one.",
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def _load_data(args):
    """Train pipeline factory, validation and test arrays."""
    import tensorflow_datasets as tfds

    import keras_sovit as ks

    data_dir = args.data_dir
    if args.dataset == "animal_mnist":
        data_dir = ks.data.prepare("animal_mnist", data_dir=data_dir)
    elif data_dir is None:
        data_dir = ks.data.default_data_dir()
    builder = tfds.builder(args.dataset, data_dir=data_dir)
    num_classes = builder.info.features["label"].num_classes
    crops = ks.training.pipeline_kwargs(ks.training.recipe(
        1000, preset="small", num_classes=num_classes))

    def split(name):
        return ks.data.load(args.dataset, name, data_dir=data_dir)

    def train(seed):
        # A new pipeline per trial: its order depends on the seed only.
        return ks.data.input_pipeline(
            split(args.train_split), image_size=args.image_size,
            batch_size=args.batch_size, training=True,
            num_classes=num_classes, seed=seed, **crops,
        )

    validation = _arrays(ks, split(args.validation_split), args, num_classes)
    keep = ks.evaluation.stratified_subset(
        validation[1], args.validation_per_class, seed=args.seed
    )
    return {
        "num_classes": num_classes,
        "train": train,
        "validation": (validation[0][keep], validation[1][keep]),
        "test": _arrays(ks, split(args.test_split), args, num_classes),
    }


def _arrays(ks, ds, args, num_classes):
    import numpy as np

    ds = ks.data.input_pipeline(
        ds, image_size=args.image_size, batch_size=500, training=False,
        num_classes=num_classes,
    )
    images, labels = [], []
    for x, y in ds.as_numpy_iterator():
        images.append(x)
        labels.append(y.argmax(-1))
    return np.concatenate(images), np.concatenate(labels)


def _oracle(args):
    import keras_sovit as ks

    width, depth, mlp_dim, heads = args.star_center
    center = ks.ShapeSpec(width, depth, mlp_dim, heads, args.patch_size)
    star_budgets = [args.star_budget * f for f in (0.25, 0.5, 1.0)]
    return ks.tuner.ShapeOracle(
        objective="val_loss",
        target_compute=args.target_compute,
        phases="paper",
        star_center=center,
        star_grids={"width": args.star_widths, "depth": args.star_depths,
                    "mlp_dim": args.star_mlps},
        star_budgets=star_budgets,
        grid={"width": args.grid_widths, "depth": args.grid_depths,
              "mlp_dim": args.grid_mlps},
        grid_budget=args.grid_budget,
        exponents=_exponents(args),
        final_trials=("proposal", "standard", "x0"),
        final_seeds=args.final_seeds,
        replicates=args.replicates,
        proposal_method=args.proposal_method,
        image_size=args.image_size,
        n_bootstrap=args.n_bootstrap,
        seed=args.seed,
        max_retries_per_trial=1,
    )


def _exponents(args):
    if args.exponents is None:
        return None
    if len(args.exponents) != 3:
        raise ValueError(
            "`--exponents` needs three values (width, depth, mlp_dim). "
            f"Received: --exponents={args.exponents}"
        )
    return dict(zip(("width", "depth", "mlp_dim"), args.exponents))


def _tuner_class():
    import keras_tuner

    class ShapeSearchTuner(keras_tuner.Tuner):
        """A `keras_tuner.Tuner` that prints one line per trial."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.idle_polls = 0
            self.trial_start = None
            self.timings = []

        def pre_create_trial(self):
            # The oracle answers IDLE while a phase waits for running trials
            # (other workers); KerasTuner re-asks at once, so back off.
            if self.idle_polls:
                time.sleep(min(0.05 * self.idle_polls, 1.0))
            self.idle_polls += 1

        def on_trial_begin(self, trial):
            super().on_trial_begin(trial)
            self.idle_polls = 0
            self.trial_start = time.time()
            values = trial.hyperparameters.values
            print(
                f"[{values['phase']}] width={values['width']} "
                f"depth={values['depth']} mlp_dim={values['mlp_dim']} "
                f"seed={values.get('seed', 0)} budget="
                f"{values['compute_gflops']:.4g} GFLOPs "
                f"({values.get('budget_fractions', '1')}) | spent "
                f"{self.oracle.compute_spent:.4g} GFLOPs",
                flush=True,
            )

        def on_trial_end(self, trial):
            super().on_trial_end(trial)
            seconds = time.time() - self.trial_start
            metrics = self.oracle.get_trial(trial.trial_id).metrics

            def last(name):
                return (metrics.get_last_value(name)
                        if metrics.exists(name) else None)

            self.timings.append({
                "trial_id": str(trial.trial_id),
                "values": dict(trial.hyperparameters.values),
                "seconds": seconds,
                "charged_gflops": last("charged_gflops"),
                **self.hypermodel.last_timings,
            })
            value, se = last("val_loss"), last("val_loss_se")
            score = "n/a" if value is None else f"{value:.3f} +- {se:.3f}"
            print(f"    -> {trial.status} val_loss={score} "
                  f"(untrained {last('untrained_val_loss') or float('nan'):.3f}"
                  f", {seconds:.1f}s)", flush=True)

    return ShapeSearchTuner


def main(argv=None):
    args = parse_args(argv)
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    import keras_sovit as ks

    start = time.time()
    data = _load_data(args)
    oracle = _oracle(args)
    hypermodel = ks.tuner.SoViTHyperModel(
        num_classes=data["num_classes"],
        image_shape=(args.image_size, args.image_size, 3),
        batch_size=args.batch_size,
        recipe="small",
        test_data=data["test"],
    )
    os.makedirs(args.output_dir, exist_ok=True)
    tuner = _tuner_class()(
        oracle=oracle, hypermodel=hypermodel, directory=args.output_dir,
        project_name=args.project_name, overwrite=args.overwrite,
    )
    print(f"[setup] backend={keras.backend.backend()} dataset={args.dataset} "
          f"({data['num_classes']} classes, {args.image_size}px, patch "
          f"{args.patch_size}); target {args.target_compute:g} GFLOPs",
          flush=True)
    tuner.search(data["train"], validation_data=data["validation"],
                 verbose=0)
    report = _report(args, oracle, tuner, time.time() - start)
    _print(report, oracle)
    return report


def _report(args, oracle, tuner, seconds):
    fit = oracle.star_fit_
    trained = sum(3 * (t["charged_gflops"] or 0) for t in tuner.timings)
    trial_seconds = sum(t["seconds"] for t in tuner.timings)
    report = {
        "dataset": args.dataset,
        "objective": oracle.objective.name,
        "target_compute": args.target_compute,
        "phase": oracle.phase,
        "stopped": oracle.state.stopped_,
        "signal": oracle.state.signal_,
        "method": oracle.method,
        "proposal": _dict(oracle.proposal),
        "base_shape": _dict(oracle.base_shape_),
        "base_compute": oracle.base_compute_,
        "exponents": None if fit is None else dict(fit.exponents),
        "intervals": None if fit is None
        else {d: list(v) for d, v in fit.intervals.items()},
        "final": oracle.state.final_,
        "verdict": oracle.state.verdict_,
        "compute_spent_gflops": oracle.compute_spent,
        "trials_total": len(oracle.trials),
        "excluded_trials": dict(oracle.excluded_trials),
        "training_gflops": trained,
        "trial_seconds": trial_seconds,
        "achieved_training_gflops_per_s": trained / max(trial_seconds, 1e-9),
        "timings": tuner.timings,
        "oracle_report": os.path.join(tuner.project_dir,
                                      "shape_report.json"),
        "wall_seconds": seconds,
    }
    path = os.path.join(args.output_dir, "shape_search_report.json")
    with open(path, "w") as f:
        json.dump(_plain(report), f, indent=2)
    report["path"] = path
    return report


def _print(report, oracle):
    print()
    print(f"Compute-optimal shape search on {report['dataset']} for "
          f"{report['target_compute']:g} GFLOPs ({report['trials_total']} "
          f"trials, {report['wall_seconds'] / 60:.1f} min)")
    signal = report["signal"] or {}
    for point in signal.get("center", []):
        print(f"  centre at {point['compute_gflops']:.4g} GFLOPs: "
              f"{report['objective']} {point['mean']:.3f} +- "
              f"{point['se'] or float('nan'):.3f}")
    untrained = signal.get("untrained_objective") or {}
    if untrained:
        print(f"  untrained network: {untrained['mean']:.3f}")
    print(f"  signal checks: {signal.get('checks')} -> passed: "
          f"{signal.get('passed')}")
    if report["stopped"]:
        print(f"STOPPED: {report['stopped']}")
        return
    print("Fitted scaling exponents (90% bootstrap intervals over trials):")
    for dim, value in (report["exponents"] or {}).items():
        low, high = report["intervals"].get(dim, (math.nan, math.nan))
        print(f"  s_{dim:8} = {value:6.3f}   [{low:.3f}, {high:.3f}]")
    print(f"Proposal ({report['method']}): {report['proposal']}")
    print(f"{'role':9} {'width':>5} {'depth':>5} {'mlp':>5} {'seeds':>5} "
          f"{report['objective']:>17} {'test acc':>8}")
    for row in report["final"]:
        shape = row["shape"]
        mean = row["objective_mean"]
        se = row["objective_se"] or float("nan")
        acc = row["test_accuracy_mean"]
        print(f"{row['role']:9} {shape['width']:>5} {shape['depth']:>5} "
              f"{shape['mlp_dim']:>5} {len(row['seeds']):>5} "
              f"{mean:>9.3f} +- {se:.3f} "
              f"{'n/a' if acc is None else format(acc, '8.3f'):>8}")
    verdict = report["verdict"] or {}
    print(f"Verdict, proposal against the standard ViT: "
          f"{verdict.get('verdict')}")
    if "x0" in verdict:
        print(f"Proposal against x0 trained at the target: "
              f"{verdict['x0']['verdict']}")
    print(f"Report: {report['path']}")


def _dict(shape):
    return None if shape is None else shape.to_dict()


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


if __name__ == "__main__":
    # A search stopped by the signal gate measured nothing: exit status 1.
    sys.exit(1 if main()["stopped"] else 0)
