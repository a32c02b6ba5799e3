"""Training throughput: SoViTBackbone vs keras-hub's SigLIPVisionEncoder.

A benchmark, not a test. In one process (TensorFlow backend, XLA):

1. the training-step images/s of `SoViTBackbone` (MAP head) + a linear
   head, and of keras-hub's `SigLIPVisionEncoder` (the same architecture:
   pre-LN blocks, tanh-GELU, MAP pooling) + the same head, at one shape;
2. their ratio;
3. the achieved training GFLOP/s, 3 x forward GFLOPs x images/s (forward
   GFLOPs from `ShapeSpec.gflops`, 1 multiply-add = 2 FLOPs), as a fraction
   of a measured XLA float32 matmul rate on the same machine.

Both models train with the same optimizer, loss and data, compiled with
`jit_compile=True`; the step time is the median over `--steps` timed steps
after `--warmup` untimed ones. The two models alternate in rounds so that
machine load hits both alike.

Usage:

    python benchmarks/throughput.py               # the reference setting
    python benchmarks/throughput.py --steps 3 --batch 32
    python benchmarks/throughput.py --dtype_policy mixed_bfloat16 --no_xla

keras-hub is a benchmark-only dependency:
`pip install keras-hub==0.32.0`.
"""

import argparse
import os
import platform
import statistics
import sys
import time

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from competitors import keras_hub_siglip  # noqa: E402

import keras_sovit  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps")
    parser.add_argument("--rounds", type=int, default=2,
                        help="alternating timing rounds per model")  # fmt: skip
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--mlp_dim", type=int, default=1536)
    parser.add_argument("--num_heads", type=int, default=6)
    parser.add_argument("--patch_size", type=int, default=16)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--num_classes", type=int, default=1000)
    parser.add_argument("--matmul_size", type=int, default=2048)
    parser.add_argument("--skip_keras_hub", action="store_true")
    parser.add_argument("--dtype_policy", default="float32",
                        help="Keras dtype policy of both models, e.g. "
                        "mixed_bfloat16")  # fmt: skip
    parser.add_argument("--no_xla", action="store_true",
                        help="compile both with jit_compile=False")  # fmt: skip
    args = parser.parse_args(argv)
    for name in ("steps", "warmup", "rounds", "batch"):
        if getattr(args, name) < (0 if name == "warmup" else 1):
            parser.error(f"--{name} is too small: {getattr(args, name)}")
    return args


def build_sovit(shape, image_size, num_classes):
    backbone = keras_sovit.models.SoViTBackbone(
        shape, image_shape=(image_size, image_size, 3), pool_type="map"
    )
    return keras_sovit.models.SoViTClassifier(backbone, num_classes)


def build_keras_hub(shape, image_size, num_classes):
    return keras_hub_siglip(shape, image_size, num_classes)


def compile_model(model, jit_compile=True):
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-4),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )


class Runner:
    """One compiled model and its step timings."""

    def __init__(self, name, model, x, y, jit_compile=True):
        self.name, self.model, self.x, self.y = name, model, x, y
        self.times, self.cpu_times = [], []
        compile_model(model, jit_compile)
        start = time.perf_counter()
        model.train_on_batch(x, y)  # trace + XLA compile + first step
        self.first_step_s = time.perf_counter() - start

    def run(self, steps, warmup):
        for _ in range(warmup):
            self.model.train_on_batch(self.x, self.y)
        for _ in range(steps):
            start, cpu_start = time.perf_counter(), time.process_time()
            loss = self.model.train_on_batch(self.x, self.y)
            self.times.append(time.perf_counter() - start)
            self.cpu_times.append(time.process_time() - cpu_start)
        if not np.isfinite(float(np.asarray(loss).reshape(-1)[0])):
            raise RuntimeError(f"{self.name}: non-finite loss {loss}")

    @property
    def step_s(self):
        return statistics.median(self.times)


def matmul_rates(size, repeats=10):
    """XLA float32 (size x size) matmul GFLOP/s: (best wall, CPU-time based).

    The CPU-time rate divides by the process CPU time spread over all
    logical CPUs, which is what the rate would be on an unloaded machine if
    the product keeps every core busy.
    """
    a = tf.random.normal((size, size))
    b = tf.random.normal((size, size))
    matmul = tf.function(lambda a, b: tf.matmul(a, b), jit_compile=True)
    matmul(a, b).numpy()
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        matmul(a, b).numpy()
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - cpu_start)
    flops = 2.0 * size**3 / 1e9
    return flops / best, flops / (best_cpu / os.cpu_count())


