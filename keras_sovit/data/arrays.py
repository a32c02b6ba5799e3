"""The in-memory array pipeline: `input_pipeline`'s training and evaluation
preprocessing for images held in a NumPy array, with no TensorFlow.

A JAX or torch user, or an accelerator machine without TensorFlow, trains
a trial from it; the crops follow `input_pipeline`'s semantics (the
InceptionCrop sampler of `keras_sovit.data.image_ops` and corner-aligned
bilinear sampling; the largest central box for evaluation), drawn from
NumPy's generator instead of TensorFlow's stateless one.
"""

import numbers

import numpy as np

from keras_sovit._validation import check_bool
from keras_sovit._validation import check_class_labels
from keras_sovit._validation import check_finite_values
from keras_sovit._validation import check_positive_int
from keras_sovit._validation import check_range_pair
from keras_sovit._validation import image_hw

# big_vision's `inception_crop` defaults: area 5-100 % of the image, aspect
# ratio (width / height) in TF's sample_distorted_bounding_box default
# range; `image_ops` (TensorFlow) imports them from here.
INCEPTION_AREA_RANGE = (0.05, 1.0)
INCEPTION_ASPECT_RATIO_RANGE = (3.0 / 4.0, 4.0 / 3.0)
MAX_ATTEMPTS = 10


def sample_crop_boxes(rng, height, width, batch, area_range,
                      aspect_ratio_range):  # fmt: skip
    """`batch` InceptionCrop boxes `(top, left, box_h, box_w)` (int arrays).

    As `image_ops.sample_crop_boxes`: up to `MAX_ATTEMPTS` candidates draw
    an area uniformly in `area_range` times the image area and an aspect
    ratio (width / height) uniformly in `aspect_ratio_range`; the first
    that fits wins, else the whole image; the offset is uniform over the
    positions that keep the box inside.
    """
    area = rng.uniform(*area_range, (batch, MAX_ATTEMPTS)) * height * width
    aspect = rng.uniform(*aspect_ratio_range, (batch, MAX_ATTEMPTS))
    box_h = np.round(np.sqrt(area / aspect)).astype(np.int64)
    box_w = np.round(np.sqrt(area * aspect)).astype(np.int64)
    fits = (box_h >= 1) & (box_h <= height) & (box_w >= 1) & (box_w <= width)
    first = np.argmax(fits, axis=1)
    found = fits.any(axis=1)
    rows = np.arange(batch)
    box_h = np.where(found, box_h[rows, first], height)
    box_w = np.where(found, box_w[rows, first], width)
    offsets = rng.uniform(size=(batch, 2))
    top = np.minimum((offsets[:, 0] * (height - box_h + 1)).astype(np.int64),
                     height - box_h)  # fmt: skip
    left = np.minimum((offsets[:, 1] * (width - box_w + 1)).astype(np.int64),
                      width - box_w)  # fmt: skip
    return top, left, box_h, box_w


def _sample_points(start, length, size):
    """Where `size` output pixels sample a box of `length` pixels from
    `start`: corner pixels at the centres of the box's corner pixels
    (`tf.image.crop_and_resize`); one pixel samples the box's middle."""
    start = np.asarray(start, np.float64)[:, None]
    length = np.asarray(length, np.float64)[:, None]
    if size == 1:
        return start + (length - 1) / 2
    return start + np.arange(size)[None] * (length - 1) / (size - 1)


def _bilinear(images, ys, xs):
    """Samples `images[b]` at rows `ys[b]` and columns `xs[b]` (floats)."""
    height, width = images.shape[1:3]
    y0 = np.clip(np.floor(ys), 0, height - 1).astype(np.int64)
    x0 = np.clip(np.floor(xs), 0, width - 1).astype(np.int64)
    y1, x1 = np.minimum(y0 + 1, height - 1), np.minimum(x0 + 1, width - 1)
    wy = (ys - y0)[:, :, None, None]
    wx = (xs - x0)[:, None, :, None]
    b = np.arange(len(images))[:, None, None]

    def at(y, x):
        return images[b, y[:, :, None], x[:, None, :]].astype(np.float32)

    top = at(y0, x0) * (1 - wx) + at(y0, x1) * wx
    bottom = at(y1, x0) * (1 - wx) + at(y1, x1) * wx
    return (top * (1 - wy) + bottom * wy).astype(np.float32)


