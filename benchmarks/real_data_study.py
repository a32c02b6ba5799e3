"""Cooled-down learning curves of 42 SoViT shapes on animal_mnist.

A table for testing the scaling-law machinery on real data: every shape of
a star (around the demo's centre 64/4/256), a grid and off-axis points is
trained once per seed with `keras_sovit.training.BranchedRun` (the small
recipe, as `SoViTHyperModel` trains a trial), and evaluated at five
budgets spanning 16x compute (B/16 ... B), each at the end of its own
cooldown, plus the untrained network (budget_index -1, compute 0) and the
un-cooled main run at every branch point (cooled = 0, validation metrics
only; never fit those as finished runs).

Metrics per row, each with its standard error (`*_se`): `val_loss` and
`val_error` of the trained head on the 1000 validation images (100 per
class); `fewshot_10shot_error` (3 shot draws from the train split, L2 by
leave-one-shot-out cross-validation, scored on the validation images);
`probe_error` (ridge probe fitted on 500 train images, 50 per class, L2 by
5-fold CV, scored on the validation images). The test split is not used.

Compute is counted as in the paper (examples x forward GFLOPs); a cooled row
counts its main-run plus cooldown examples (`compute_gflops`), and
`charged_gflops` is what its run trained in all.

    python benchmarks/real_data_study.py            # the committed table
    python benchmarks/real_data_study.py --tiny --output /tmp/tiny.csv

The run appends to `--output` one shape/seed at a time and skips the
shape/seed pairs already there, so an interrupted study resumes by running
the same command again. Rows are deterministic: re-running a pair on the
same machine gives the same numbers.
"""

import argparse
import csv
import os
import sys
import time

sys.path.insert(
    0, os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

HEADS, PATCH, NUM_CLASSES = 4, 4, 10
CENTRE = (64, 4, 256)
STAR = {
    "width": (16, 24, 32, 48),
    "depth": (1, 2, 3),
    "mlp_dim": (32, 64, 128, 192),
}
GRID = {"width": (32, 48, 64), "depth": (1, 2, 4), "mlp_dim": (64, 128, 256)}
OFF_AXIS = (
    (96, 2, 384), (128, 2, 256), (96, 4, 192), (40, 6, 160), (24, 3, 96),
    (80, 3, 320), (128, 1, 512), (48, 8, 96), (16, 2, 64), (32, 6, 64),
)
FRACTIONS = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0)
METRICS = (
    "val_loss", "val_loss_se", "val_error", "val_error_se",
    "fewshot_10shot_error", "fewshot_10shot_error_se",
    "probe_error", "probe_error_se",
)
COLUMNS = (
    "role", "width", "depth", "mlp_dim", "num_heads", "patch_size", "seed",
    "budget_index", "budget_gflops", "compute_gflops", "examples_seen",
    "steps", "cooldown_steps", "cooled", "charged_gflops",
    *METRICS,
    "params", "gflops_per_example", "image_size", "batch_size",
    "run_train_seconds", "run_eval_seconds", "backend",
)


def design():
    """`[(role, (width, depth, mlp_dim))]`: star, grid and off-axis shapes."""
    roles = {CENTRE: ["centre"]}
    for dim, values in STAR.items():
        for value in values:
            shape = list(CENTRE)
            shape[("width", "depth", "mlp_dim").index(dim)] = value
            roles.setdefault(tuple(shape), []).append(f"star:{dim}")
    for width in GRID["width"]:
        for depth in GRID["depth"]:
            for mlp in GRID["mlp_dim"]:
                roles.setdefault((width, depth, mlp), []).append("grid")
    for shape in OFF_AXIS:
        roles.setdefault(shape, []).append("off-axis")
    return [("+".join(r), s) for s, r in roles.items()]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument(
        "--output",
        default=os.path.join(here, "data", "real_data_study.csv"),
    )
    parser.add_argument("--max-budget", type=float, default=100.0,
                        help="Largest budget B in GFLOPs.")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--image-size", type=int, default=28)
    # 64, not the hypermodel's 32: the per-step overhead of tiny models
    # dominates on CPU, and 64 halves the steps at equal compute.
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--limit", type=int, default=None,
                        help="Run at most this many shape/seed pairs.")
    parser.add_argument(
        "--tiny", action="store_true",
        help="Smoke test: 2 shapes, 16 px, B = 2 GFLOPs, small eval sets.",
    )
    return parser.parse_args(argv)


