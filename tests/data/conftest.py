"""Shared fixtures for the data tests: one prepared animal_mnist per session."""

import pytest


@pytest.fixture(scope="session")
def animal_mnist_dir(tmp_path_factory):
    """A data dir holding the prepared `animal_mnist` (about 4 s once)."""
    import keras_sovit.data

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    return keras_sovit.data.prepare("animal_mnist", data_dir=data_dir)
