"""`input_pipeline` and `inception_crop`: shapes, values, randomness, errors."""


import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import keras_sovit.data
from keras_sovit.data import animal_mnist


def _synthetic(n=40, size=28, channels=1, num_classes=10, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8)
    labels = rng.integers(0, num_classes, n).astype(np.int64)
    return images, labels


def _dataset(images, labels):
    return tf.data.Dataset.from_tensor_slices((images, labels))


def _batches(ds):
    return [(x, y) for x, y in ds.as_numpy_iterator()]


def test_eval_pipeline_matches_numpy(animal_mnist_dir):
    images, labels = animal_mnist.load_arrays()
    test_idx = animal_mnist.split_indices(labels)["test"]
    by_digest = {images[i].tobytes(): int(labels[i]) for i in test_idx}
    ds = keras_sovit.data.load("animal_mnist", "test", animal_mnist_dir)
    out = keras_sovit.data.input_pipeline(ds, 28, 64, training=False)
    assert out.element_spec[0].shape.as_list() == [None, 28, 28, 3]
    batches = _batches(out)
    assert len(batches) == 16
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    assert x.shape == (1000, 28, 28, 3) and y.shape == (1000, 10)
    raw = np.round((x[..., 0] + 1.0) * 127.5).astype(np.uint8)
    want_labels = np.array([by_digest[r.tobytes()] for r in raw])
    np.testing.assert_array_equal(y, np.eye(10, dtype=np.float32)[want_labels])
    np.testing.assert_allclose(x[..., 0], raw / 127.5 - 1.0, atol=1e-6)
    np.testing.assert_array_equal(x[..., 0], x[..., 2])


def test_training_batches_are_static_and_in_range(animal_mnist_dir):
    ds = keras_sovit.data.load("animal_mnist", "train", animal_mnist_dir)
    out = keras_sovit.data.input_pipeline(ds, 32, 64, training=True, seed=0)
    assert out.element_spec[0].shape.as_list() == [64, 32, 32, 3]
    assert out.element_spec[1].shape.as_list() == [64, 10]
    assert out.cardinality() == tf.data.INFINITE_CARDINALITY
    x, y = next(iter(out))
    assert x.dtype == tf.float32 and y.dtype == tf.float32
    assert -1.0 <= float(tf.reduce_min(x)) < float(tf.reduce_max(x)) <= 1.0
    np.testing.assert_array_equal(tf.reduce_sum(y, axis=1), np.ones(64))
    assert set(np.unique(y.numpy())) == {0.0, 1.0}


def test_num_classes_inferred_through_transformations(animal_mnist_dir):
    ds = keras_sovit.data.load("animal_mnist", "test", animal_mnist_dir)
    ds = ds.take(50).filter(lambda x, y: y >= 0)
    out = keras_sovit.data.input_pipeline(ds, 28, 8, training=False)
    assert out.element_spec[1].shape.as_list() == [None, 10]


def _coordinate_image(size=200):
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    return np.stack([rows, cols], axis=-1).astype(np.float32)


def test_inception_crop_area_and_aspect():
    size = 200
    image = _coordinate_image(size)
    areas, aspects = [], []
    for i in range(60):
        crop = keras_sovit.data.inception_crop(image, 64, seed=[i, 7]).numpy()
        assert crop.shape == (64, 64, 2)
        height = crop[..., 0].max() - crop[..., 0].min() + 1
        width = crop[..., 1].max() - crop[..., 1].min() + 1
        areas.append(height * width / size**2)
        aspects.append(width / height)
    areas, aspects = np.array(areas), np.array(aspects)
    # Bilinear sampling can lose up to ~1.5 px per side of the box.
    assert areas.min() >= 0.05 * 0.9 and areas.max() <= 1.0
    assert aspects.min() >= 0.75 * 0.95 and aspects.max() <= (4 / 3) * 1.05
    assert areas.min() < 0.2 and areas.max() > 0.8  # big_vision's wide range
    same = keras_sovit.data.inception_crop(image, 64, seed=[3, 7])
    np.testing.assert_array_equal(
        same, keras_sovit.data.inception_crop(image, 64, seed=[3, 7])
    )


