"""The tf.data input pipeline: inception crop, flip, value range, one-hot."""

import numbers
import random

import keras
import tensorflow as tf

from keras_sovit._validation import check_bool
from keras_sovit._validation import check_number
from keras_sovit._validation import check_positive_int
from keras_sovit._validation import check_range_pair
from keras_sovit._validation import image_hw
from keras_sovit.data.datasets import NUM_CLASSES_ATTR
from keras_sovit.data.image_ops import INCEPTION_AREA_RANGE
from keras_sovit.data.image_ops import INCEPTION_ASPECT_RATIO_RANGE
from keras_sovit.data.image_ops import central_resize
from keras_sovit.data.image_ops import inception_crop

AUTOTUNE = tf.data.AUTOTUNE


def _as_pairs(ds):
    """Maps `{"image", "label"}` dict elements to `(image, label)` tuples."""
    spec = ds.element_spec
    if isinstance(spec, dict):
        if "image" not in spec or "label" not in spec:
            raise ValueError(
                "`ds` elements must be (image, label) pairs or dicts with "
                f"'image' and 'label' keys. Received keys: {sorted(spec)}"
            )
        return ds.map(lambda ex: (ex["image"], ex["label"]))
    if not isinstance(spec, tuple) or len(spec) != 2:
        raise ValueError(
            "`ds` elements must be (image, label) pairs or dicts with "
            f"'image' and 'label' keys. Received element_spec: {spec}"
        )
    return ds


def _check_specs(ds):
    image_spec, label_spec = ds.element_spec
    if image_spec.dtype == tf.string:
        if image_spec.shape.rank not in (0, None):
            raise ValueError(
                "Encoded images must be scalar strings. Received image "
                f"spec: {image_spec}"
            )
    elif image_spec.shape.rank != 3 or image_spec.shape[-1] is None:
        raise ValueError(
            "`ds` images must have shape (height, width, channels) with a "
            f"known channel count. Received image spec: {image_spec}"
        )
    if label_spec.dtype.is_integer:
        if label_spec.shape.rank != 0:
            raise ValueError(
                "Integer labels must be scalars (class ids). Received label "
                f"spec: {label_spec}"
            )
    elif label_spec.dtype.is_floating:
        if label_spec.shape.rank != 1 or label_spec.shape[0] is None:
            raise ValueError(
                "Float labels must be one-hot vectors of static length. "
                f"Received label spec: {label_spec}"
            )
    else:
        raise ValueError(
            f"Labels must be integers or one-hot floats. Received label "
            f"spec: {label_spec}"
        )


def _first_element(ds):
    cardinality = int(ds.cardinality())
    if cardinality == 0:
        raise ValueError("`ds` is empty: it has no (image, label) examples.")
    for element in ds.take(1):
        return element
    raise ValueError("`ds` is empty: it has no (image, label) examples.")


def _recorded_num_classes(ds, max_depth=64):
    """The class count `load` recorded on `ds` or on a dataset it derives
    from (`ds.take(n)`, `ds.filter(...)`, ...), else None."""
    for _ in range(max_depth):
        value = getattr(ds, NUM_CLASSES_ATTR, None)
        if value is not None:
            return value
        try:
            inputs = ds._inputs()  # tf.data lineage (private, best effort).
        except Exception:  # noqa: BLE001
            return None
        if len(inputs) != 1:
            return None
        ds = inputs[0]
    return None


def _infer_num_classes(ds, source, num_classes):
    label_spec = ds.element_spec[1]
    if label_spec.dtype.is_floating:
        width = int(label_spec.shape[0])
        if num_classes is not None and num_classes != width:
            raise ValueError(
                f"`num_classes` does not match the one-hot labels of width "
                f"{width}. Received: num_classes={num_classes}"
            )
        return width
    if num_classes is None:
        num_classes = _recorded_num_classes(source)
    if num_classes is None:
        raise ValueError(
            "`num_classes` is required: it cannot be inferred from `ds` "
            "(pass a dataset from `keras_sovit.data.load`, or one-hot "
            "labels). Received: num_classes=None"
        )
    return check_positive_int("num_classes", num_classes)


def _check_first_label(label, num_classes):
    if label.dtype.is_integer:
        value = int(label)
        if not 0 <= value < num_classes:
            raise ValueError(
                f"Labels must be class ids in [0, {num_classes}) for "
                f"num_classes={num_classes}. Received a label: {value}"
            )


