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
>= 0.5 for the sweep.

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
    begin = time.perf_counter()
    for _ in range(args.steps):
        model.train_on_batch(x, y)
    return (time.perf_counter() - begin) / args.steps, hypermodel


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("report")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    import keras

    import keras_sovit as ks

    with open(args.report) as f:
        timings = json.load(f)["timings"]
    rates, totals = {}, {}
    for timing in timings:
        values = timing["values"]
        shape = ks.ShapeSpec.from_dict(values)
        if shape not in rates:
            rates[shape], hypermodel = steady_seconds_per_step(values, args)
            keras.backend.clear_session()
        per_batch = hypermodel.gflops_per_example(shape) * args.batch_size
        steady = (timing["charged_gflops"] or 0.0) / per_batch * rates[shape]
        for group in (("sweep",) if values["phase"] in SWEEP_PHASES
                      else ()) + ("all",):
            total = totals.setdefault(group, [0.0, 0.0, 0.0])
            total[0] += steady
            total[1] += timing["seconds"]
            total[2] += 3 * (timing["charged_gflops"] or 0.0)
    print(f"backend {keras.backend.backend()}, {os.cpu_count()} cores, batch "
          f"{args.batch_size}, {args.image_size} px; {len(rates)} shapes")
    for shape, seconds in rates.items():
        print(f"  {shape.width}/{shape.depth}/{shape.mlp_dim}: steady "
              f"{1 / seconds:.1f} steps/s")
    for group, (steady, wall, flops) in totals.items():
        print(f"{group:>5} trials: wall {wall:.0f} s, steady-state {steady:.0f}"
              f" s; achieved {flops / wall:.1f} training GFLOP/s vs steady "
              f"{flops / steady:.1f}: ratio {steady / wall:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
