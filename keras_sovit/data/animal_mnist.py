"""tfds builder for the real images bundled in the `animal-mnist` package."""

import gzip
import importlib.resources
import pickle

import numpy as np
import tensorflow_datasets as tfds

CLASS_NAMES = (
    "bear",
    "bird",
    "cat",
    "cow",
    "dog",
    "elephant",
    "giraffe",
    "horse",
    "sheep",
    "zebra",
)
# Examples per class in each split; the package holds 1000 per class.
SPLIT_SIZES = {"train": 800, "validation": 100, "test": 100}
SPLIT_SEED = 20230523
_DATA_FOLDER = ("data", "Animal_MNIST")
_IMAGES_FILE = "animal_data_version_3.gz"
_LABELS_FILE = "animal_label_version_3.gz"
INSTALL_HINT = (
    "The `animal_mnist` dataset needs the `animal-mnist` package, which "
    "bundles the images: `pip install animal-mnist==0.4` (or "
    "`pip install keras-sovit[data]`)."
)


def _read_pickle(folder, filename):
    with (folder / filename).open("rb") as raw:
        with gzip.GzipFile(fileobj=raw) as f:
            return pickle.load(f)


def _data_folder():
    try:
        folder = importlib.resources.files("animal_mnist")
    except ImportError as e:
        raise ImportError(INSTALL_HINT) from e
    for part in _DATA_FOLDER:
        folder = folder / part
    return folder


def check_installed():
    """Raises `ImportError` with an install hint unless the data is there."""
    folder = _data_folder()
    for filename in (_IMAGES_FILE, _LABELS_FILE):
        if not (folder / filename).is_file():
            raise ImportError(
                f"The installed `animal-mnist` package lacks {filename}. "
                + INSTALL_HINT
            )


def load_arrays():
    """Return the bundled `(images, labels)` as NumPy arrays.

    Reads the gzip-pickled arrays that ship inside the installed
    `animal-mnist` package directly (its own loader imports
    `tensorflow.keras`). Raises `ImportError` with an install hint when the
    package is missing.
    """
    check_installed()
    folder = _data_folder()
    images = np.asarray(_read_pickle(folder, _IMAGES_FILE))
    labels = np.asarray(_read_pickle(folder, _LABELS_FILE))
    if images.shape != (10000, 28, 28) or labels.shape != (10000,):
        raise ValueError(
            "Unexpected `animal-mnist` data: images of shape "
            f"{images.shape} and labels of shape {labels.shape}, expected "
            "(10000, 28, 28) and (10000,). " + INSTALL_HINT
        )
    return images.astype(np.uint8), labels.astype(np.int64)


def split_indices(labels, seed=SPLIT_SEED):
    """Stratified, deterministic split of example indices.

    Each class is permuted with its own generator seeded by `(seed,
    class_id)` and cut into 80 % train, 10 % validation and 10 % test, so the
    splits never depend on the order of other classes.

    Returns:
        dict from split name to a sorted array of indices into `labels`.
    """
    fractions = np.array(list(SPLIT_SIZES.values()), dtype=np.float64)
    fractions = fractions / fractions.sum()
    parts = {name: [] for name in SPLIT_SIZES}
    for class_id in np.unique(labels):
        members = np.flatnonzero(labels == class_id)
        rng = np.random.default_rng((seed, int(class_id)))
        members = rng.permutation(members)
        cuts = np.round(np.cumsum(fractions) * len(members)).astype(int)
        for name, chunk in zip(parts, np.split(members, cuts[:-1])):
            parts[name].append(chunk)
    return {name: np.sort(np.concatenate(p)) for name, p in parts.items()}


def animal_mnist_split(split):
    """One split of `animal_mnist` as NumPy arrays, without TensorFlow.

    The examples of the tfds builder's split (same split, same images and
    labels), in index order: `(images (N, 28, 28, 1) uint8, labels (N,)
    int64)`. For the array path (`keras_sovit.data.ArrayPipeline`) on
    machines without TensorFlow; `tfds.load` shuffles its files, so its
    order differs.

    Example:

    ```python
    images, labels = keras_sovit.data.animal_mnist_split("validation")
    ```
    """
    if split not in SPLIT_SIZES:
        raise ValueError(
            f"`split` must be one of {sorted(SPLIT_SIZES)}. Received: "
            f"split={split!r}"
        )
    images, labels = load_arrays()
    indices = split_indices(labels)[split]
    return images[indices][..., None], labels[indices]


class AnimalMnist(tfds.core.GeneratorBasedBuilder):
    """Animal MNIST: 10,000 real 28x28 grayscale animal silhouettes.

    Ten classes of 1000 images each (bear, bird, cat, cow, dog, elephant,
    giraffe, horse, sheep, zebra), read from the `animal-mnist` 0.4 package,
    which bundles the data, so preparing never downloads anything. The
    splits are fixed and stratified: 8000 `train`, 1000 `validation` and
    1000 `test` images (800 / 100 / 100 per class, seeded permutation).

    Importing `keras_sovit.data` registers the builder under the name
    `"animal_mnist"`; prepare it once with `keras_sovit.data.prepare`, then
    load it with plain `tfds.load(..., download=False)`.

    Example:

    ```python
    import tensorflow_datasets as tfds
    import keras_sovit

    data_dir = keras_sovit.data.prepare("animal_mnist")
    ds = tfds.load(
        "animal_mnist",
        split="train",
        data_dir=data_dir,
        download=False,
        as_supervised=True,
    )
    image, label = next(iter(ds))  # (28, 28, 1) uint8, int64 in [0, 10)
    ```

    Reference:
    - [`animal-mnist` on PyPI](https://pypi.org/project/animal-mnist/)
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Stratified 8000/1000/1000 split."}

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "10,000 real 28x28 grayscale animal silhouettes in 10 "
                "classes, bundled in the animal-mnist 0.4 package."
            ),
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(28, 28, 1)),
                    "label": tfds.features.ClassLabel(names=CLASS_NAMES),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://pypi.org/project/animal-mnist/",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download: the data is in a package.
        images, labels = load_arrays()
        splits = split_indices(labels)
        return {
            name: self._generate_examples(images, labels, indices)
            for name, indices in splits.items()
        }

    def _generate_examples(self, images, labels, indices):
        for index in indices:
            example = {
                "image": images[index][..., None],
                "label": int(labels[index]),
            }
            yield int(index), example