def machine_description():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpus = tf.config.list_physical_devices("GPU")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs, "
        f"{len(gpus)} GPU(s), load average {load:.2f} | "
        f"TF {tf.__version__}, Keras {keras.__version__}"
    )


def main(argv=None):
    args = parse_args(argv)
    keras.mixed_precision.set_dtype_policy(args.dtype_policy)
    shape = keras_sovit.ShapeSpec(
        args.width, args.depth, args.mlp_dim, args.num_heads, args.patch_size
    )
    forward = shape.gflops(
        args.image_size, num_classes=args.num_classes, pool_type="map"
    )
    rng = np.random.default_rng(0)
    x = rng.uniform(
        -1, 1, (args.batch, args.image_size, args.image_size, 3)
    ).astype("float32")
    y = np.eye(args.num_classes, dtype="float32")[
        rng.integers(0, args.num_classes, args.batch)
    ]

    print(f"machine: {machine_description()}")
    print(
        f"shape: {shape}, {args.image_size}px, batch {args.batch}, "
        f"{args.num_classes} classes, forward {forward:.3f} GFLOPs/image, "
        f"policy {args.dtype_policy}, XLA {not args.no_xla}"
    )
    runners = [
        Runner(
            "SoViTBackbone+head",
            build_sovit(shape, args.image_size, args.num_classes),
            x,
            y,
            not args.no_xla,
        )
    ]
    if not args.skip_keras_hub:
        runners.append(
            Runner(
                "keras-hub SigLIPVisionEncoder+head",
                build_keras_hub(shape, args.image_size, args.num_classes),
                x,
                y,
                not args.no_xla,
            )
        )
    for runner in runners:
        n_params = runner.model.count_params()
        print(f"{runner.name}: {n_params:,} params, "
              f"first step {runner.first_step_s:.1f} s")  # fmt: skip
    for _ in range(args.rounds):
        for runner in runners:
            runner.run(args.steps, args.warmup)
    peak, peak_cpu = matmul_rates(args.matmul_size)
    report(args, runners, forward, peak, peak_cpu)


def report(args, runners, forward, peak, peak_cpu):
    """Prints the table. Wall = median wall-clock step; CPU = median process
    CPU time per step divided by the number of logical CPUs (the step time
    of an otherwise idle machine, if the step keeps all cores busy)."""
    cpus = os.cpu_count()
    print()
    header = (
        f"{'model':<36} {'wall s':>7} {'img/s':>7} {'of mm':>6} | "
        f"{'CPU s':>7} {'img/s':>7} {'of mm':>6}"
    )
    print(header)
    print("-" * len(header))
    rows = {}
    for r in runners:
        wall = statistics.median(r.times)
        cpu = statistics.median(r.cpu_times) / cpus
        rows[r.name] = (args.batch / wall, args.batch / cpu)
        fractions = [3.0 * forward * ips / p for ips, p in
                     zip(rows[r.name], (peak, peak_cpu))]  # fmt: skip
        print(
            f"{r.name:<36} {wall:>7.3f} {rows[r.name][0]:>7.2f} "
            f"{fractions[0]:>6.3f} | {cpu:>7.3f} {rows[r.name][1]:>7.2f} "
            f"{fractions[1]:>6.3f}"
        )
    print(
        f"XLA fp32 matmul {args.matmul_size}^3: {peak:.1f} GFLOP/s wall, "
        f"{peak_cpu:.1f} GFLOP/s CPU-time based"
    )
    ours = runners[0].name
    print(
        f"SoViT training GFLOP/s = 3 x {forward:.3f} x img/s = "
        f"{3 * forward * rows[ours][0]:.1f} (wall), "
        f"{3 * forward * rows[ours][1]:.1f} (CPU)"
    )
    fraction_wall = 3 * forward * rows[ours][0] / peak
    fraction_cpu = 3 * forward * rows[ours][1] / peak_cpu
    print(
        f"SoViT fraction of matmul rate: {fraction_wall:.3f} (wall), "
        f"{fraction_cpu:.3f} (CPU)  goal >= 0.55"
    )
    if len(runners) == 2:
        other = runners[1].name
        print(
            "ratio SoViT / keras-hub img/s: "
            f"{rows[ours][0] / rows[other][0]:.3f} (wall), "
            f"{rows[ours][1] / rows[other][1]:.3f} (CPU)  goal >= 1.15"
        )
    for r in runners:
        print(
            f"{r.name} wall steps (s): "
            + " ".join(f"{t:.2f}" for t in r.times)
        )


if __name__ == "__main__":
    main()