def crop_and_resize(images, top, left, box_h, box_w, size):
    """One box of each image, resized bilinearly to `size` (float32)."""
    ys = _sample_points(top, box_h, size[0])
    xs = _sample_points(left, box_w, size[1])
    return _bilinear(np.asarray(images), ys, xs)


def central_resize(images, size):
    """The largest central box with the output's aspect ratio, resized
    bilinearly with half-pixel centres (`tf.image.resize`), as
    `image_ops.central_resize` does for evaluation."""
    images = np.asarray(images)
    height, width = images.shape[1:3]
    target = size[0] / size[1]
    crop_h = min(height, int(np.round(width * target)))
    crop_w = min(width, int(np.round(height / target)))
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    crop = images[:, top:top + crop_h, left:left + crop_w]

    def points(n_in, n_out):
        return np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0,
                       n_in - 1)  # fmt: skip

    ys = np.broadcast_to(points(crop_h, size[0]), (len(crop), size[0]))
    xs = np.broadcast_to(points(crop_w, size[1]), (len(crop), size[1]))
    return _bilinear(crop, ys, xs)


class ArrayPipeline:
    """Batches of `(images, one-hot labels)` from arrays, without TensorFlow.

    The NumPy counterpart of `keras_sovit.data.input_pipeline` for data
    that fits in memory (`animal_mnist`, CIFAR-sized sets): for training,
    a seeded shuffle per pass, InceptionCrop (area in `crop_area_range`,
    aspect in `crop_aspect_ratio_range`, corner-aligned bilinear resize),
    a random left-right flip, batches of exactly `batch_size`
    (`drop_remainder`), repeated forever; for evaluation, the largest
    central crop with the output's aspect ratio, resized, one pass in
    order. Images come out float32 in `[-1, 1]` (a single channel repeated
    to three with `grayscale_to_rgb`), labels float32 one-hot.

    Iterating again replays the same stream (the generator restarts from
    `seed`), so a trial's batches are reproducible whatever ran before.
    It is a plain iterable of NumPy batches: `BranchedRun`,
    `SoViTHyperModel` (as `x=lambda seed: ArrayPipeline(..., seed=seed)`),
    `model.fit` and the evaluators take it on every backend.

    Args:
        images: array `(N, H, W)` or `(N, H, W, C)`, values in `[0, 255]`.
        labels: int class ids `(N,)` in `[0, num_classes)`, or one-hot
            floats `(N, num_classes)`.
        image_size: int or `(height, width)`. Output image size.
        batch_size: int. Batch size.
        training: bool. Training (random, repeated) or evaluation.
        num_classes: int or `None`. One-hot width; inferred from one-hot
            labels or as `max(labels) + 1`. Defaults to `None`.
        seed: int. Seed of shuffling, crops and flips. Defaults to `0`.
        grayscale_to_rgb: bool. Defaults to `True`.
        random_crop: bool. InceptionCrop when training (else the central
            resize). Defaults to `True`.
        random_flip: bool. Random left-right flip when training. Defaults
            to `True`.
        crop_area_range: pair of floats. Defaults to `(0.05, 1.0)`.
        crop_aspect_ratio_range: pair of floats. Defaults to `(3/4, 4/3)`.
        repeat: bool or `None`. Repeat forever. Defaults to `training`.
        drop_remainder: bool or `None`. Defaults to `training`.

    Example:

    ```python
    import numpy as np
    import keras_sovit

    images = np.random.default_rng(0).integers(0, 256, (100, 28, 28))
    labels = np.arange(100) % 10
    train = keras_sovit.data.ArrayPipeline(
        images, labels, image_size=16, batch_size=32, training=True, seed=1
    )
    x, y = next(iter(train))  # (32, 16, 16, 3) in [-1, 1], (32, 10)
    ```
    """

    def __init__(self, images, labels, image_size, batch_size, training,
                 num_classes=None, seed=0, grayscale_to_rgb=True,
                 random_crop=True, random_flip=True,
                 crop_area_range=INCEPTION_AREA_RANGE,
                 crop_aspect_ratio_range=INCEPTION_ASPECT_RATIO_RANGE,
                 repeat=None, drop_remainder=None):  # fmt: skip
        self.images = _check_images(images)
        self.training = check_bool("training", training, allow_none=False)
        self.labels, self.num_classes = _one_hot_labels(
            labels, len(self.images), num_classes
        )
        self.image_size = image_hw(image_size)
        self.batch_size = check_positive_int("batch_size", batch_size)
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise ValueError(f"`seed` must be an int. Received: seed={seed!r}")
        self.seed = int(seed)
        self.grayscale_to_rgb = check_bool(
            "grayscale_to_rgb", grayscale_to_rgb, allow_none=False
        )
        self.random_crop = check_bool("random_crop", random_crop,
                                      allow_none=False)  # fmt: skip
        self.random_flip = check_bool("random_flip", random_flip,
                                      allow_none=False)  # fmt: skip
        self.crop_area_range = check_range_pair(
            "crop_area_range", crop_area_range, 1.0
        )
        self.crop_aspect_ratio_range = check_range_pair(
            "crop_aspect_ratio_range", crop_aspect_ratio_range
        )
        self.repeat = training if repeat is None else check_bool(
            "repeat", repeat, allow_none=False
        )
        self.drop_remainder = training if drop_remainder is None else (
            check_bool("drop_remainder", drop_remainder, allow_none=False)
        )
        if self.drop_remainder and len(self.images) < self.batch_size:
            raise ValueError(
                f"`images` has fewer examples ({len(self.images)}) than one "
                f"batch with drop_remainder=True. Received: batch_size="
                f"{self.batch_size}"
            )

    @property
    def infinite(self):
        """Whether iterating never ends (`repeat=True`)."""
        return self.repeat

    def __len__(self):
        """Batches in one pass."""
        n, b = len(self.images), self.batch_size
        return n // b if self.drop_remainder else -(-n // b)

    def __iter__(self):
        rng = np.random.default_rng(self.seed)
        while True:
            order = np.arange(len(self.images))
            if self.training:
                order = rng.permutation(order)
            for start in range(0, len(order), self.batch_size):
                index = order[start:start + self.batch_size]
                if self.drop_remainder and len(index) < self.batch_size:
                    break
                yield self._batch(index, rng)
            if not self.repeat:
                return

    def _batch(self, index, rng):
        images = self.images[index]
        if self.training and self.random_crop:
            boxes = sample_crop_boxes(
                rng, *images.shape[1:3], len(images), self.crop_area_range,
                self.crop_aspect_ratio_range,
            )  # fmt: skip
            images = crop_and_resize(images, *boxes, self.image_size)
        else:
            images = central_resize(images, self.image_size)
        if self.training and self.random_flip:
            flip = rng.uniform(size=len(images)) < 0.5
            images[flip] = images[flip, :, ::-1]
        images = np.clip(images, 0.0, 255.0)
        if self.grayscale_to_rgb and images.shape[-1] == 1:
            images = np.repeat(images, 3, axis=-1)
        return images / np.float32(127.5) - np.float32(1.0), self.labels[index]


