"""Offline tfds datasets: `prepare` and `load` (never download)."""

import contextlib
import fcntl
import os

import tensorflow_datasets as tfds

from keras_sovit.data import animal_mnist

DATA_DIR_ENV = "KERAS_SOVIT_DATA_DIR"
DEFAULT_DATA_DIR = os.path.join("~", ".keras_sovit", "datasets")
# Builders whose data ships with an installed package: `prepare` can build
# them without any network access.
_OFFLINE_BUILDERS = {"animal_mnist": animal_mnist.AnimalMnist}
# Attribute set on datasets returned by `load`, read by `input_pipeline`.
NUM_CLASSES_ATTR = "_keras_sovit_num_classes"


def default_data_dir():
    """`$KERAS_SOVIT_DATA_DIR`, else `~/.keras_sovit/datasets`."""
    return os.path.expanduser(
        os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    )


def _resolve_data_dir(data_dir):
    if data_dir is None:
        data_dir = default_data_dir()
    if not isinstance(data_dir, (str, os.PathLike)):
        raise ValueError(
            "`data_dir` must be a path or None. "
            f"Received: data_dir={data_dir!r}"
        )
    return os.path.abspath(os.path.expanduser(os.fspath(data_dir)))


def _check_name(name):
    if not isinstance(name, str) or not name:
        raise ValueError(
            f"`name` must be a tfds dataset name. Received: name={name!r}"
        )


@contextlib.contextmanager
def _file_lock(path):
    with open(path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def prepare(name="animal_mnist", data_dir=None):
    """Prepares a bundled dataset once into `data_dir`; returns `data_dir`.

    Builds the tfds files for a dataset whose data ships inside an installed
    package (currently `"animal_mnist"`, from the `animal-mnist` package).
    Idempotent: a prepared dataset is left alone. Safe when several
    processes race: preparation runs under an exclusive file lock in
    `data_dir`, and tfds writes into a temporary folder that it renames
    into place. Never downloads anything.

    Args:
        name: str. The dataset name. Defaults to `"animal_mnist"`.
        data_dir: str or None. Where tfds datasets live. Defaults to
            `$KERAS_SOVIT_DATA_DIR`, else `~/.keras_sovit/datasets`.

    Returns:
        The data dir as a string, ready for
        `tfds.load(name, data_dir=..., download=False)`.

    Example:

    ```python
    import keras_sovit

    data_dir = keras_sovit.data.prepare("animal_mnist")
    ds = keras_sovit.data.load("animal_mnist", "train", data_dir=data_dir)
    ```
    """
    _check_name(name)
    if name not in _OFFLINE_BUILDERS:
        raise ValueError(
            f"`prepare` can only build datasets bundled with an installed "
            f"package: {sorted(_OFFLINE_BUILDERS)}. Received: name={name!r}. "
            "Prepare other tfds datasets yourself (for example "
            f"`tfds build {name} --data_dir=...`, with manual downloads "
            "where needed), then use `keras_sovit.data.load`."
        )
    data_dir = _resolve_data_dir(data_dir)
    builder_cls = _OFFLINE_BUILDERS[name]
    if name == "animal_mnist":
        animal_mnist.check_installed()
    os.makedirs(data_dir, exist_ok=True)
    builder = builder_cls(data_dir=data_dir)
    if builder.is_prepared():
        return data_dir
    with _file_lock(os.path.join(data_dir, f".{name}.lock")):
        builder = builder_cls(data_dir=data_dir)
        if not builder.is_prepared():
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(
                    try_download_gcs=False
                )
            )
    return data_dir


def _not_prepared_message(name, data_dir):
    if name in _OFFLINE_BUILDERS:
        how = (
            f"run `keras_sovit.data.prepare({name!r}, "
            f"data_dir={data_dir!r})` first"
        )
    else:
        how = (
            f"prepare it first, for example `tfds build {name} "
            f"--data_dir={data_dir}` (keras_sovit never downloads)"
        )
    return f"Dataset {name!r} is not prepared in data_dir={data_dir!r}: {how}."


def _supervised_keys(name, info):
    """Returns `(image_key, label_key, num_classes)` or raises ValueError."""
    features = info.features
    keys = info.supervised_keys
    if keys is None or len(keys) != 2:
        keys = ("image", "label")
    image_key, label_key = keys
    names = list(features.keys()) if hasattr(features, "keys") else []
    image_ok = image_key in names and isinstance(
        features[image_key], tfds.features.Image
    )
    label_ok = label_key in names and isinstance(
        features[label_key], tfds.features.ClassLabel
    )
    if not (image_ok and label_ok):
        raise ValueError(
            f"Dataset {name!r} is not an image-classification dataset: "
            "keras_sovit needs an `Image` feature and a `ClassLabel` "
            f"feature (supervised keys {keys!r}); it has features {names}."
        )
    return image_key, label_key, features[label_key].num_classes


def load(name, split, data_dir=None, shuffle_files=False):
    """Loads a prepared tfds image-classification dataset, offline.

    A thin wrapper over `tfds.load(..., download=False)` that returns
    `(image, label)` pairs and checks the dataset is an image-classification
    dataset. Works for `"animal_mnist"` (after `prepare`) and for any tfds
    dataset a user has prepared in `data_dir` (`cifar10`, `imagenet2012`,
    ...). The number of classes is remembered on the returned dataset so
    that `keras_sovit.data.input_pipeline` can one-hot the labels without
    being told.

    Args:
        name: str. A tfds dataset name, such as `"animal_mnist"`.
        split: str. A tfds split, such as `"train"` or `"train[:90%]"`.
        data_dir: str or None. Defaults to `$KERAS_SOVIT_DATA_DIR`, else
            `~/.keras_sovit/datasets`.
        shuffle_files: bool. Passed to tfds. Defaults to `False`.

    Returns:
        A `tf.data.Dataset` of `(image, label)`: uint8 `(H, W, C)` images
        and int64 labels.

    Example:

    ```python
    import keras_sovit

    data_dir = keras_sovit.data.prepare("animal_mnist")
    ds = keras_sovit.data.load("animal_mnist", "test", data_dir=data_dir)
    ```
    """
    _check_name(name)
    if not isinstance(split, str) or not split:
        raise ValueError(
            f"`split` must be a tfds split string. Received: split={split!r}"
        )
    data_dir = _resolve_data_dir(data_dir)
    try:
        ds, info = tfds.load(
            name,
            split=split,
            data_dir=data_dir,
            download=False,
            with_info=True,
            shuffle_files=shuffle_files,
        )
    except tfds.core.registered.DatasetNotFoundError as e:
        raise ValueError(
            f"Unknown tfds dataset: name={name!r}. "
            + _not_prepared_message(name, data_dir)
        ) from e
    except (AssertionError, FileNotFoundError) as e:
        raise ValueError(_not_prepared_message(name, data_dir)) from e
    image_key, label_key, num_classes = _supervised_keys(name, info)
    ds = ds.map(lambda ex: (ex[image_key], ex[label_key]))
    setattr(ds, NUM_CLASSES_ATTR, num_classes)
    return ds
