"""Search the compute-optimal SoViT shape for a dataset and a compute budget.

The main job of keras_sovit (`make demo`). A `keras_sovit.tuner.ShapeOracle`
drives a `keras_tuner.Tuner` through the procedure of "Getting ViT in
Shape": a star sweep around a centre shape at two budgets, a fit of the
per-dimension scaling laws (exponents with bootstrap intervals), a small grid
sweep for the compute-optimal small shape, a proposal for `--target-compute`
and two final trials at that compute: the proposed shape and a standard ViT
(MLP = 4 x width) of equal compute. Every trial is a real training run of
`keras_sovit.tuner.SoViTHyperModel`, stopped at its compute budget (examples
seen x forward GFLOPs per example) and scored by the 10-shot linear-probe
error on the validation split; the final trials also report test accuracy.

    python examples/shape_search.py                      # animal_mnist
    python examples/shape_search.py --backend jax --target-compute 400

Outputs (in `--output-dir`): the KerasTuner project (trials, the oracle's
`shape_report.json`, `sweep_results.csv`, `star_sweep.png`, `scaling.png`)
and `shape_search_report.json` with the table printed at the end. Run again
without `--overwrite` to resume an interrupted search.

The defaults are tiny (28 px images, patch 4, widths up to 64, budgets of a
few hundred GFLOPs) so the whole search runs in minutes on 2 CPU cores. At
this scale the runs are short and noisy: the fitted exponents come with
wide intervals and need not resemble the paper's (0.22, 0.45, 0.6 for
width, depth, MLP).
"""

import argparse
import json
import math
import os
import sys
import time