def test_inception_crop_bad_ranges():
    with pytest.raises(ValueError, match="area_range"):
        keras_sovit.data.inception_crop(_coordinate_image(8), 4, (0.5, 1.5))
    with pytest.raises(ValueError, match="image_size"):
        keras_sovit.data.inception_crop(_coordinate_image(8), 0)


def test_flip_is_random_and_exact():
    images, labels = _synthetic(n=32)
    ds = _dataset(images, labels)
    out = keras_sovit.data.input_pipeline(
        ds, 28, 32, True, num_classes=10, seed=3, random_crop=False
    )
    x, y = next(iter(out))
    x = np.round((x.numpy()[..., 0] + 1.0) * 127.5).astype(np.uint8)
    index = {im[..., 0].tobytes(): k for k, im in enumerate(images)}
    flipped = 0
    for got in x:
        if got.tobytes() in index:
            continue
        assert got[:, ::-1].tobytes() in index
        flipped += 1
    assert 4 <= flipped <= 28


def test_same_seed_same_batches_different_seed_differs():
    images, labels = _synthetic(n=64)

    def run(seed):
        out = keras_sovit.data.input_pipeline(
            _dataset(images, labels), 32, 16, True, num_classes=10, seed=seed
        )
        return _batches(out.take(6))

    a, b, c = run(5), run(5), run(6)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not all(np.array_equal(xa, xc) for (xa, _), (xc, _) in zip(a, c))


def test_training_reshuffles_each_epoch_and_covers_all():
    images, labels = _synthetic(n=32)
    out = keras_sovit.data.input_pipeline(
        _dataset(images, labels), 28, 8, True, num_classes=10, seed=1,
        random_crop=False, random_flip=False,
    )  # fmt: skip
    x = np.concatenate([b[0] for b in _batches(out.take(8))])
    raw = np.round((x[..., 0] + 1.0) * 127.5).astype(np.uint8)
    first, second = raw[:32], raw[32:]
    key = lambda a: sorted(im.tobytes() for im in a)  # noqa: E731
    assert key(first) == key(images[..., 0]) == key(second)
    assert not np.array_equal(first, second)


def test_dict_elements_and_grayscale_off():
    images, labels = _synthetic(n=10)
    ds = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})
    out = keras_sovit.data.input_pipeline(
        ds, 28, 4, False, num_classes=10, grayscale_to_rgb=False
    )
    batches = _batches(out)
    assert [b[0].shape for b in batches] == [(4, 28, 28, 1)] * 2 + [
        (2, 28, 28, 1)
    ]
    np.testing.assert_array_equal(
        np.concatenate([b[1] for b in batches]), np.eye(10)[labels]
    )


def test_encoded_images_and_non_square_eval():
    images, labels = _synthetic(n=3, size=8, channels=3)
    wide = np.concatenate([images] * 3, axis=2)  # (3, 8, 24, 3)
    encoded = [tf.io.encode_png(im).numpy() for im in wide]
    ds = tf.data.Dataset.from_tensor_slices((encoded, labels))
    x, _ = next(iter(keras_sovit.data.input_pipeline(ds, 8, 3, False, 10)))
    # The central 8x8 square of each wide image is its middle copy.
    np.testing.assert_allclose(x, images / 127.5 - 1.0, atol=1e-6)


def test_one_hot_labels_pass_through():
    images, labels = _synthetic(n=8, num_classes=5)
    one_hot = np.eye(5, dtype=np.float32)[labels]
    ds = _dataset(images, one_hot)
    out = keras_sovit.data.input_pipeline(ds, 28, 8, False)
    np.testing.assert_array_equal(next(iter(out))[1], one_hot)


def test_empty_dataset():
    images, labels = _synthetic(n=4)
    with pytest.raises(ValueError, match="empty"):
        keras_sovit.data.input_pipeline(
            _dataset(images, labels).take(0), 28, 2, True, num_classes=10
        )
    unknown = _dataset(images, labels).filter(lambda x, y: y > 100)
    with pytest.raises(ValueError, match="empty"):
        keras_sovit.data.input_pipeline(unknown, 28, 2, True, num_classes=10)


def test_fewer_examples_than_a_batch_without_repeat():
    images, labels = _synthetic(n=3)
    with pytest.raises(ValueError, match="batch_size=4"):
        keras_sovit.data.input_pipeline(
            _dataset(images, labels), 28, 4, False, 10, drop_remainder=True
        )


