"""The animal_mnist tfds builder, `prepare` and `load`: real data, offline."""

import hashlib
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

import keras_sovit.data
from keras_sovit.data import animal_mnist
from keras_sovit.data import datasets

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
# tfds and numpy only: nothing here runs on the Keras backend.
pytestmark = pytest.mark.backend_free


def _digest(image):
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


def test_splits_hold_the_bundled_images(animal_mnist_dir):
    images, labels = animal_mnist.load_arrays()
    assert images.shape == (10000, 28, 28)
    assert np.bincount(labels).tolist() == [1000] * 10
    indices = animal_mnist.split_indices(labels)
    sizes = {"train": 8000, "validation": 1000, "test": 1000}
    for split, size in sizes.items():
        ds = tfds.load(
            "animal_mnist",
            split=split,
            data_dir=animal_mnist_dir,
            download=False,
            as_supervised=True,
        )
        xs, ys = zip(*ds.batch(1000).as_numpy_iterator())
        xs, ys = np.concatenate(xs), np.concatenate(ys)
        assert len(ys) == size
        got = sorted((_digest(x[..., 0]), int(y)) for x, y in zip(xs, ys))
        want = sorted(
            (_digest(images[i]), int(labels[i])) for i in indices[split]
        )
        assert got == want
        counts = np.bincount(ys, minlength=10)
        assert counts.tolist() == [size // 10] * 10


def test_builder_info(animal_mnist_dir):
    builder = tfds.builder("animal_mnist", data_dir=animal_mnist_dir)
    assert isinstance(builder, keras_sovit.data.AnimalMnist)
    info = builder.info
    assert info.features["label"].names == [
        "bear", "bird", "cat", "cow", "dog",
        "elephant", "giraffe", "horse", "sheep", "zebra",
    ]  # fmt: skip
    assert info.features["image"].shape == (28, 28, 1)
    assert info.splits["train"].num_examples == 8000
    assert info.supervised_keys == ("image", "label")


def test_split_indices_are_a_stratified_partition():
    labels = np.repeat(np.arange(10), 1000)
    parts = animal_mnist.split_indices(labels)
    joined = np.concatenate(list(parts.values()))
    assert sorted(joined.tolist()) == list(range(10000))
    assert np.bincount(labels[parts["validation"]]).tolist() == [100] * 10
    again = animal_mnist.split_indices(labels)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)
    other = animal_mnist.split_indices(labels, seed=1)
    assert not np.array_equal(parts["test"], other["test"])


def _mtimes(folder):
    return {
        f: os.stat(os.path.join(folder, f)).st_mtime for f in os.listdir(folder)
    }


def test_prepare_is_idempotent(animal_mnist_dir):
    folder = os.path.join(animal_mnist_dir, "animal_mnist", "1.0.0")
    before = _mtimes(folder)
    start = time.perf_counter()
    assert keras_sovit.data.prepare("animal_mnist", animal_mnist_dir) == (
        animal_mnist_dir
    )
    assert time.perf_counter() - start < 2.0
    assert _mtimes(folder) == before


_RACER = """
import os, sys, time
import keras_sovit.data as d
data_dir, ready, go = sys.argv[1:]
open(ready, "w").close()
deadline = time.time() + 300
while not os.path.exists(go) and time.time() < deadline:
    time.sleep(0.02)
print(d.prepare("animal_mnist", data_dir))
"""


def test_prepare_races_between_two_processes(tmp_path):
    data_dir = str(tmp_path / "race")
    go = tmp_path / "go"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, data_dir, str(tmp_path / f"r{k}")]
            + [str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=ROOT,
        )
        for k in range(2)
    ]
    deadline = time.time() + 300
    while not all((tmp_path / f"r{k}").exists() for k in range(2)):
        assert time.time() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.02)
    go.touch()  # Both processes are past their imports: start together.
    outs = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, outs):
        assert proc.returncode == 0, err.decode()[-2000:]
        assert out.decode().strip().splitlines()[-1] == data_dir
    # The lock let exactly one process build the dataset.
    built = ["prepared to" in out.decode() for out, _ in outs]
    assert sorted(built) == [False, True]
    ds = keras_sovit.data.load("animal_mnist", "validation", data_dir)
    assert sum(1 for _ in ds) == 1000
    leftovers = os.listdir(os.path.join(data_dir, "animal_mnist"))
    assert leftovers == ["1.0.0"]


def test_missing_package_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "animal_mnist", None)
    with pytest.raises(ImportError, match="pip install animal-mnist"):
        keras_sovit.data.prepare("animal_mnist", str(tmp_path))
    assert not os.path.exists(tmp_path / "animal_mnist")


def test_load_returns_image_label_pairs(animal_mnist_dir):
    ds = keras_sovit.data.load("animal_mnist", "test", animal_mnist_dir)
    image, label = next(iter(ds))
    assert image.shape == (28, 28, 1) and image.dtype == "uint8"
    assert 0 <= int(label) < 10
    assert getattr(ds, datasets.NUM_CLASSES_ATTR) == 10


def test_load_unprepared_fails_fast_without_download(tmp_path):
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"keras_sovit.data.prepare\('animal"):
        keras_sovit.data.load("animal_mnist", "train", str(tmp_path))
    with pytest.raises(ValueError, match="tfds build cifar10"):
        keras_sovit.data.load("cifar10", "train", str(tmp_path))
    assert time.perf_counter() - start < 10.0
    assert os.listdir(tmp_path) == []


def test_load_unknown_dataset(tmp_path):
    with pytest.raises(ValueError, match="no_such_dataset_xyz"):
        keras_sovit.data.load("no_such_dataset_xyz", "train", str(tmp_path))


def test_prepare_refuses_datasets_that_need_a_download(tmp_path):
    with pytest.raises(ValueError, match="name='cifar10'"):
        keras_sovit.data.prepare("cifar10", str(tmp_path))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(name="", split="train"), "name"),
        (dict(name=3, split="train"), "name"),
        (dict(name="animal_mnist", split=""), "split"),
        (dict(name="animal_mnist", split="train", data_dir=5), "data_dir"),
    ],
)
def test_load_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        keras_sovit.data.load(**kwargs)


def test_default_data_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_SOVIT_DATA_DIR", str(tmp_path))
    assert keras_sovit.data.default_data_dir() == str(tmp_path)
    monkeypatch.delenv("KERAS_SOVIT_DATA_DIR")
    assert keras_sovit.data.default_data_dir() == os.path.expanduser(
        "~/.keras_sovit/datasets"
    )


class KerasSovitTestNoImage(tfds.core.GeneratorBasedBuilder):
    """A tiny local dataset without image features."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "values": tfds.features.Tensor(
                        shape=(3,), dtype=np.float32
                    ),
                    "label": tfds.features.ClassLabel(num_classes=2),
                }
            ),
            supervised_keys=("values", "label"),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i in range(4):
            yield i, {"values": np.full(3, i, np.float32), "label": i % 2}


def test_dataset_without_image_feature_is_rejected(tmp_path):
    KerasSovitTestNoImage(data_dir=str(tmp_path)).download_and_prepare()
    with pytest.raises(ValueError, match="not an image-classification"):
        keras_sovit.data.load(
            "keras_sovit_test_no_image", "train", str(tmp_path)
        )
