"""Accelerator training throughput: keras_sovit vs keras-hub vs timm.

A benchmark, not a test. In one process, for each shape, it times the
training step (forward, backward and AdamW update on one batch kept on the
device, bf16 mixed precision by default, the step's loss read back so the
timing is synchronous; median over `--steps` steps after `--warmup`) of

- `SoViTBackbone` + `SoViTClassifier`'s head (Keras, `--backend` jax or
  torch; no TensorFlow is imported),
- keras-hub's `SigLIPVisionEncoder` of the same shape + the same head
  (same backend; skipped when keras-hub is not installed),
- timm's SigLIP `VisionTransformer` of the same shape (MAP pooling, no class
  token) + head, in torch with bf16 autocast (skipped without timm),

with attention `flash` on (`auto`: Keras and torch use a fused kernel
wherever the device has one; a CPU has none, so there it is the exact path
as well) and `off`, and `remat` on and off (keras_sovit's `remat=True`,
timm's `set_grad_checkpointing()`; keras-hub has no such option). It prints
img/s, step time, compile time (the first step: trace, compile and run) and
MFU: 3 x forward FLOPs (`ShapeSpec.gflops`) x img/s over the bf16 matmul
rate measured on the same device, by the same framework, in the same run.
Ratios compare keras_sovit with each competitor at the same setting.

Usage:

    python benchmarks/accelerator_throughput.py                # So400m/14, B/16
    python benchmarks/accelerator_throughput.py --backend torch
    python benchmarks/accelerator_throughput.py --tiny         # CPU smoke run
    python benchmarks/accelerator_throughput.py --shapes B/16 --batch 128

keras-hub is a benchmark-only dependency: `pip install keras-hub==0.32.0`.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir))
# Runs as on an accelerator machine without TensorFlow: any import of it
# fails (keras-hub then skips its tf.data helpers). Loading TensorFlow
# beside torch's triton would also crash some machines (see conftest.py).
sys.modules["tensorflow"] = None

SHAPES = {
    # name: (width, depth, mlp_dim, num_heads, patch_size, image_size)
    "So400m/14": (1152, 27, 4304, 16, 14, 224),
    "B/16": (768, 12, 3072, 12, 16, 224),
    "tiny": (64, 2, 128, 4, 8, 32),
}
# The "auto" rows come first: Keras can switch flash off, but has no
# public call that gives back its default (None: decide per call).
SETTINGS = [("auto", False), ("auto", True), ("off", False), ("off", True)]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="jax", choices=("jax", "torch"))
    parser.add_argument("--shapes", nargs="+", default=["So400m/14", "B/16"],
                        choices=sorted(SHAPES))  # fmt: skip
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps")
    parser.add_argument("--num_classes", type=int, default=1000)
    parser.add_argument("--dtype_policy", default="mixed_bfloat16")
    parser.add_argument("--matmul_size", type=int, default=8192)
    parser.add_argument(
        "--skip", nargs="*", default=[],
        choices=("keras_sovit", "keras_hub", "timm"),
    )  # fmt: skip
    parser.add_argument("--tiny", action="store_true",
                        help="CPU smoke run: the tiny shape, batch 8, "
                        "3 steps, a 512^3 matmul")  # fmt: skip
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    if args.tiny:
        args.shapes, args.batch, args.steps, args.warmup = ["tiny"], 8, 3, 1
        args.num_classes, args.matmul_size = 10, 512
    for name in ("batch", "steps", "num_classes", "matmul_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1: {getattr(args, name)}")
    if args.warmup < 0:
        parser.error(f"--warmup must be >= 0: {args.warmup}")
    return args


def timed_steps(step, steps, warmup):
    """(first-step seconds, median step seconds, first loss, last loss)."""
    start = time.perf_counter()
    first_loss = step()
    compile_s = time.perf_counter() - start
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - start)
    return compile_s, statistics.median(times), first_loss, loss


class KerasBench:
    """The Keras models on the configured backend, batch on the device."""

    def __init__(self, args):
        import keras
        import numpy as np

        self.keras, self.args = keras, args
        keras.config.set_dtype_policy(args.dtype_policy)
        self.np = np

    def batch(self, image_size):
        rng = self.np.random.default_rng(0)
        args, ops = self.args, self.keras.ops
        x = rng.uniform(-1, 1, (args.batch, image_size, image_size, 3))
        labels = rng.integers(0, args.num_classes, args.batch)
        y = self.np.eye(args.num_classes)[labels]
        return (ops.convert_to_tensor(x.astype("float32")),
                ops.convert_to_tensor(y.astype("float32")))  # fmt: skip

    def set_flash(self, flash):
        if flash == "off":
            self.keras.config.disable_flash_attention()
        elif self.keras.config.is_flash_attention_enabled() is False:
            raise RuntimeError("flash 'auto' after 'off': see SETTINGS")

    def sovit(self, spec, image_size, remat):
        import keras_sovit

        self.keras.utils.set_random_seed(0)  # every setting, same weights
        backbone = keras_sovit.models.SoViTBackbone(
            spec, image_shape=(image_size, image_size, 3), remat=remat
        )
        return keras_sovit.models.SoViTClassifier(
            backbone, self.args.num_classes
        )

    def keras_hub(self, spec, image_size):
        from competitors import keras_hub_siglip

        self.keras.utils.set_random_seed(0)
        return keras_hub_siglip(
            spec, image_size, self.args.num_classes, self.args.dtype_policy
        )

    def time(self, model, x, y):
        model.compile(
            optimizer=self.keras.optimizers.AdamW(1e-3),
            loss=self.keras.losses.CategoricalCrossentropy(from_logits=True),
            jit_compile=self.keras.backend.backend() == "jax",
        )

        def step():  # the loss comes back to the host: synchronous
            return float(self.np.asarray(model.train_on_batch(x, y)))

        return (model.count_params(),) + timed_steps(
            step, self.args.steps, self.args.warmup
        )

    def matmul_rate(self, size):
        return matmul_rate_of(self.keras.backend.backend(), size)


def matmul_rate_of(framework, size, repeats=10):
    """Best bf16 (size x size) @ (size x size) TFLOP/s of one framework."""
    if framework == "jax":
        import jax
        import jax.numpy as jnp

        a = jnp.ones((size, size), jnp.bfloat16)
        f = jax.jit(lambda a: a @ a)
        f(a).block_until_ready()

        def run():
            f(a).block_until_ready()
    else:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        a = torch.ones((size, size), dtype=torch.bfloat16, device=device)

        def run():
            (a @ a).sum().item()

        run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best / 1e12


class TimmBench:
    """timm's SigLIP VisionTransformer in torch, bf16 autocast."""

    def __init__(self, args):
        import timm  # noqa: F401  (fails early when timm is missing)
        import torch

        self.torch, self.args = torch, args
        self.device = "cuda" if torch.cuda.is_available() else "cpu"

    def time(self, spec, image_size, flash, remat):
        import timm.layers
        from timm.models.vision_transformer import VisionTransformer

        torch, args = self.torch, self.args
        torch.manual_seed(0)
        # timm reads its fused-attention switch when a block is built.
        timm.layers.set_fused_attn(flash != "off")
        model = VisionTransformer(
            img_size=image_size, patch_size=spec.patch_size,
            embed_dim=spec.width, depth=spec.depth,
            num_heads=spec.num_heads, mlp_ratio=spec.mlp_dim / spec.width,
            class_token=False, global_pool="map",
            num_classes=args.num_classes, act_layer="gelu_tanh",
        ).to(self.device)  # fmt: skip
        model.set_grad_checkpointing(remat)
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        x = torch.rand(args.batch, 3, image_size, image_size,
                       device=self.device) * 2 - 1  # fmt: skip
        labels = torch.randint(0, args.num_classes, (args.batch,),
                               device=self.device)  # fmt: skip

        def step():
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(self.device, dtype=torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(model(x), labels)
            loss.backward()
            optimizer.step()
            return loss.item()  # synchronises the device

        n_params = sum(p.numel() for p in model.parameters())
        return (n_params,) + timed_steps(step, args.steps, args.warmup)


def machine_description(backend):
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f
                       if line.startswith("model name"))  # fmt: skip
    except (OSError, StopIteration):
        pass
    device = "no GPU"
    if backend == "jax":
        import jax

        device = f"JAX {jax.__version__} on {jax.devices()[0].device_kind}"
    try:
        import torch

        if torch.cuda.is_available():
            device += f"; torch {torch.__version__} on "
            device += torch.cuda.get_device_name()
        else:
            device += f"; torch {torch.__version__} on CPU"
    except ImportError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs | {device}"