def load_data(args):
    import numpy as np

    import keras_sovit as ks

    data_dir = ks.data.prepare("animal_mnist", data_dir=args.data_dir)

    def arrays(split):
        ds = ks.data.input_pipeline(
            ks.data.load("animal_mnist", split, data_dir=data_dir),
            image_size=args.image_size, batch_size=500, training=False,
            num_classes=NUM_CLASSES,
        )
        images, labels = [], []
        for x, y in ds.as_numpy_iterator():
            images.append(x)
            labels.append(y.argmax(-1))
        return np.concatenate(images), np.concatenate(labels)

    train, val = arrays("train"), arrays("validation")
    probe_per_class, val_per_class = (50, 100) if not args.tiny else (5, 10)
    probe_ids = ks.evaluation.stratified_subset(train[1], probe_per_class)
    if args.tiny:
        ids = ks.evaluation.stratified_subset(val[1], val_per_class)
        val = (val[0][ids], val[1][ids])
    return {
        "data_dir": data_dir,
        "train": train,
        "val": val,
        "probe_train": (train[0][probe_ids], train[1][probe_ids]),
    }


def evaluators(data):
    import keras_sovit as ks

    ev = ks.evaluation
    val = data["val"]  # one array: the probes share its features
    return {
        "cooled": [
            ev.ValidationEvaluator(val),
            ev.FewShotEvaluator(
                data["train"], val, shots=(10,), num_draws=3,
                num_classes=NUM_CLASSES,
            ),
            ev.LinearProbeEvaluator(
                data["probe_train"], val, num_classes=NUM_CLASSES,
                folds=5,
            ),
        ],
        "uncooled": [ev.ValidationEvaluator(val)],
    }


def hypermodel(args):
    import keras_sovit as ks

    return ks.tuner.SoViTHyperModel(
        num_classes=NUM_CLASSES,
        image_shape=(args.image_size, args.image_size, 3),
        batch_size=args.batch_size,
        checkpoints=FRACTIONS,
        recipe="small",
    )


def train_pipeline(args, data, config, seed):
    import keras_sovit as ks

    return ks.data.input_pipeline(
        ks.data.load("animal_mnist", "train", data_dir=data["data_dir"]),
        image_size=args.image_size, batch_size=args.batch_size,
        training=True, num_classes=NUM_CLASSES, seed=seed,
        **ks.training.pipeline_kwargs(config),
    )


def fresh_model(model_builder, hp, compiled):
    """The trial's freshly initialised model, reusing compiled functions.

    `SoViTHyperModel.build` gives the seed's initial weights. When a model
    of the same shape was compiled already (the previous seed), its weights
    are overwritten with those and its optimizer state is reset to its
    initial zeros, so its compiled train and predict functions are reused
    instead of compiled again (about 15-30 s per run on 2 CPU cores); the
    numbers are the same as with a new model.
    """
    import numpy as np

    model = model_builder.build(hp)
    if compiled is None:
        return model
    compiled.set_weights(model.get_weights())
    for variable in compiled.optimizer.variables:
        variable.assign(np.zeros(variable.shape, variable.dtype))
    return compiled


