"""The in-memory array pipeline and the data seam, checked against the
tf.data pipeline (an independent implementation of the same crops)."""

import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats

from keras_sovit.data import ArrayPipeline
from keras_sovit.data import arrays
from keras_sovit.data import iterate_batches

pytestmark = pytest.mark.backend_free  # NumPy, and TensorFlow as reference

HERE = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def _images(n=12, size=(20, 28), channels=1, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *size, channels)).astype("uint8")


def test_crop_and_resize_matches_tensorflows():
    import tensorflow as tf

    from keras_sovit.data import image_ops

    images = _images(6, channels=3)
    rng = np.random.default_rng(1)
    top, left, box_h, box_w = arrays.sample_crop_boxes(
        rng, 20, 28, 6, (0.05, 1.0), (0.75, 4 / 3)
    )
    for size in [(16, 16), (1, 1), (9, 31)]:
        ours = arrays.crop_and_resize(images, top, left, box_h, box_w, size)
        theirs = image_ops.crop_and_resize(
            tf.constant(images), *(tf.constant(v, tf.int32)
                                   for v in (top, left, box_h, box_w)), size,
        ).numpy()  # fmt: skip
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("size", [(16, 16), (12, 20), (30, 14)])
def test_central_resize_matches_tensorflows(size):
    import tensorflow as tf

    from keras_sovit.data import image_ops

    images = _images(3, channels=3)
    theirs = image_ops.central_resize(tf.constant(images), size).numpy()
    np.testing.assert_allclose(
        arrays.central_resize(images, size), theirs, rtol=1e-5, atol=1e-3
    )


def test_crop_boxes_follow_the_tensorflow_samplers_distribution():
    import tensorflow as tf

    from keras_sovit.data import image_ops

    n, height, width = 4000, 28, 28
    ranges = ((0.05, 1.0), (0.75, 4 / 3))
    ours = arrays.sample_crop_boxes(
        np.random.default_rng(0), height, width, n, *ranges
    )
    theirs = [v.numpy() for v in image_ops.sample_crop_boxes(
        height, width, n, *ranges, tf.constant([3, 4], tf.int64))]  # fmt: skip
    for name, a, b in [
        ("area", ours[2] * ours[3], theirs[2] * theirs[3]),
        ("aspect", ours[3] / ours[2], theirs[3] / theirs[2]),
        ("top", ours[0], theirs[0]),
    ]:
        assert scipy.stats.ks_2samp(a, b).pvalue > 0.01, name
    # Every box lies inside the image and covers the area range.
    top, left, box_h, box_w = ours
    assert np.all((top >= 0) & (top + box_h <= height))
    assert np.all((left >= 0) & (left + box_w <= width))
    fraction = box_h * box_w / (height * width)
    assert fraction.min() >= 0.03 and fraction.max() <= 1.0


def test_evaluation_batches_equal_input_pipelines():
    import tensorflow as tf

    from keras_sovit.data import input_pipeline

    images, labels = _images(10), np.arange(10) % 4
    ours = list(ArrayPipeline(images, labels, (16, 24), 4, training=False))
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    theirs = list(input_pipeline(
        ds, (16, 24), 4, training=False, num_classes=4
    ).as_numpy_iterator())  # fmt: skip
    assert [len(y) for _, y in ours] == [4, 4, 2]
    for (x, y), (tx, ty) in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(x, tx, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(y, ty)


def test_training_stream_is_seeded_shuffled_and_labelled():
    # Image i is constant 10 * label_i: any crop or flip keeps the value,
    # so every image can be matched with its one-hot label.
    labels = np.arange(40) % 10
    images = np.broadcast_to(
        (labels * 10).astype("uint8")[:, None, None], (40, 12, 12)
    )
    pipeline = ArrayPipeline(images, labels, 8, 16, training=True, seed=3)
    first = [b for _, b in zip(range(6), pipeline)]
    again = [b for _, b in zip(range(6), pipeline)]
    other = [b for _, b in zip(range(6), ArrayPipeline(
        images, labels, 8, 16, training=True, seed=4))]  # fmt: skip
    for (x, y), (ax, ay) in zip(first, again):
        np.testing.assert_array_equal(x, ax)
        np.testing.assert_array_equal(y, ay)
    assert any(not np.array_equal(y, oy) for (_, y), (_, oy)
               in zip(first, other))  # fmt: skip
    for x, y in first:
        assert x.shape == (16, 8, 8, 3) and y.shape == (16, 10)
        pixel = (x[:, 0, 0, 0] + 1.0) * 127.5
        np.testing.assert_allclose(pixel, 10 * y.argmax(1), atol=1e-3)
    # A pass of 40 examples in batches of 16 drops the 8 left over; the
    # two full batches of each pass hold distinct examples.
    assert len(pipeline) == 2 and pipeline.infinite


def test_training_crops_and_flips_change_an_asymmetric_image():
    image = np.zeros((1, 16, 16), "uint8")
    image[0, :, :4] = 255  # a bright left edge
    pipeline = ArrayPipeline(
        np.repeat(image, 64, 0), np.zeros(64, int), 16, 64, training=True,
        random_crop=False,
    )
    x, _ = next(iter(pipeline))
    left = x[:, :, 0, 0].mean(1) > 0
    # The flip is a fair coin per image: about half keep the left edge.
    assert 16 < left.sum() < 48


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"labels": np.array([0, 1, 6])}, "labels"),
        ({"labels": np.array([0, -1, 2])}, "labels"),
        ({"labels": np.array([0, 1])}, "labels"),
        ({"images": np.full((3, 8, 8), np.nan)}, "finite"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 4, "training": True}, "drop_remainder"),
        ({"seed": 1.5}, "seed"),
        ({"crop_area_range": (0.5, 2.0)}, "crop_area_range"),
        ({"num_classes": 2}, r"labels"),
    ],
)
def test_bad_inputs_name_the_argument(kwargs, message):
    args = dict(
        images=np.zeros((3, 8, 8)), labels=np.array([0, 1, 2]),
        image_size=8, batch_size=2, training=False, num_classes=6,
    )  # fmt: skip
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        ArrayPipeline(**args)


