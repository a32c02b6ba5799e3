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
>= 0.5 for the sweep. With the per-trial timings the example records
(`SoViTHyperModel.last_timings`), the wall time is also split into: the
steady-state time, `build` (model and initial weights), `compile` (first
train step minus a steady step), `other training` (the train steps beyond
their steady-state time: input pipeline, dispatch), `evaluation` (the
untrained network and the cooled branches) and `rest` (KerasTuner and the
oracle, snapshots, pipeline creation).

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


def steady_seconds_per_step(values, args):
    """Seconds per train step of the trial's model, after compiling."""
    import keras_tuner
    import numpy as np

    import keras_sovit as ks

    hypermodel = ks.tuner.SoViTHyperModel(
        num_classes=args.num_classes,
        image_shape=(args.image_size, args.image_size, 3),
        batch_size=args.batch_size, recipe="small",
    )
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
    return float(np.median(timings)), hypermodel


# Parts of a trial's wall time, from the timings the example records
# (`SoViTHyperModel.last_timings`); "steady" is the steady-state time of the
# trial's charged steps.
PARTS = ("steady", "build", "compile", "other training", "evaluation", "rest")


def trial_parts(timing, steps, step_seconds):
    """A trial's wall seconds split into `PARTS` (None without timings)."""
    if timing.get("first_step_seconds") is None:
        return None
    steady = steps * step_seconds
    compile_ = timing["first_step_seconds"] - step_seconds
    training = timing["train_seconds"] - compile_ - steady
    evaluation = timing["eval_seconds"] + timing["untrained_eval_seconds"]
    build = timing["build_seconds"]
    rest = (timing["seconds"] - build - timing["train_seconds"]
            - evaluation)
    return dict(zip(PARTS, (steady, build, compile_, training, evaluation,
                            rest)))


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
    args = parser.parse_args()
    import keras

    import keras_sovit as ks

    with open(args.report) as f:
        timings = json.load(f)["timings"]
    rates, totals, parts = {}, {}, {}
    for timing in timings:
        values = timing["values"]
        shape = ks.ShapeSpec.from_dict(values)
        if shape not in rates:
            rates[shape], hypermodel = steady_seconds_per_step(values, args)
            keras.backend.clear_session()
        per_batch = hypermodel.gflops_per_example(shape) * args.batch_size
        steps = (timing["charged_gflops"] or 0.0) / per_batch
        steady = steps * rates[shape]
        split = trial_parts(timing, steps, rates[shape])
        for group in (("sweep",) if values["phase"] in SWEEP_PHASES
                      else ()) + ("all",):
            total = totals.setdefault(group, [0.0, 0.0, 0.0, 0])
            total[0] += steady
            total[1] += timing["seconds"]
            total[2] += 3 * (timing["charged_gflops"] or 0.0)
            total[3] += 1
            if split is not None:
                mine = parts.setdefault(group, dict.fromkeys(PARTS, 0.0))
                for name, seconds in split.items():
                    mine[name] += seconds
    print(f"backend {keras.backend.backend()}, {os.cpu_count()} cores, batch "
          f"{args.batch_size}, {args.image_size} px; {len(rates)} shapes")
    for shape, seconds in rates.items():
        print(f"  {shape.width}/{shape.depth}/{shape.mlp_dim}: steady "
              f"{1 / seconds:.1f} steps/s")
    for group, (steady, wall, flops, count) in totals.items():
        print(f"{group:>5} trials ({count}): wall {wall:.0f} s, steady-state "
              f"{steady:.0f} s; achieved {flops / wall:.1f} training GFLOP/s "
              f"vs steady {flops / steady:.1f}: ratio {steady / wall:.2f}")
        if group in parts:
            print("        seconds: " + ", ".join(
                f"{name} {seconds:.0f}"
                for name, seconds in parts[group].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
