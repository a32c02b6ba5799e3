"""Test-session setup shared by every test directory.

Before any framework initialises: two host devices for JAX and two logical
CPU devices for TensorFlow, so distribution tests run real multi-replica
code on a CPU-only machine.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if "xla_force_host_platform_device_count" not in os.environ.get(
    "XLA_FLAGS", ""
):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + " --xla_force_host_platform_device_count=2"
    ).strip()

import pytest  # noqa: E402


def _load_triton_first():
    """Imports triton (a dependency of torch's CUDA build) before TF.

    Loading triton after TensorFlow segfaults (their bundled native
    libraries clash), and torch imports it lazily, e.g. when torchvision
    or timm loads `torch._dynamo`. Loaded first, both coexist (0.2 s).
    """
    try:
        import triton  # noqa: F401
    except ImportError:
        pass


_load_triton_first()


def _split_tf_cpu():
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
        )
    except RuntimeError:
        pass  # Already initialised by an earlier import.


_split_tf_cpu()


def pytest_addoption(parser):
    parser.addoption(
        "--run_large", action="store_true", help="Run tests marked large."
    )


def pytest_configure(config):
    config.addinivalue_line("markers", "large: slow test, skipped by default")
    config.addinivalue_line(
        "markers", "tf_only: needs the TensorFlow backend (tf.distribute)"
    )
    config.addinivalue_line(
        "markers",
        "backend_free: computes nothing on the Keras backend (the oracle's "
        "own logic); run on the TensorFlow pass, deselected on the others",
    )


def pytest_collection_modifyitems(config, items):
    import keras

    skip_large = pytest.mark.skip(reason="needs --run_large")
    skip_tf = pytest.mark.skip(reason="needs KERAS_BACKEND=tensorflow")
    for item in items:
        if "large" in item.keywords and not config.getoption("--run_large"):
            item.add_marker(skip_large)
        if ("tf_only" in item.keywords
                and keras.backend.backend() != "tensorflow"):
            item.add_marker(skip_tf)


@pytest.fixture(scope="session")
def mirrored_strategy():
    """One MirroredStrategy over two logical CPUs, shared by the session.

    TensorFlow breaks when a second MirroredStrategy trains in the same
    process, so every test shares this one.
    """
    import tensorflow as tf

    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