def run_pair(args, data, evals, role, shape_dims, seed, compiled=None):
    """Trains one shape/seed; returns its CSV rows and the model."""
    import keras
    import keras_tuner

    import keras_sovit as ks

    model_builder = hypermodel(args)
    width, depth, mlp_dim = shape_dims
    shape = ks.ShapeSpec(width, depth, mlp_dim, HEADS, patch_size=PATCH)
    hp = keras_tuner.HyperParameters()
    hp.values.update(shape.to_dict(), compute_gflops=args.max_budget,
                     phase="grid", seed=seed)
    if compiled is None:
        keras.backend.clear_session()
    model = fresh_model(model_builder, hp, compiled)
    config = ks.training.recipe(
        model_builder.total_steps(hp), preset="small",
        num_classes=NUM_CLASSES,
    )
    base = {
        "role": role, "width": width, "depth": depth, "mlp_dim": mlp_dim,
        "num_heads": HEADS, "patch_size": PATCH, "seed": seed,
        "params": shape.num_params(args.image_size, num_classes=NUM_CLASSES),
        "gflops_per_example": model_builder.gflops_per_example(shape),
        "image_size": args.image_size, "batch_size": args.batch_size,
        "backend": keras.backend.backend(),
    }
    untrained = {"budget_index": -1, "budget_gflops": 0.0,
                 "compute_gflops": 0.0, "examples_seen": 0, "steps": 0,
                 "cooldown_steps": 0, "cooled": 0}
    with ks.evaluation.feature_cache():
        for evaluator in evals["cooled"]:
            untrained.update(evaluator.evaluate(model))
    run = ks.training.BranchedRun(
        model,
        train_pipeline(args, data, config, seed),
        model_builder.feasible_budgets(hp),
        base["gflops_per_example"],
        args.batch_size,
        cooldown_fraction=model_builder.cooldown_fraction,
        evaluators=evals["cooled"],
        uncooled_evaluators=evals["uncooled"],
    )
    run.run()
    rows = [untrained]
    for cooled, uncooled in zip(run.records, run.uncooled_records):
        # Index in FRACTIONS, so rows of all shapes line up (a budget that
        # buys no whole step is missing, not renumbered).
        index = _fraction_index(cooled["budget_gflops"], args.max_budget)
        rows.append({**cooled, "budget_index": index})
        rows.append({**uncooled, "budget_index": index})
    timing = {"charged_gflops": run.charged_gflops,
              "run_train_seconds": run.train_seconds,
              "run_eval_seconds": run.eval_seconds}
    return [_row({**base, **timing, **row}) for row in rows], model


def _fraction_index(budget, max_budget):
    ratios = [abs(budget / max_budget - f) for f in FRACTIONS]
    return ratios.index(min(ratios))


def _row(values):
    row = {}
    for column in COLUMNS:
        value = values.get(column, "")
        if isinstance(value, bool):
            value = int(value)
        row[column] = repr(value) if isinstance(value, float) else value
    return row


def done_pairs(path):
    if not os.path.exists(path):
        return set()
    with open(path, newline="") as f:
        return {
            (int(r["width"]), int(r["depth"]), int(r["mlp_dim"]),
             int(r["seed"]))
            for r in csv.DictReader(f)
        }


def append_rows(path, rows):
    new = not os.path.exists(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        writer.writerows(rows)
        f.flush()
        os.fsync(f.fileno())


def main(argv=None):
    args = parse_args(argv)
    if args.tiny:
        args.image_size, args.max_budget = 16, 2.0
    shapes = design()
    if args.tiny:
        shapes = [shapes[0], shapes[-1]]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    # Shape-major: the seeds of one shape run back to back and share its
    # compiled functions (see `fresh_model`).
    pairs = [(seed, role, dims) for role, dims in shapes for seed in seeds]
    done = done_pairs(args.output)
    todo = [p for p in pairs if (*p[2], p[0]) not in done]
    if args.limit is not None:
        todo = todo[: args.limit]
    print(f"[study] {len(shapes)} shapes x {len(seeds)} seeds: "
          f"{len(pairs) - len(todo)} done, {len(todo)} to run -> "
          f"{args.output}", flush=True)
    if not todo:
        return 0
    data = load_data(args)
    evals = evaluators(data)
    start = time.time()
    compiled, compiled_dims = None, None
    for count, (seed, role, dims) in enumerate(todo, 1):
        began = time.time()
        reuse = compiled if compiled_dims == dims else None
        rows, compiled = run_pair(args, data, evals, role, dims, seed, reuse)
        compiled_dims = dims
        append_rows(args.output, rows)
        final = [r for r in rows if r["budget_index"] == 4 and r["cooled"]]
        loss = final[0]["val_loss"] if final else rows[-2]["val_loss"]
        elapsed = time.time() - start
        eta = elapsed / count * (len(todo) - count)
        print(f"[{count}/{len(todo)}] seed {seed} {dims} ({role}): "
              f"val_loss@B {float(loss):.3f}, {time.time() - began:.0f}s; "
              f"ETA {eta / 60:.0f} min", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