def test_labels_out_of_range():
    images, labels = _synthetic(n=6)
    bad_first = labels.copy()
    bad_first[0] = 10
    with pytest.raises(ValueError, match=r"\[0, 10\).*10"):
        keras_sovit.data.input_pipeline(
            _dataset(images, bad_first), 28, 2, False, 10
        )
    bad_later = labels.copy()
    bad_later[4] = -1
    out = keras_sovit.data.input_pipeline(
        _dataset(images, bad_later), 28, 2, False, 10
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="out of range"):
        _batches(out)


def test_num_classes_required_for_plain_datasets():
    images, labels = _synthetic(n=4)
    with pytest.raises(ValueError, match="num_classes"):
        keras_sovit.data.input_pipeline(_dataset(images, labels), 28, 2, True)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(image_size=0), "image_size"),
        (dict(image_size=(32, 32, 3)), "image_size"),
        (dict(batch_size=0), "batch_size"),
        (dict(batch_size=2.5), "batch_size"),
        (dict(training="yes"), "training"),
        (dict(num_classes=-1), "num_classes"),
        (dict(seed=-3), "seed"),
        (dict(mixup_alpha=0.0), "mixup_alpha"),
        (dict(cutmix_factor=2.0), "cutmix_factor"),
        (dict(randaugment=(2, 30)), "randaugment"),
        (dict(augmentations=[3]), "augmentations"),
        (dict(shuffle_buffer=0), "shuffle_buffer"),
        (dict(repeat=-1), "repeat"),
        (dict(crop_area_range=(0.0, 1.0)), "crop_area_range"),
        (dict(crop_aspect_ratio_range=(2.0, 1.0)), "crop_aspect_ratio_range"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, name):
    images, labels = _synthetic(n=4)
    args = dict(
        ds=_dataset(images, labels), image_size=28, batch_size=2,
        training=True, num_classes=10,
    )  # fmt: skip
    args.update(kwargs)
    with pytest.raises(ValueError, match=f"`{name}`"):
        keras_sovit.data.input_pipeline(**args)


def test_not_a_dataset():
    with pytest.raises(ValueError, match="`ds`"):
        keras_sovit.data.input_pipeline(np.zeros((4, 28, 28, 1)), 28, 2, True)


def test_mixup_and_cutmix_mix_labels():
    images, labels = _synthetic(n=64)
    for kwargs in (dict(mixup_alpha=0.4), dict(cutmix_factor=1.0)):
        out = keras_sovit.data.input_pipeline(
            _dataset(images, labels), 28, 32, True, 10, seed=2, **kwargs
        )
        x, y = next(iter(out))
        assert x.shape == (32, 28, 28, 3) and y.shape == (32, 10)
        y = y.numpy()
        np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-5)
        assert y.min() >= 0.0 and (y.max(axis=1) < 1.0 - 1e-3).any(), kwargs
        assert -1.0 - 1e-5 <= float(tf.reduce_min(x))
        assert float(tf.reduce_max(x)) <= 1.0 + 1e-5


def test_randaugment_pair_is_big_vision_randaug():
    from keras_sovit.data.pipeline import _make_randaugment

    config = _make_randaugment((2, 10), seed=4).get_config()
    # randaug(2, 10): two ops per image at full magnitude, on 0-255 pixels.
    assert (config["num_ops"], config["factor"]) == (2, (0, 1.0))
    assert tuple(config["value_range"]) == (0, 255) and config["seed"] == 4


def test_randaugment_changes_images_reproducibly():
    images, labels = _synthetic(n=16, channels=3)

    def run(**kwargs):
        out = keras_sovit.data.input_pipeline(
            _dataset(images, labels), 28, 16, True, 10, seed=4, **kwargs
        )
        return next(iter(out))[0].numpy()

    plain = run()
    # One op per image: tracing RandAugment into tf.data costs ~12 s per op
    # and pipeline on the JAX backend; (2, 10) maps as checked above.
    aug, again = run(randaugment=(1, 10)), run(randaugment=(1, 10))
    assert aug.shape == plain.shape
    assert not np.allclose(plain, aug)
    np.testing.assert_array_equal(aug, again)
    assert aug.min() >= -1.0 and aug.max() <= 1.0


