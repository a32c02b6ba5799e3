"""What destroying a training iterator costs, with tf.data's autotuner on
and off (`keras_sovit.training.branched.without_autotune`).

Each round builds the demo's training pipeline (animal_mnist, 28 px, batch
64, the small recipe's crops, a new seed per round), trains the demo's star
centre (64/4/256, patch 4) on it with `train_on_batch` for `--seconds`,
pausing `--pause` seconds every 100 batches as a trial's evaluations do,
and then times `del iterator`: the end of every `BranchedRun`. Rounds
alternate between the two settings, so both see the same machine load.
Also timed, per setting: the pipeline alone (ms per batch after 50 warm-up
batches), to show what the autotuner buys.

Usage: python benchmarks/iterator_teardown.py [--rounds N] [--seconds S]
    [--pause S] [--data_dir DIR]
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_sovit as ks  # noqa: E402
from keras_sovit.training.branched import without_autotune  # noqa: E402

SETTINGS = ("autotune on", "autotune off")


def pipeline(data_dir, seed, autotune):
    crops = ks.training.pipeline_kwargs(
        ks.training.recipe(1000, preset="small", num_classes=10)
    )
    ds = ks.data.input_pipeline(
        ks.data.load("animal_mnist", "train", data_dir=data_dir),
        image_size=28, batch_size=64, training=True, num_classes=10,
        seed=seed, **crops,
    )
    return ds if autotune else without_autotune(ds)


def centre_model():
    backbone = ks.models.SoViTBackbone(
        ks.ShapeSpec(64, 4, 256, 4, patch_size=4), image_shape=(28, 28, 3)
    )
    model = ks.models.SoViTClassifier(backbone, num_classes=10)
    ks.training.compile_for_pretraining(
        model, total_steps=10_000, preset="small", cooldown_steps=0
    )
    return model


def teardown_seconds(model, dataset, seconds, pause):
    iterator = dataset.as_numpy_iterator()
    begin, batches = time.perf_counter(), 0
    while time.perf_counter() - begin < seconds:
        model.train_on_batch(*next(iterator))
        batches += 1
        if batches % 100 == 0:
            time.sleep(pause)
    begin = time.perf_counter()
    del iterator
    return time.perf_counter() - begin


def ms_per_batch(dataset, batches=500):
    iterator = dataset.as_numpy_iterator()
    for _ in range(50):
        next(iterator)
    begin = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return (time.perf_counter() - begin) / batches * 1000


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=25.0)
    parser.add_argument("--pause", type=float, default=3.0)
    parser.add_argument("--data_dir", default=None)
    args = parser.parse_args(argv)
    data_dir = ks.data.prepare("animal_mnist", data_dir=args.data_dir)
    print(f"backend={keras.backend.backend()} tensorflow={tf.__version__} "
          f"rounds={args.rounds} seconds={args.seconds} pause={args.pause}")
    model = centre_model()
    teardown = {name: [] for name in SETTINGS}
    rate = {name: [] for name in SETTINGS}
    for round_ in range(args.rounds):
        for name in SETTINGS:
            autotune = name == "autotune on"
            dataset = pipeline(data_dir, round_, autotune)
            teardown[name].append(
                teardown_seconds(model, dataset, args.seconds, args.pause)
            )
            rate[name].append(ms_per_batch(pipeline(data_dir, round_,
                                                    autotune)))
            print(f"round {round_} {name}: teardown "
                  f"{teardown[name][-1]:.2f} s, pipeline "
                  f"{rate[name][-1]:.2f} ms/batch", flush=True)
    for name in SETTINGS:
        print(f"{name}: teardown median {statistics.median(teardown[name]):.2f}"
              f" s, max {max(teardown[name]):.2f} s, total "
              f"{sum(teardown[name]):.1f} s; pipeline median "
              f"{statistics.median(rate[name]):.2f} ms/batch")
    on, off = (statistics.median(rate[name]) for name in SETTINGS)
    print(f"pipeline time, off / on: {off / on:.2f}")
    return teardown, rate


if __name__ == "__main__":
    main()
