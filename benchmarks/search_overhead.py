"""Search overhead of the demo: achieved training rate / steady-state rate.

Reads the `shape_search_report.json` that `examples/shape_search.py` wrote
(each trial's shape, wall seconds and charged GFLOPs), then measures, in the
same process setup (backend, batch size, image size, the small recipe's
compiled train step), the steady-state seconds per training step of every
shape the search trained: `--steps` timed `train_on_batch` calls after
`--warmup` untimed ones (the compile), on one fixed batch. A trial's
steady-state time is its steps (charged GFLOPs / GFLOPs per batch) times
that; the ratio

    sum over trials of steady-state time / sum over trials of wall time

is the fraction of the search's trial time spent training at full speed
(the rest: compiles, evaluations, KerasTuner bookkeeping, checkpoints).
Printed for the sweep trials (star and grid) and for all trials; goal
>= 0.5 for the sweep. A separate timing runs at another moment than the
search, which on a shared machine (CPU steal) can differ by tens of
percent; so, with the per-trial timings the example records
(`SoViTHyperModel.last_timings`), the same ratio is also computed against
the search's own steady state: `training`, every train step at the rate
the trial's steps after its first one ran (input pipeline included). The
wall time is split into `training`, `compile` (the first step's excess:
tracing and compiling), `build` (model and initial weights), `evaluation`
(the untrained network and the cooled branches) and `rest` (KerasTuner and
the oracle, pipeline creation, snapshots, garbage collection).

    python examples/shape_search.py ... --output-dir OUT
    python benchmarks/search_overhead.py OUT/shape_search_report.json
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "jax")

SWEEP_PHASES = ("star", "grid")


def make_hypermodel(args):
    import keras_sovit as ks

    return ks.tuner.SoViTHyperModel(
        num_classes=args.num_classes,
        image_shape=(args.image_size, args.image_size, 3),
        batch_size=args.batch_size, recipe="small",
    )


def steady_seconds_per_step(hypermodel, values, args):
    """Seconds per train step of the trial's model, after compiling."""
    import keras
    import keras_tuner
    import numpy as np

    keras.backend.clear_session()
    hp = keras_tuner.HyperParameters()
    hp.values.update(values)
    model = hypermodel.build(hp)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch_size, args.image_size, args.image_size,
                         3)).astype("float32")
    y = np.eye(args.num_classes, dtype="float32")[
        rng.integers(0, args.num_classes, args.batch_size)]
    for _ in range(args.warmup):
        model.train_on_batch(x, y)
    timings = []
    for _ in range(args.repeats):
        begin = time.perf_counter()
        for _ in range(args.steps):
            model.train_on_batch(x, y)
        timings.append((time.perf_counter() - begin) / args.steps)
    return float(np.median(timings))


# Parts of a trial's wall time, from the timings the example records
# (`SoViTHyperModel.last_timings`).
PARTS = ("training", "compile", "build", "evaluation", "rest")


def trial_parts(timing, steps):
    """A trial's wall seconds split into `PARTS` (None without timings).

    `training` is every train step at the rate the trial's steps after the
    first ran (its in-run steady state); `compile` the rest of the train
    time, i.e. the first step's excess (tracing and compiling).
    """
    if timing.get("first_step_seconds") is None:
        return None
    train, first = timing["train_seconds"], timing["first_step_seconds"]
    training = (train - first) * steps / max(steps - 1, 1)
    evaluation = timing["eval_seconds"] + timing["untrained_eval_seconds"]
    build = timing["build_seconds"]
    rest = timing["seconds"] - build - train - evaluation
    return dict(zip(PARTS, (training, train - training, build, evaluation,
                            rest)))


def add_trial(totals, parts, group, timing, steady, split):
    total = totals.setdefault(group, {"separate": 0.0, "wall": 0.0,
                                      "gflops": 0.0, "trials": 0})
    total["separate"] += steady
    total["wall"] += timing["seconds"]
    # Training FLOPs: 3 x the forward GFLOPs of every example trained.
    total["gflops"] += 3 * (timing["charged_gflops"] or 0.0)
    total["trials"] += 1
    if split is not None:
        mine = parts.setdefault(group, dict.fromkeys(PARTS, 0.0))
        for name, seconds in split.items():
            mine[name] += seconds


def print_totals(totals, parts):
    for group, total in totals.items():
        wall, flops = total["wall"], total["gflops"]
        line = (f"{group:>5} trials ({total['trials']}): wall {wall:.0f} s, "
                f"achieved {flops / wall:.1f} training GFLOP/s")
        if total["separate"]:
            steady = total["separate"]
            line += (f"; separate timing: steady-state {steady:.0f} s, "
                     f"{flops / steady:.1f} GFLOP/s, ratio {steady / wall:.2f}")
        print(line)
        if group in parts:
            mine = parts[group]
            print("        seconds: " + ", ".join(
                f"{name} {seconds:.0f}" for name, seconds in mine.items()))
            print(f"        in-run steady state: {mine['training']:.0f} s, "
                  f"{flops / mine['training']:.1f} GFLOP/s, ratio "
                  f"{mine['training'] / wall:.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("report")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3,
                        help="Timings of --steps steps; the median counts.")
    parser.add_argument("--no-separate-timing", action="store_true",
                        help="Only the in-run steady state (no training).")
    args = parser.parse_args()
    import keras

    import keras_sovit as ks

    with open(args.report) as f:
        timings = json.load(f)["timings"]
    hypermodel = make_hypermodel(args)
    rates, totals, parts = {}, {}, {}
    for timing in timings:
        values = timing["values"]
        shape = ks.ShapeSpec.from_dict(values)
        if shape not in rates:
            rates[shape] = 0.0 if args.no_separate_timing else (
                steady_seconds_per_step(hypermodel, values, args))
        per_batch = hypermodel.gflops_per_example(shape) * args.batch_size
        steps = round((timing["charged_gflops"] or 0.0) / per_batch)
        split = trial_parts(timing, steps)
        groups = ("sweep", "all") if values["phase"] in SWEEP_PHASES else (
            "all",)
        for group in groups:
            add_trial(totals, parts, group, timing, steps * rates[shape],
                      split)
    print(f"backend {keras.backend.backend()}, {os.cpu_count()} cores, batch "
          f"{args.batch_size}, {args.image_size} px; {len(rates)} shapes")
    for shape, seconds in rates.items():
        if seconds:
            print(f"  {shape.width}/{shape.depth}/{shape.mlp_dim}: steady "
                  f"{1 / seconds:.1f} steps/s")
    print_totals(totals, parts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