METRIC_SHOTS = 10
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
    parser.add_argument(
        "--fewshot-split", default="validation",
        help="Split scored by the few-shot probe during the search.",
    )
    parser.add_argument("--fewshot-examples", type=int, default=300)
    parser.add_argument("--test-split", default="test")
    parser.add_argument(
        "--backend", choices=("tensorflow", "jax", "torch"),
        default=os.environ.get("KERAS_BACKEND", "jax"),
        help="Sets KERAS_BACKEND before Keras is imported (default: "
        "$KERAS_BACKEND, else jax, the fastest per trial on CPU).",
    )
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--patch-size", type=int, default=4)
    parser.add_argument(
        "--star-center", type=_ints, default=[64, 4, 256, 4],
        help="width,depth,mlp_dim,num_heads of the star centre.",
    )
    parser.add_argument("--star-widths", type=_ints, default=[16, 32, 48])
    parser.add_argument("--star-depths", type=_ints, default=[1, 2, 3])
    parser.add_argument("--star-mlps", type=_ints, default=[32, 64, 128])
    parser.add_argument(
        "--star-budgets", type=_floats, default=[40.0, 80.0],
        help="GFLOPs of the star-sweep runs.",
    )
    parser.add_argument(
        "--exponents", type=_floats, default=None,
        help="s_width,s_depth,s_mlp: skip the star sweep and scale with "
        "these exponents (e.g. the paper's 0.22,0.45,0.6).",
    )
    parser.add_argument("--grid-widths", type=_ints, default=[32, 48])
    parser.add_argument("--grid-depths", type=_ints, default=[1, 2])
    parser.add_argument("--grid-mlps", type=_ints, default=[128])
    parser.add_argument("--grid-budget", type=float, default=20.0)
    parser.add_argument(
        "--target-compute", type=float, default=240.0,
        help="GFLOPs of the final runs (proposal and control).",
    )
    parser.add_argument(
        "--proposal-method", choices=("auto", "paper", "joint"),
        default="auto",
    )
    parser.add_argument("--n-bootstrap", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--base-lr", type=float, default=3e-3)
    parser.add_argument("--shots", type=int, default=METRIC_SHOTS)
    parser.add_argument("--output-dir", default="shape_search_output")
    parser.add_argument("--project-name", default="shape_search")
    parser.add_argument(
        "--overwrite", action="store_true",
        help="Start a new search instead of resuming the saved one.",
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def _setup_backend(args):
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _load_data(args):
    """Train pipeline, few-shot sets and test set of the chosen dataset."""
    import tensorflow_datasets as tfds

    import keras_sovit as ks

    data_dir = args.data_dir
    if args.dataset == "animal_mnist":
        data_dir = ks.data.prepare("animal_mnist", data_dir=data_dir)
    elif data_dir is None:
        data_dir = ks.data.default_data_dir()
    builder = tfds.builder(args.dataset, data_dir=data_dir)
    num_classes = builder.info.features["label"].num_classes

    def split(name):
        return ks.data.load(args.dataset, name, data_dir=data_dir)

    def pipeline(ds, training):
        return ks.data.input_pipeline(
            ds,
            image_size=args.image_size,
            batch_size=args.batch_size,
            training=training,
            num_classes=num_classes,
            seed=args.seed,
        )

    # Few-shot sets as arrays: the probe's feature batches then have one
    # shape per set, so each trial compiles its feature extractor once.
    return {
        "num_classes": num_classes,
        "train": pipeline(split(args.train_split), training=True),
        "fewshot_train": _arrays(
            pipeline(split(args.train_split), training=False)
        ),
        "fewshot_test": _arrays(
            pipeline(
                split(args.fewshot_split).take(args.fewshot_examples),
                training=False,
            )
        ),
        "test": pipeline(split(args.test_split), training=False),
    }


def _arrays(ds):
    import numpy as np

    images, labels = [], []
    for x, y in ds.as_numpy_iterator():
        images.append(x)
        labels.append(y.argmax(-1))
    return np.concatenate(images), np.concatenate(labels)


def _oracle(args):
    import keras_tuner

    import keras_sovit as ks

    width, depth, mlp_dim, heads = args.star_center
    center = ks.ShapeSpec(width, depth, mlp_dim, heads, args.patch_size)
    return ks.tuner.ShapeOracle(
        objective=keras_tuner.Objective(
            f"fewshot_{args.shots}shot_error", "min"
        ),
        target_compute=args.target_compute,
        star_center=center,
        star_grids={
            "width": args.star_widths,
            "depth": args.star_depths,
            "mlp_dim": args.star_mlps,
        },
        star_budgets=args.star_budgets,
        grid={
            "width": args.grid_widths,
            "depth": args.grid_depths,
            "mlp_dim": args.grid_mlps,
        },
        grid_budget=args.grid_budget,
        exponents=_exponents(args),
        final_trials=("proposal", "control"),
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


def planned_trials(args):
    """Trials and GFLOPs per phase, from the public planners."""
    import keras_sovit as ks

    width, depth, mlp_dim, heads = args.star_center
    center = ks.ShapeSpec(width, depth, mlp_dim, heads, args.patch_size)
    star = ks.scaling.star_sweep_plan(
        center,
        {"width": args.star_widths, "depth": args.star_depths,
         "mlp_dim": args.star_mlps},
        args.star_budgets,
    )
    grid = ks.scaling.grid_sweep_plan(
        {"width": args.grid_widths, "depth": args.grid_depths,
         "mlp_dim": args.grid_mlps},
        args.grid_budget,
        center,
    )
    if args.exponents is not None:
        star = []
    return {
        "star": (len(star), sum(c for _, c in star)),
        "grid": (len(grid), sum(c for _, c in grid)),
        "final": (2, 2 * args.target_compute),
    }


def _tuner_class():
    import keras_tuner

    class ShapeSearchTuner(keras_tuner.Tuner):
        """A `keras_tuner.Tuner` with a progress display.

        Prints one line per trial (phase, trial number within the phase,
        shape, budget, compute spent so far) and adds the test set as
        validation data to the final trials only, so that they report test
        accuracy (`1 - val_error`) while the sweeps never touch it.
        """

        def __init__(self, plan, test_data, **kwargs):
            super().__init__(**kwargs)
            self.plan = plan
            self.test_data = test_data
            self.started = {}
            self.spent = 0.0
            self.idle_polls = 0
            self.trial_start = None

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
            phase = values["phase"]
            self.started[phase] = self.started.get(phase, 0) + 1
            total = self.plan.get(phase, (0, 0))[0]
            planned = sum(c for _, c in self.plan.values())
            print(
                f"[{phase} {self.started[phase]}/{total}] "
                f"width={values['width']} depth={values['depth']} "
                f"mlp_dim={values['mlp_dim']} "
                f"budget={values['compute_gflops']:.3g} GFLOPs | "
                f"compute {self.spent:.3g}/{planned:.3g} GFLOPs",
                flush=True,
            )

        def run_trial(self, trial, *args, **kwargs):
            if trial.hyperparameters.values["phase"] == "final":
                kwargs["validation_data"] = self.test_data
            return super().run_trial(trial, *args, **kwargs)

        def on_trial_end(self, trial):
            super().on_trial_end(trial)
            values = trial.hyperparameters.values
            # The oracle's copy holds the reported metrics (on a worker it
            # is fetched from the chief).
            metrics = self.oracle.get_trial(trial.trial_id).metrics
            spent = (metrics.get_last_value("compute_gflops")
                     if metrics.exists("compute_gflops") else 0.0)
            self.spent += float(spent)
            name = self.oracle.objective.name
            score = (f"{metrics.get_last_value(name):.3f}"
                     if metrics.exists(name) else "n/a")
            print(
                f"    -> {trial.status} {name}={score} "
                f"({values['phase']}, {time.time() - self.trial_start:.1f}s)",
                flush=True,
            )

    return ShapeSearchTuner


def _final_rows(oracle, args, num_classes):
    """The table: one row per final trial (proposal, control)."""
    import keras_sovit as ks

    rows = []
    roles = {}
    if oracle.control is not None:
        roles[json.dumps(oracle.control.to_dict(), sort_keys=True)] = (
            "control"
        )
    if oracle.proposal is not None:
        key = json.dumps(oracle.proposal.to_dict(), sort_keys=True)
        # A proposal that is itself a standard ViT is its own control.
        roles[key] = "proposal" if key not in roles else "prop=ctrl"
    for trial_id in sorted(oracle.trials):
        trial = oracle.trials[trial_id]
        values = trial.hyperparameters.values
        if values.get("phase") != "final":
            continue
        shape = ks.ShapeSpec.from_dict(values)
        metrics = trial.metrics

        def last(name):
            return (float(metrics.get_last_value(name))
                    if metrics.exists(name) else None)

        val_error = last("val_error")
        rows.append({
            "role": roles.get(json.dumps(shape.to_dict(), sort_keys=True),
                              "final"),
            "trial_id": str(trial_id),
            "status": str(trial.status),
            "shape": shape.to_dict(),
            "params": shape.num_params(
                args.image_size, num_classes=num_classes
            ),
            "gflops_per_example": shape.gflops(args.image_size),
            "compute_gflops": last("compute_gflops"),
            "fewshot_error": last(oracle.objective.name),
            "test_accuracy": None if val_error is None else 1.0 - val_error,
            "message": ((trial.message or "").strip().splitlines()
                        or [""])[-1],
        })
    return rows


def _format_table(rows, shots):
    header = (
        f"{'role':9} {'width':>5} {'depth':>5} {'mlp':>5} {'heads':>5} "
        f"{'params':>8} {'MFLOPs/ex':>9} {'GFLOPs':>8} "
        f"{f'{shots}-shot err':>11} {'test acc':>8}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        shape = row["shape"]

        def num(value, fmt):
            return "n/a" if value is None else format(value, fmt)

        lines.append(
            f"{row['role']:9} {shape['width']:>5} {shape['depth']:>5} "
            f"{shape['mlp_dim']:>5} {shape['num_heads']:>5} "
            f"{row['params']:>8,} "
            f"{row['gflops_per_example'] * 1e3:>9.2f} "
            f"{num(row['compute_gflops'], '8.1f'):>8} "
            f"{num(row['fewshot_error'], '11.3f'):>11} "
            f"{num(row['test_accuracy'], '8.3f'):>8}"
        )
    return "\n".join(lines)


def _exponent_lines(oracle):
    fit = oracle.star_fit_
    if fit is None:
        return ["no star-sweep fit (exponents were given)"]
    lines = []
    for dim, value in fit.exponents.items():
        low, high = fit.intervals.get(dim, (float("nan"),) * 2)
        lines.append(
            f"  s_{dim:8} = {value:6.3f}   90% interval [{low:.3f}, {high:.3f}]"
        )
    lines.append(f"  c (compute exponent) = {fit.c:.3f}")
    return lines


def main(argv=None):
    args = parse_args(argv)
    _setup_backend(args)
    import keras

    import keras_sovit as ks

    start = time.time()
    keras.utils.set_random_seed(args.seed)
    data = _load_data(args)
    num_classes = data["num_classes"]
    image_shape = (args.image_size, args.image_size, 3)
    oracle = _oracle(args)
    plan = planned_trials(args)
    hypermodel = ks.tuner.SoViTHyperModel(
        num_classes=num_classes,
        image_shape=image_shape,
        fewshot_train=data["fewshot_train"],
        fewshot_test=data["fewshot_test"],
        shots=(args.shots,),
        batch_size=args.batch_size,
        checkpoints=(0.5, 1.0),
        compile_kwargs={"base_lr": args.base_lr},
        fewshot_kwargs={"seed": args.seed, "batch_size": 1024},
    )
    os.makedirs(args.output_dir, exist_ok=True)
    tuner = _tuner_class()(
        plan,
        data["test"],
        oracle=oracle,
        hypermodel=hypermodel,
        directory=args.output_dir,
        project_name=args.project_name,
        overwrite=args.overwrite,
    )
    planned = sum(c for _, c in plan.values())
    print(
        f"[setup] backend={keras.backend.backend()} dataset={args.dataset} "
        f"({num_classes} classes, {args.image_size}px, patch "
        f"{args.patch_size}) trials: "
        + ", ".join(f"{k} {n}" for k, (n, _) in plan.items())
        + f"; planned compute {planned:.4g} GFLOPs "
        f"(target {args.target_compute:g})",
        flush=True,
    )
    tuner.search(data["train"], verbose=0)
    seconds = time.time() - start
    return _report(args, oracle, tuner, num_classes, seconds)


def _report(args, oracle, tuner, num_classes, seconds):
    project = tuner.project_dir
    rows = _final_rows(oracle, args, num_classes)
    fit = oracle.star_fit_
    trials = list(oracle.trials.values())
    done = {}
    for trial in trials:
        phase = trial.hyperparameters.values.get("phase")
        if str(trial.status) == "COMPLETED":
            done[phase] = done.get(phase, 0) + 1
    plots = [os.path.join(project, name)
             for name in ("star_sweep.png", "scaling.png")
             if os.path.exists(os.path.join(project, name))]
    report = {
        "dataset": args.dataset,
        "image_size": args.image_size,
        "target_compute": args.target_compute,
        "phase": oracle.phase,
        "method": oracle.method,
        "proposal": None if oracle.proposal is None
        else oracle.proposal.to_dict(),
        "control": None if oracle.control is None
        else oracle.control.to_dict(),
        "base_shape": None if oracle.base_shape_ is None
        else oracle.base_shape_.to_dict(),
        "base_compute": oracle.base_compute_,
        "exponents": None if fit is None else dict(fit.exponents),
        "intervals": None if fit is None
        else {d: list(v) for d, v in fit.intervals.items()},
        "trials_done": done,
        "trials_total": len(trials),
        "excluded_trials": dict(oracle.excluded_trials),
        "table": rows,
        "plots": plots,
        "oracle_report": os.path.join(project, "shape_report.json"),
        "wall_seconds": seconds,
    }
    path = os.path.join(args.output_dir, "shape_search_report.json")
    with open(path, "w") as f:
        json.dump(_plain(report), f, indent=2)

    print()
    print(f"Compute-optimal shape search on {args.dataset} "
          f"for {args.target_compute:g} GFLOPs "
          f"({len(trials)} trials, {seconds / 60:.1f} min)")
    print(_format_table(rows, args.shots))
    for row in rows:
        if row["status"] != "COMPLETED":
            print(f"  ! the {row['role']} trial {row['status']}: "
                  f"{row['message']}")
    print()
    print("Fitted scaling exponents (star sweep, bootstrap intervals):")
    for line in _exponent_lines(oracle):
        print(line)
    print("  (tiny, short runs: the exponents are noisy; the paper finds "
          "0.22 / 0.45 / 0.6 for width / depth / MLP.)")
    if oracle.base_shape_ is not None:
        print(f"Grid-sweep optimum x0: {oracle.base_shape_.to_dict()} at "
              f"{oracle.base_compute_:.3g} GFLOPs; proposal method: "
              f"{oracle.method}")
    print(f"Report: {path}")
    print(f"Oracle report: {report['oracle_report']}")
    for plot in plots:
        print(f"Plot: {plot}")
    return report


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
    sys.exit(0 if main() else 1)
