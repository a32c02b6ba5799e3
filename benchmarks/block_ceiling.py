"""How much faster than keras-hub can one encoder block get? A ceiling.

A benchmark, not a test. It explains the throughput ratio that
`throughput.py` measures by timing, in one process (TensorFlow backend,
XLA, float32), the forward + backward pass (gradients of every weight and
of the input) of one encoder block at the reference shape:

1. `keras_sovit.layers.EncoderBlock`;
2. keras-hub's `SigLIPEncoderLayer` (the competitor, same architecture);
3. the matmul floor: the same matrix products (fused Q/K/V projection,
   attention scores, attention-weighted values, output projection, both
   MLP layers) and residual adds, with no LayerNorm, softmax, GELU or
   bias: what a block would cost if every non-matmul op were free;
4. the same products at the 2048^3 XLA matmul rate (perfect matmuls).

`keras-hub time / floor time` bounds the ratio any implementation can
reach over keras-hub without changing the arithmetic or the compiler. It
also measures XLA's float32 and bfloat16 matmul rates, and TensorFlow's
non-XLA (oneDNN) bfloat16 rate, to show whether lower precision would
help under XLA on this machine.

Usage:

    python benchmarks/block_ceiling.py
    python benchmarks/block_ceiling.py --rounds 1 --repeats 2   # quick

keras-hub is a benchmark-only dependency:
`pip install keras-hub==0.32.0`.
"""

import argparse
import os
import sys
import time

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import ops  # noqa: E402
from throughput import machine_description  # noqa: E402

import keras_sovit  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=196)
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--mlp_dim", type=int, default=1536)
    parser.add_argument("--num_heads", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=5,
                        help="alternating timing rounds")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=4,
                        help="timed calls per round (the best is kept)")  # fmt: skip
    parser.add_argument("--matmul_size", type=int, default=2048)
    args = parser.parse_args(argv)
    for name in ("batch", "tokens", "rounds", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1: {getattr(args, name)}")
    return args


class MatmulFloor(keras.layers.Layer):
    """The block's matrix products and residual adds, nothing else."""

    def __init__(self, num_heads, mlp_dim, **kwargs):
        super().__init__(**kwargs)
        self.num_heads, self.mlp_dim = num_heads, mlp_dim

    def build(self, input_shape):
        d = input_shape[-1]
        shapes = {"qkv": (d, 3 * d), "out": (d, d),
                  "fc1": (d, self.mlp_dim), "fc2": (self.mlp_dim, d)}  # fmt: skip
        init = keras.initializers.RandomNormal(stddev=d**-0.5)
        for name, shape in shapes.items():
            setattr(self, name, self.add_weight(shape=shape, initializer=init,
                                                name=name))  # fmt: skip

    def call(self, x):
        batch, tokens, width = x.shape
        heads = (batch, tokens, self.num_heads, width // self.num_heads)
        q, k, v = ops.split(ops.matmul(x, self.qkv), 3, axis=-1)
        q, k, v = (ops.reshape(t, heads) for t in (q, k, v))
        scores = ops.einsum("bqhd,bkhd->bhqk", q, k)
        mixed = ops.einsum("bhqk,bkhd->bqhd", scores, v)
        x = x + ops.matmul(ops.reshape(mixed, x.shape), self.out)
        return x + ops.matmul(ops.matmul(x, self.fc1), self.fc2)


def build_blocks(args):
    from keras_hub.src.models.siglip.siglip_layers import SigLIPEncoderLayer

    shape = (args.batch, args.tokens, args.width)
    blocks = {
        "keras_sovit EncoderBlock": keras_sovit.layers.EncoderBlock(
            num_heads=args.num_heads, mlp_dim=args.mlp_dim
        ),
        "keras-hub SigLIPEncoderLayer": SigLIPEncoderLayer(
            hidden_dim=args.width,
            num_heads=args.num_heads,
            intermediate_dim=args.mlp_dim,
            intermediate_activation="gelu_approximate",
        ),
        "matmul floor (no LN/softmax/GELU/bias)": MatmulFloor(
            args.num_heads, args.mlp_dim
        ),
    }
    for block in blocks.values():
        block.build(shape)
    return blocks


def training_pass(block):
    """Compiled forward + backward of `sum(block(x) ** 2)`."""
    weights = block.trainable_variables

    @tf.function(jit_compile=True)
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.square(block(x)))
        return loss, tape.gradient(loss, [x] + weights)

    return step


def best_time(fn, *inputs, repeats):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        tf.nest.map_structure(lambda t: t.numpy(), fn(*inputs))
        best = min(best, time.perf_counter() - start)
    return best


def matmul_rate(size, dtype, jit_compile, repeats=8):
    a = tf.cast(tf.random.normal((size, size)), dtype)
    matmul = tf.function(tf.matmul, jit_compile=jit_compile)
    matmul(a, a).numpy()
    return 2.0 * size**3 / 1e9 / best_time(matmul, a, a, repeats=repeats)


def block_training_gflops(args):
    """3 x forward FLOPs of the block's matmuls (1 multiply-add = 2)."""
    b, n, d, m = args.batch, args.tokens, args.width, args.mlp_dim
    forward = 2 * b * n * (4 * d * d + 2 * d * m) + 2 * 2 * b * n * n * d
    return 3 * forward / 1e9


def main(argv=None):
    args = parse_args(argv)
    print(f"machine: {machine_description()}")
    print(
        f"block: batch {args.batch}, {args.tokens} tokens, width "
        f"{args.width}, MLP {args.mlp_dim}, {args.num_heads} heads; "
        "forward + backward, XLA, float32"
    )
    x = tf.random.normal((args.batch, args.tokens, args.width))
    steps = {name: training_pass(b) for name, b in build_blocks(args).items()}
    times = {name: float("inf") for name in steps}
    for step in steps.values():
        step(x)  # trace + compile
    for _ in range(args.rounds):
        for name, step in steps.items():
            t = best_time(step, x, repeats=args.repeats)
            times[name] = min(times[name], t)
    rates = {
        "XLA float32": matmul_rate(args.matmul_size, tf.float32, True),
        "XLA bfloat16": matmul_rate(args.matmul_size, tf.bfloat16, True),
        "TF no-XLA bfloat16": matmul_rate(
            args.matmul_size, tf.bfloat16, False
        ),
    }
    report(args, times, rates)


def report(args, times, rates):
    gflops = block_training_gflops(args)
    ideal = gflops / rates["XLA float32"]
    print(f"\nblock training GFLOP (matmuls): {gflops:.2f}")
    print(f"{'block':<42} {'ms':>7} {'GFLOP/s':>8}")
    for name, t in list(times.items()) + [("perfect matmuls", ideal)]:
        print(f"{name:<42} {1e3 * t:>7.1f} {gflops / t:>8.1f}")
    print(f"\n{args.matmul_size}^3 matmul rates (GFLOP/s):")
    for name, rate in rates.items():
        print(f"  {name:<30} {rate:>7.1f}")
    ours, hub, floor = times.values()
    print(f"\nratio keras_sovit / keras-hub (block): {hub / ours:.3f}")
    print(
        "ceiling: keras-hub / matmul floor = "
        f"{hub / floor:.3f}  (the most any implementation can gain at "
        "this arithmetic with these matmuls)"
    )
    print(
        f"non-matmul share of keras_sovit's block: {1 - floor / ours:.1%}; "
        f"matmul floor at {ideal / floor:.1%} of the 2048^3 rate"
    )


if __name__ == "__main__":
    main()