def _one_hot(label, num_classes):
    if label.dtype.is_floating:
        return tf.cast(label, tf.float32)
    label = tf.cast(label, tf.int64)
    checks = [
        tf.debugging.assert_greater_equal(
            label,
            tf.constant(0, tf.int64),
            message=f"Label out of range [0, {num_classes}) (num_classes)",
        ),
        tf.debugging.assert_less(
            label,
            tf.constant(num_classes, tf.int64),
            message=f"Label out of range [0, {num_classes}) (num_classes)",
        ),
    ]
    with tf.control_dependencies(checks):
        return tf.one_hot(label, num_classes, dtype=tf.float32)


def _make_randaugment(randaugment, seed):
    if randaugment is None or callable(randaugment):
        return randaugment
    ok = (
        isinstance(randaugment, (tuple, list))
        and len(randaugment) == 2
        and isinstance(randaugment[0], numbers.Integral)
        and randaugment[0] > 0
        and isinstance(randaugment[1], numbers.Real)
        and 0 <= randaugment[1] <= 10
    )
    if not ok:
        raise ValueError(
            "`randaugment` must be None, a (num_ops, magnitude) pair with "
            "magnitude in [0, 10] (big_vision's `randaug(2, 10)`), or a "
            f"callable layer. Received: randaugment={randaugment!r}"
        )
    num_ops, magnitude = randaugment
    return keras.layers.RandAugment(
        value_range=(0, 255),
        num_ops=int(num_ops),
        factor=float(magnitude) / 10.0,
        seed=seed,
    )


def _check_seed(seed):
    if seed is None:
        return None
    if (
        isinstance(seed, bool)
        or not isinstance(seed, numbers.Integral)
        or not 0 <= seed < 2**62
    ):
        raise ValueError(
            "`seed` must be None or a non-negative int. "
            f"Received: seed={seed!r}"
        )
    return int(seed)


def _check_repeat(repeat):
    if repeat is None or isinstance(repeat, bool):
        return repeat
    return check_positive_int("repeat", repeat)


def _check_augmentations(augmentations):
    if augmentations is None:
        return ()
    if callable(augmentations):
        augmentations = (augmentations,)
    augmentations = tuple(augmentations)
    for aug in augmentations:
        if not callable(aug):
            raise ValueError(
                "`augmentations` must be a sequence of callables. "
                f"Received an item: {aug!r}"
            )
    return augmentations