def run_rows(args, spec, image_size, keras_bench, timm_bench):
    """Every (model, flash, remat) row of one shape."""
    rows = []

    def add(model, flash, remat, measure):
        row = {"shape": spec.name, "model": model, "flash": flash,
               "remat": remat}  # fmt: skip
        try:
            n, compile_s, step_s, first, last = measure()
            row.update(
                status="ok", params=n, compile_s=compile_s, step_s=step_s,
                first_loss=first, last_loss=last,
            )  # fmt: skip
        except Exception as error:  # a row that cannot run says why
            row.update(status=f"failed: {type(error).__name__}: {error}")
        rows.append(row)
        print_row(row, args.batch)

    for flash, remat in SETTINGS:
        if keras_bench and "keras_sovit" not in args.skip:
            keras_bench.set_flash(flash)
            add("keras_sovit", flash, remat, lambda: keras_bench.time(
                keras_bench.sovit(spec.shape, image_size, remat),
                *keras_bench.batch(image_size)))  # fmt: skip
        if keras_bench and "keras_hub" not in args.skip and not remat:
            keras_bench.set_flash(flash)
            add("keras_hub", flash, remat, lambda: keras_bench.time(
                keras_bench.keras_hub(spec.shape, image_size),
                *keras_bench.batch(image_size)))  # fmt: skip
        if timm_bench and "timm" not in args.skip:
            add("timm", flash, remat, lambda: timm_bench.time(
                spec.shape, image_size, flash, remat))  # fmt: skip
    return rows