def _check_images(images):
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or not len(images) or not np.issubdtype(
        images.dtype, np.number
    ):
        raise ValueError(
            "`images` must be a non-empty numeric array (N, H, W) or "
            f"(N, H, W, C). Received: images of shape {images.shape}, "
            f"dtype {images.dtype}"
        )
    return check_finite_values("images", images)


def _one_hot_labels(labels, count, num_classes):
    """`(one-hot float32 labels, num_classes)`, checked against `count`."""
    labels = np.asarray(labels)
    if len(labels) != count:
        raise ValueError(
            f"`labels` must hold one label per image ({count}). Received: "
            f"{len(labels)} labels"
        )
    if labels.ndim == 2 and np.issubdtype(labels.dtype, np.floating):
        width = labels.shape[1]
        if num_classes is not None and num_classes != width:
            raise ValueError(
                f"`num_classes` does not match the one-hot labels of width "
                f"{width}. Received: num_classes={num_classes}"
            )
        return labels.astype(np.float32), width
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            "`labels` must be int class ids (N,) or one-hot floats "
            f"(N, classes). Received: labels of shape {labels.shape}, dtype "
            f"{labels.dtype}"
        )
    if num_classes is None:
        num_classes = int(labels.max()) + 1
    num_classes = check_positive_int("num_classes", num_classes)
    check_class_labels("labels", labels, num_classes)
    return np.eye(num_classes, dtype=np.float32)[labels], num_classes