def _decode(image):
    if image.dtype == tf.string:
        image = tf.io.decode_image(image, channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
    return image


def input_pipeline(
    ds,
    image_size,
    batch_size,
    training,
    num_classes=None,
    seed=None,
    grayscale_to_rgb=True,
    randaugment=None,
    mixup_alpha=None,
    cutmix_factor=None,
    augmentations=(),
    shuffle_buffer=10_000,
    drop_remainder=None,
    repeat=None,
    random_crop=True,
    random_flip=True,
    crop_area_range=INCEPTION_AREA_RANGE,
    crop_aspect_ratio_range=INCEPTION_ASPECT_RATIO_RANGE,
):
    """Turns `(image, label)` examples into batches ready for `model.fit`.

    The paper's pre-training preprocessing (big_vision's
    `decode|inception_crop(size)|flip_lr|value_range(-1, 1)`), as a
    `tf.data` pipeline that feeds every Keras backend. For training:
    shuffle, repeat, InceptionCrop (random area in `crop_area_range`,
    aspect in `crop_aspect_ratio_range`, bilinear resize), random
    left-right flip, optional RandAugment (per image), batching with
    `drop_remainder=True` so every batch has a static shape (as
    `TPUStrategy` needs), user `augmentations`, rescaling to `[-1, 1]`,
    optional MixUp / CutMix, prefetching. For evaluation: the largest
    central crop with the output's aspect ratio, resized to `image_size`,
    one pass, no randomness.

    Same-size images (tfds `Image` features with a fixed shape, such as
    `animal_mnist` or `cifar10`) are cropped and flipped a whole batch at a
    time with one box per image; variable-size or encoded images (such as
    `imagenet2012`) are decoded and cropped one by one before batching.
    Crop and flip randomness is stateless, keyed by `seed` and the
    position in the stream, so two pipelines with the same `seed` yield
    identical batches whatever the parallelism. Keras augmentation layers
    (RandAugment, MixUp, CutMix, user layers) keep their own seed state, so
    they run sequentially and replay exactly when freshly built with the
    same seed. A second pass over the same returned dataset draws a new
    shuffle order (`reshuffle_each_iteration`): to replay a stream, build
    a new pipeline with the same seed.

    Args:
        ds: `tf.data.Dataset` of `(image, label)` pairs or of dicts with
            `"image"` and `"label"` keys. Images are `(H, W, C)` integer
            or float tensors in `[0, 255]`, or encoded image strings;
            labels are int class ids or one-hot float vectors.
        image_size: int or `(height, width)`. Output image size.
        batch_size: int. Global batch size.
        training: bool. Training (random) or evaluation pipeline.
        num_classes: int or None. Width of the one-hot labels. Inferred
            when `ds` comes from `keras_sovit.data.load` (the tfds
            `ClassLabel`) or has one-hot labels; required otherwise.
        seed: int or None. Seed for shuffling and augmentation.
            Defaults to `None` (a fresh random seed).
        grayscale_to_rgb: bool. Repeat a single channel three times.
            Defaults to `True`.
        randaugment: None, a `(num_ops, magnitude)` pair in big_vision's
            notation (magnitude 0..10, mapped to
            `keras.layers.RandAugment(num_ops, factor=magnitude / 10)`), or
            any callable applied to each `[0, 255]` float image. Training
            only. Defaults to `None`.
        mixup_alpha: float or None. `keras.layers.MixUp(alpha)` on each
            training batch. Defaults to `None`.
        cutmix_factor: float in `(0, 1]` or None. `keras.layers.CutMix(
            factor)` on each training batch (`1.0` is the CutMix paper's
            Beta(1, 1)). Defaults to `None`.
        augmentations: sequence of callables, applied in order to each
            training batch of float32 images in `[0, 255]` (before
            rescaling); they must keep the batch shape. Keras and keras-cv
            layers work (for example `keras_cv.layers.RandAugment(
            value_range=(0, 255))`). Defaults to `()`.
        shuffle_buffer: int. Shuffle buffer size (training). Defaults to
            `10000`.
        drop_remainder: bool or None. Drop the last partial batch. Defaults
            to `training`.
        repeat: bool, int or None. Repeat forever (`True`), a number of
            times (int) or not at all. Defaults to `training`.
        random_crop: bool. InceptionCrop when training (else a central
            resize). Defaults to `True`.
        random_flip: bool. Random left-right flip when training. Defaults
            to `True`.
        crop_area_range: pair of floats. Defaults to `(0.05, 1.0)`.
        crop_aspect_ratio_range: pair of floats. Defaults to `(3/4, 4/3)`.

    Returns:
        A `tf.data.Dataset` of `(images, labels)`: float32 images
        `(batch, height, width, 3)` in `[-1, 1]` and float32 one-hot labels
        `(batch, num_classes)`.

    Example:

    ```python
    import keras_sovit

    data_dir = keras_sovit.data.prepare("animal_mnist")
    train = keras_sovit.data.input_pipeline(
        keras_sovit.data.load("animal_mnist", "train", data_dir=data_dir),
        image_size=32,
        batch_size=64,
        training=True,
        seed=0,
    )
    images, labels = next(iter(train))  # (64, 32, 32, 3), (64, 10)
    ```
    """
    # Long on purpose: every argument is validated at this public boundary,
    # then the tf.data stages follow in the one order that keeps a seeded
    # pipeline repeatable (shuffle, repeat, crop, batch, augment).
    if not isinstance(ds, tf.data.Dataset):
        raise ValueError(
            f"`ds` must be a tf.data.Dataset. Received: ds={ds!r}"
        )
    size = image_hw(image_size)
    batch_size = check_positive_int("batch_size", batch_size)
    training = check_bool("training", training, allow_none=False)
    if num_classes is not None:
        num_classes = check_positive_int("num_classes", num_classes)
    seed = _check_seed(seed)
    grayscale_to_rgb = check_bool(
        "grayscale_to_rgb", grayscale_to_rgb, allow_none=False
    )
    mixup_alpha = check_number(
        "mixup_alpha", mixup_alpha, low=0.0, low_open=True, allow_none=True
    )
    cutmix_factor = check_number(
        "cutmix_factor", cutmix_factor, low=0.0, low_open=True, high=1.0,
        allow_none=True,
    )
    augmentations = _check_augmentations(augmentations)
    shuffle_buffer = check_positive_int("shuffle_buffer", shuffle_buffer)
    drop_remainder = check_bool("drop_remainder", drop_remainder,
                                allow_none=True)
    repeat = _check_repeat(repeat)
    random_crop = check_bool("random_crop", random_crop, allow_none=False)
    random_flip = check_bool("random_flip", random_flip, allow_none=False)
    crop_area_range = check_range_pair("crop_area_range", crop_area_range, 1.0)
    crop_aspect_ratio_range = check_range_pair(
        "crop_aspect_ratio_range", crop_aspect_ratio_range
    )
    randaugment = _make_randaugment(randaugment, seed)
    if drop_remainder is None:
        drop_remainder = training
    if repeat is None:
        repeat = training

    source = ds
    ds = _as_pairs(ds)
    _check_specs(ds)
    num_classes = _infer_num_classes(ds, source, num_classes)
    _, first_label = _first_element(ds)
    _check_first_label(first_label, num_classes)
    image_spec = ds.element_spec[0]
    encoded = image_spec.dtype == tf.string
    channels = 3 if encoded else image_spec.shape[-1]
    out_channels = 3 if (grayscale_to_rgb and channels == 1) else channels
    # Same-size images are cropped a whole batch at a time (fast);
    # variable-size or encoded images one by one before batching.
    per_example = encoded or None in image_spec.shape[:2]

    if seed is None:
        seed = random.randint(0, 2**31 - 1)
    spatial = _Spatial(
        size,
        training and random_crop,
        training and random_flip,
        crop_area_range,
        crop_aspect_ratio_range,
        seed,
    )
    if training:
        ds = ds.shuffle(
            shuffle_buffer, seed=seed, reshuffle_each_iteration=True
        )
    if repeat is True:
        ds = ds.repeat()
    elif repeat:
        ds = ds.repeat(repeat)
    if per_example:
        ds = _map_indexed(ds, lambda x, i: spatial(_decode(x), i))
    ds = ds.batch(
        batch_size,
        drop_remainder=drop_remainder,
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )
    if drop_remainder and int(ds.cardinality()) == 0:
        raise ValueError(
            "`ds` has fewer examples than one batch with "
            f"drop_remainder=True. Received: batch_size={batch_size}"
        )
    if not per_example:
        ds = _map_indexed(ds, spatial)

    def finish(images, labels):
        images = tf.clip_by_value(tf.cast(images, tf.float32), 0.0, 255.0)
        if out_channels != channels:
            images = tf.image.grayscale_to_rgb(images)
        return images, _one_hot(labels, num_classes)

    ds = ds.map(finish, num_parallel_calls=AUTOTUNE, deterministic=True)
    if training and randaugment is not None:
        # Per image, as in big_vision; sequential so seeded layers replay.
        ds = ds.unbatch().map(lambda x, y: (randaugment(x), y))
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = _augment_batches(
        ds, training, augmentations, mixup_alpha, cutmix_factor, seed
    )
    batch_dim = batch_size if drop_remainder else None
    image_shape = (batch_dim, *size, out_channels)
    label_shape = (batch_dim, num_classes)
    ds = ds.map(
        lambda x, y: (
            tf.ensure_shape(x, image_shape),
            tf.ensure_shape(y, label_shape),
        )
    )
    return ds.prefetch(AUTOTUNE)


class _Spatial:
    """Crop (or central resize) and flip of one image or one batch."""

    def __init__(self, size, crop, flip, area_range, aspect_range, seed):
        self.size = size
        self.crop = crop
        self.flip = flip
        self.area_range = area_range
        self.aspect_range = aspect_range
        self.seed = seed

    def __call__(self, images, index):
        seed = tf.constant(self.seed, tf.int64)
        if self.crop:
            images = inception_crop(
                images,
                self.size,
                self.area_range,
                self.aspect_range,
                seed=tf.stack([seed, index]),
            )
        else:
            images = central_resize(images, self.size)
        if self.flip:
            images = tf.image.stateless_random_flip_left_right(
                images, tf.stack([seed + 1, index])
            )
        return images


def _map_indexed(ds, fn):
    """Maps `fn(index, image)` over `(image, label)` elements, in order."""
    return ds.enumerate().map(
        lambda i, pair: (fn(pair[0], i), pair[1]),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )


def _augment_batches(
    ds, training, augmentations, mixup_alpha, cutmix_factor, seed
):
    """User augmentations in [0, 255], rescaling, then MixUp / CutMix."""
    if training:
        for aug in augmentations:
            ds = ds.map(lambda x, y, aug=aug: (tf.cast(aug(x), tf.float32), y))
    ds = ds.map(
        lambda x, y: (x / 127.5 - 1.0, y),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )
    if not training:
        return ds
    mixers = []
    if mixup_alpha is not None:
        mixers.append(keras.layers.MixUp(alpha=mixup_alpha, seed=seed))
    if cutmix_factor is not None:
        mixers.append(keras.layers.CutMix(factor=cutmix_factor, seed=seed))
    for mixer in mixers:
        ds = ds.map(lambda x, y, mixer=mixer: _mix(mixer, x, y))
    return ds


def _mix(mixer, images, labels):
    out = mixer({"images": images, "labels": labels})
    images = tf.cast(out["images"], tf.float32)
    return images, tf.cast(out["labels"], tf.float32)