def print_row(row, batch):
    label = f"{row['shape']:<10} {row['model']:<12} {row['flash']:<5} "
    label += f"{'on' if row['remat'] else 'off':<5}"
    if row["status"] != "ok":
        print(f"{label} {row['status']}")
        return
    print(
        f"{label} {row['params']:>12,} {row['step_s'] * 1e3:>9.1f} "
        f"{batch / row['step_s']:>8.1f} {row['compile_s']:>8.1f} "
        f"loss {row['first_loss']:.3f} -> {row['last_loss']:.3f}"
    )


class Shape:
    def __init__(self, name, fields):
        import keras_sovit

        *dims, self.image_size = fields
        self.name, self.shape = name, keras_sovit.ShapeSpec(*dims)


def main(argv=None):
    args = parse_args(argv)
    os.environ["KERAS_BACKEND"] = args.backend
    keras_bench = KerasBench(args)
    if "keras_hub" not in args.skip:
        try:
            import keras_hub  # noqa: F401
        except ImportError:
            print("keras-hub not installed: its rows are skipped")
            args.skip.append("keras_hub")
    timm_bench = None
    if "timm" not in args.skip:
        try:
            timm_bench = TimmBench(args)
        except ImportError:
            print("timm (or torch) not installed: its rows are skipped")
            args.skip.append("timm")
    import keras

    print(f"machine: {machine_description(args.backend)}")
    print(f"Keras {keras.__version__}, backend {args.backend}, policy "
          f"{args.dtype_policy}, batch {args.batch}, {args.steps} timed "
          f"steps after {args.warmup}")  # fmt: skip
    rates = {"keras": keras_bench.matmul_rate(args.matmul_size)}
    if timm_bench:
        rates["timm"] = matmul_rate_of("torch", args.matmul_size)
    print("bf16 matmul %d^3: " % args.matmul_size + ", ".join(
        f"{k} {v:.2f} TFLOP/s" for k, v in rates.items()))  # fmt: skip
    print(
        f"{'shape':<10} {'model':<12} {'flash':<5} {'remat':<5} "
        f"{'params':>12} {'step ms':>9} {'img/s':>8} {'first s':>8}"
    )
    rows = []
    for name in args.shapes:
        shape = Shape(name, SHAPES[name])
        rows += run_rows(args, shape, shape.image_size, keras_bench,
                         timm_bench)  # fmt: skip
        forward = shape.shape.gflops(
            shape.image_size, num_classes=args.num_classes, pool_type="map"
        )
        for row in rows:
            if row["shape"] == name and row["status"] == "ok":
                rate = rates["timm" if row["model"] == "timm" else "keras"]
                row["img_s"] = args.batch / row["step_s"]
                row["mfu"] = 3 * forward * row["img_s"] / (rate * 1e3)
                row["forward_gflops"] = forward
    report(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rates_tflops": rates, "rows": rows}, f, indent=1)
    return rows


def report(rows):
    """MFU per row and keras_sovit's img/s ratio against each competitor."""
    print("\nMFU (3 x forward FLOPs x img/s / the framework's bf16 matmul "
          "rate) and ratios at equal settings:")  # fmt: skip
    ok = {(r["shape"], r["model"], r["flash"], r["remat"]): r
          for r in rows if r["status"] == "ok"}  # fmt: skip
    for (shape, model, flash, remat), row in ok.items():
        line = (
            f"{shape:<10} {model:<12} flash {flash:<4} remat "
            f"{'on ' if remat else 'off'}  MFU {row['mfu']:.3f}"
        )
        if model == "keras_sovit":
            for other in ("keras_hub", "timm"):
                rival = ok.get((shape, other, flash, remat))
                if rival:
                    line += f"  / {other} {row['img_s'] / rival['img_s']:.3f}"
        print(line)


if __name__ == "__main__":
    main()
