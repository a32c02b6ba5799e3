"""The data seam: one way from any batch source to NumPy `(x, y)` batches.

`BranchedRun`, `SoViTHyperModel` and every evaluator read their data
through `iterate_batches`, so each accepts the same sources: a tuple
`(images, labels)` of arrays, a `tf.data.Dataset`, or any iterable of
`(x, y)` batches (`ArrayPipeline`, a generator, a list). TensorFlow is
imported only when it is already loaded, so a JAX or torch process
without it never pays for (or needs) it.
"""

import sys

import numpy as np

from keras_sovit._validation import check_positive_int


def iterate_batches(data, name="data", batch_size=None, one_pass=False):
    """A fresh iterator of `(x, y)` NumPy batches from `data`.

    Args:
        data: a tuple `(images, labels)` of arrays (sliced into batches of
            `batch_size`), a `tf.data.Dataset` of batches or of single
            examples (batched by `batch_size`; dict elements with `"image"`
            and `"label"` keys become pairs; iterated with tf.data's
            autotuner off, see `without_autotune`), or any other iterable
            of `(x, y)` pairs.
        name: str. The argument's name in error messages.
        batch_size: int or `None`. Needed for arrays and unbatched
            datasets.
        one_pass: bool. Refuse a source that never ends (a repeated
            dataset, an `ArrayPipeline` with `repeat=True`), as an
            evaluator must.

    Example:

    ```python
    import numpy as np
    import keras_sovit

    batches = keras_sovit.data.iterate_batches(
        (np.zeros((10, 8, 8, 3)), np.arange(10)), batch_size=4
    )
    [len(y) for _, y in batches]  # [4, 4, 2]
    ```
    """
    if isinstance(data, (tuple, list)) and len(data) == 2 and hasattr(
        data[0], "shape"
    ):
        return _array_batches(data, name, batch_size)
    tf = sys.modules.get("tensorflow")
    if tf is not None and isinstance(data, tf.data.Dataset):
        return _dataset_batches(tf, data, name, batch_size, one_pass)
    if one_pass and getattr(data, "infinite", False):
        raise ValueError(
            f"`{name}` never ends (repeat=True); pass one that makes one "
            f"pass, e.g. training=False. Received: {name}={data!r}"
        )
    try:
        batches = iter(data)
    except TypeError:
        raise ValueError(
            f"`{name}` must be (images, labels) arrays, a tf.data.Dataset "
            f"or an iterable of (x, y) batches. Received: "
            f"{type(data).__name__}"
        ) from None
    return _pairs(batches, name)


def _pairs(batches, name):
    for batch in batches:
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ValueError(
                f"`{name}` must yield (x, y) pairs. Received an element of "
                f"type {type(batch).__name__}"
            )
        yield batch[0], batch[1]


def _array_batches(data, name, batch_size):
    images, labels = np.asarray(data[0]), np.asarray(data[1])
    if len(images) != len(labels):
        raise ValueError(
            f"`{name}` images and labels differ in length: {len(images)} vs "
            f"{len(labels)}"
        )
    batch_size = check_positive_int("batch_size", batch_size)
    for start in range(0, len(images), batch_size):
        stop = start + batch_size
        yield images[start:stop], labels[start:stop]


def _dataset_batches(tf, data, name, batch_size, one_pass):
    if one_pass and data.cardinality() == tf.data.INFINITE_CARDINALITY:
        raise ValueError(
            f"`{name}` is an infinite (repeated) dataset; pass a dataset "
            "that makes one pass, e.g. input_pipeline(..., training=False)."
        )
    spec = data.element_spec
    if isinstance(spec, dict):
        data = data.map(lambda d: (d["image"], d["label"]))
        spec = data.element_spec
    if spec[0].shape.rank == 3:  # unbatched examples
        data = data.batch(check_positive_int("batch_size", batch_size))
    return without_autotune(data).as_numpy_iterator()


def without_autotune(dataset):
    """`dataset` with tf.data's autotuner off, unless its options set it.

    Destroying an iterator whose autotuner runs waits for the autotuner's
    thread, up to 16 s in benchmarks/iterator_teardown.py; with the
    autotuner off, `AUTOTUNE` parallelism and buffer sizes take tf.data's
    fixed defaults (as fast for `keras_sovit.data.input_pipeline` there).
    A dataset whose options set `autotune.enabled` is returned as it is.
    """
    import tensorflow as tf

    if dataset.options().autotune.enabled is not None:
        return dataset
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)