def test_keras_cv_layers_as_augmentations():
    keras_cv = pytest.importorskip("keras_cv")
    images, labels = _synthetic(n=16, channels=3)
    plain = keras_sovit.data.input_pipeline(
        _dataset(images, labels), 32, 8, True, 10, seed=0
    )
    augs = [
        keras_cv.layers.RandAugment(value_range=(0, 255), seed=1),
        keras_cv.layers.RandomCropAndResize(
            (32, 32), (0.08, 1.0), (3 / 4, 4 / 3), seed=1
        ),
    ]
    out = keras_sovit.data.input_pipeline(
        _dataset(images, labels), 32, 8, True, 10, seed=0, augmentations=augs
    )
    assert out.element_spec[0].shape.as_list() == [8, 32, 32, 3]
    x = next(iter(out))[0].numpy()
    assert -1.0 <= x.min() and x.max() <= 1.0
    assert not np.allclose(x, next(iter(plain))[0].numpy())


def test_mock_cifar10_through_load_and_pipeline(tmp_path):
    with tfds.testing.mock_data(num_examples=20):
        ds = keras_sovit.data.load("cifar10", "train", str(tmp_path))
        out = keras_sovit.data.input_pipeline(ds, 16, 8, True, seed=0)
        x, y = next(iter(out))
    assert x.shape == (8, 16, 16, 3) and y.shape == (8, 10)
    np.testing.assert_array_equal(tf.reduce_sum(y, axis=1), np.ones(8))


def test_model_fit_on_the_pipeline(animal_mnist_dir):
    ds = keras_sovit.data.load("animal_mnist", "train", animal_mnist_dir)
    train = keras_sovit.data.input_pipeline(ds, 16, 32, True, seed=0)
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )
    model.compile("adam", keras.losses.BinaryCrossentropy(from_logits=True))
    before = model.get_weights()[0].copy()
    history = model.fit(train, steps_per_epoch=4, epochs=2, verbose=0)
    losses = history.history["loss"]
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert losses[1] < np.log(2.0)  # Below the zero-logit sigmoid loss.
    assert not np.allclose(before, model.get_weights()[0])


@pytest.mark.tf_only
def test_distribute_dataset(mirrored_strategy):
    images, labels = _synthetic(n=32)
    out = keras_sovit.data.input_pipeline(
        _dataset(images, labels), 28, 8, True, 10, seed=0
    )
    dist = mirrored_strategy.experimental_distribute_dataset(out)
    x, y = next(iter(dist))
    local = mirrored_strategy.experimental_local_results(x)
    shapes = [t.shape.as_list() for t in local]
    assert shapes == [[4, 28, 28, 3], [4, 28, 28, 3]]
    per_replica = mirrored_strategy.run(lambda x, y: tf.reduce_sum(y), (x, y))
    total = mirrored_strategy.reduce("SUM", per_replica, axis=None)
    assert float(total) == 8.0


def test_inception_crop_on_a_batch_draws_one_box_per_image():
    batch = np.stack([_coordinate_image(60)] * 16)
    crops = keras_sovit.data.inception_crop(batch, 20, seed=[0, 1]).numpy()
    assert crops.shape == (16, 20, 20, 2)
    tops = crops[:, 0, 0, 0]
    assert len(np.unique(tops)) > 4  # Different boxes, not one shared box.
    np.testing.assert_array_equal(
        crops[3],
        keras_sovit.data.inception_crop(batch, 20, seed=[0, 1]).numpy()[3],
    )


def test_variable_size_images_are_cropped_one_by_one():
    rng = np.random.default_rng(0)
    sizes = [(20, 30), (28, 28), (40, 24), (33, 35)] * 3

    def gen():
        for k, (h, w) in enumerate(sizes):
            yield rng.integers(0, 256, (h, w, 3), dtype=np.uint8), k % 10

    ds = tf.data.Dataset.from_generator(
        gen,
        output_signature=(
            tf.TensorSpec((None, None, 3), tf.uint8),
            tf.TensorSpec((), tf.int64),
        ),
    )
    for training in (True, False):
        out = keras_sovit.data.input_pipeline(
            ds, 16, 4, training, num_classes=10, seed=0, repeat=False
        )
        batches = _batches(out)
        assert [b[0].shape for b in batches] == [(4, 16, 16, 3)] * 3
        x = np.concatenate([b[0] for b in batches])
        assert -1.0 <= x.min() and x.max() <= 1.0
