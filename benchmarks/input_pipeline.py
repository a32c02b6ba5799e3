"""Input pipeline throughput versus model training throughput.

At the demo settings (animal_mnist, 32 px, batch 64, training=True with
InceptionCrop + flip), measures:

- the pipeline alone: images/s when iterating `input_pipeline(...)`;
- the model alone: training images/s of `train_on_batch` on one in-memory
  batch (a tiny SoViT when `keras_sovit.models.SoViTBackbone` exists, else
  a small ViT-like Keras model; the script says which);

and prints the ratio. The goal is pipeline >= 10x model, so the pipeline is
never the bottleneck.

Usage: python benchmarks/input_pipeline.py [--data_dir DIR] [--rounds N]
    [--batches N] [--steps N] [--image_size PX]
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_sovit  # noqa: E402
import keras_sovit.data  # noqa: E402

IMAGE_SIZE = 32
BATCH_SIZE = 64
NUM_CLASSES = 10
PATCH_SIZE = 4
WIDTH = 64
DEPTH = 2
MLP_DIM = 128
NUM_HEADS = 4


def make_pipeline_iterator(data_dir, warmup=20):
    ds = keras_sovit.data.load("animal_mnist", "train", data_dir=data_dir)
    train = keras_sovit.data.input_pipeline(
        ds, IMAGE_SIZE, BATCH_SIZE, training=True, seed=0
    )
    iterator = iter(train)
    for _ in range(warmup):
        next(iterator)
    return iterator


def pipeline_images_per_second(iterator, batches):
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * BATCH_SIZE / (time.perf_counter() - start)


def _sovit_model():
    shape = keras_sovit.ShapeSpec(WIDTH, DEPTH, MLP_DIM, NUM_HEADS, PATCH_SIZE)
    backbone = keras_sovit.models.SoViTBackbone(
        shape, image_shape=(IMAGE_SIZE, IMAGE_SIZE, 3)
    )
    model = keras_sovit.models.SoViTClassifier(backbone, NUM_CLASSES)
    return model, f"tiny SoViTClassifier ({shape}, MAP head)"


def _vit_like_model():
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3))
    x = keras.layers.Conv2D(WIDTH, PATCH_SIZE, strides=PATCH_SIZE)(inputs)
    x = keras.layers.Reshape((-1, WIDTH))(x)
    num_tokens = (IMAGE_SIZE // PATCH_SIZE) ** 2
    x = x + keras.layers.Embedding(num_tokens, WIDTH)(np.arange(num_tokens))
    for _ in range(DEPTH):
        y = keras.layers.LayerNormalization(epsilon=1e-6)(x)
        y = keras.layers.MultiHeadAttention(NUM_HEADS, WIDTH // NUM_HEADS)(y, y)
        x = x + y
        y = keras.layers.LayerNormalization(epsilon=1e-6)(x)
        y = keras.layers.Dense(MLP_DIM, activation="gelu")(y)
        x = x + keras.layers.Dense(WIDTH)(y)
    x = keras.layers.LayerNormalization(epsilon=1e-6)(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = keras.layers.Dense(NUM_CLASSES)(x)
    description = (
        f"ViT-like Keras model (patch {PATCH_SIZE}, width {WIDTH}, depth "
        f"{DEPTH}, MLP {MLP_DIM}, {NUM_HEADS} heads, GAP head); "
        "keras_sovit.models.SoViTBackbone was not available"
    )
    return keras.Model(inputs, outputs), description


def build_model():
    models = getattr(keras_sovit, "models", None)
    if models is not None and hasattr(models, "SoViTBackbone"):
        return _sovit_model()
    return _vit_like_model()


def make_model_step(warmup=3):
    model, description = build_model()
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-3),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (BATCH_SIZE, IMAGE_SIZE, IMAGE_SIZE, 3))
    y = np.eye(NUM_CLASSES)[rng.integers(0, NUM_CLASSES, BATCH_SIZE)]
    x, y = x.astype("float32"), y.astype("float32")
    for _ in range(warmup):
        model.train_on_batch(x, y)
    return (lambda: model.train_on_batch(x, y)), description, model


def model_images_per_second(step, steps):
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return BATCH_SIZE / statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--image_size", type=int, default=IMAGE_SIZE)
    args = parser.parse_args()
    globals()["IMAGE_SIZE"] = args.image_size

    data_dir = keras_sovit.data.prepare("animal_mnist", args.data_dir)
    iterator = make_pipeline_iterator(data_dir)
    step, description, model = make_model_step()
    # Alternate the two measurements so that a shared, busy machine slows
    # both alike; report medians over the rounds.
    pipeline_rates, model_rates = [], []
    for _ in range(args.rounds):
        pipeline_rates.append(
            pipeline_images_per_second(iterator, args.batches)
        )
        model_rates.append(model_images_per_second(step, args.steps))
    ratios = [p / m for p, m in zip(pipeline_rates, model_rates)]
    ratio = statistics.median(ratios)
    print(f"backend: {keras.backend.backend()}, cpus: {os.cpu_count()}")
    print(
        f"settings: animal_mnist, {IMAGE_SIZE} px, batch {BATCH_SIZE}, "
        "training=True (InceptionCrop + flip)"
    )
    print(f"model: {description}, {model.count_params():,} params")
    print(
        f"pipeline: {statistics.median(pipeline_rates):,.0f} images/s "
        f"(median of {args.rounds} rounds of {args.batches} batches)"
    )
    print(
        f"model training: {statistics.median(model_rates):,.0f} images/s "
        f"(train_on_batch, median step of {args.rounds} x {args.steps})"
    )
    print(
        f"ratio pipeline / model: {ratio:.1f}x median, "
        f"{min(ratios):.1f}x worst round (goal >= 10x)"
    )
    return 0 if ratio >= 10 else 1


if __name__ == "__main__":
    sys.exit(main())