def test_iterate_batches_reads_every_source_alike():
    import tensorflow as tf

    images, labels = _images(5), np.arange(5)
    sources = {
        "arrays": (images, labels),
        "dataset": tf.data.Dataset.from_tensor_slices((images, labels)),
        "dict dataset": tf.data.Dataset.from_tensor_slices(
            {"image": images, "label": labels}),
        "iterable": [(images[:2], labels[:2]), (images[2:4], labels[2:4]),
                     (images[4:], labels[4:])],
    }  # fmt: skip
    for name, source in sources.items():
        batches = list(iterate_batches(source, batch_size=2))
        assert [len(y) for _, y in batches] == [2, 2, 1], name
        np.testing.assert_array_equal(
            np.concatenate([x for x, _ in batches]), images, err_msg=name
        )
    endless = ArrayPipeline(images, labels, 8, 2, training=True)
    with pytest.raises(ValueError, match="val_data"):
        iterate_batches(endless, "val_data", one_pass=True)
    with pytest.raises(ValueError, match="val_data.*infinite"):
        iterate_batches(sources["dataset"].repeat(), "val_data", 2,
                        one_pass=True)  # fmt: skip
    with pytest.raises(ValueError, match="an iterable of"):
        iterate_batches(3)
    with pytest.raises(ValueError, match=r"\(x, y\) pairs"):
        list(iterate_batches([images]))


TRIAL_WITHOUT_TENSORFLOW = """
import importlib.machinery
import sys

# As if TensorFlow were not installed: `import tensorflow` raises
# ModuleNotFoundError (find_spec still answers, as torch._dynamo asks).
class Absent:
    def create_module(self, spec):
        raise ModuleNotFoundError(f"No module named {spec.name!r}")

    def exec_module(self, module):
        pass

class BlockTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            return importlib.machinery.ModuleSpec(name, Absent())

sys.meta_path.insert(0, BlockTensorFlow())
import keras_tuner
import numpy as np
import keras_sovit
from keras_sovit.data import ArrayPipeline
from keras_sovit.evaluation import ValidationEvaluator
from keras_sovit.tuner import SoViTHyperModel

rng = np.random.default_rng(0)
labels = np.arange(256) % 4
images = np.where(
    (labels[:, None, None] == np.arange(16)[None, None, :] // 4),
    255, 0).astype("uint8") * np.ones((256, 16, 16), "uint8")
images = (images + rng.integers(0, 40, images.shape)).clip(0, 255)
val = (images[:64, ..., None].repeat(3, -1) / 127.5 - 1, labels[:64])
shape = keras_sovit.ShapeSpec(16, 1, 32, 2, patch_size=4)
hypermodel = SoViTHyperModel(num_classes=4, image_shape=(16, 16, 3),
                             batch_size=16)
hp = keras_tuner.HyperParameters()
hp.values.update(shape.to_dict(), compute_gflops=shape.gflops(16) * 16 * 80,
                 phase="grid")
model = hypermodel.build(hp)
untrained = ValidationEvaluator(val).evaluate(model)["val_loss"]
metrics = hypermodel.fit(
    hp, model,
    x=lambda seed: ArrayPipeline(images, labels, 16, 16, True, seed=seed),
    validation_data=val,
)
assert "tensorflow" not in sys.modules, "TensorFlow was imported"
print("steps", hypermodel.last_run.records[-1]["steps"])
print("untrained", untrained, "trained", metrics["val_loss"],
      "se", metrics["val_loss_se"])
assert metrics["val_loss"] < untrained - 3 * metrics["val_loss_se"]
"""


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_a_trial_trains_without_tensorflow(backend):
    result = subprocess.run(
        [sys.executable, "-c", TRIAL_WITHOUT_TENSORFLOW], cwd=HERE,
        env=dict(os.environ, KERAS_BACKEND=backend), capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "steps 80" in result.stdout
