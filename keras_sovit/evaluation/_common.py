"""Data loading, feature extraction and standard errors for evaluators."""

import keras
import numpy as np

from keras_sovit._feature_cache import cached
from keras_sovit._feature_cache import remember
from keras_sovit._validation import check_class_labels
from keras_sovit._validation import check_finite_values
from keras_sovit._validation import check_positive_int
from keras_sovit._validation import check_positive_number
from keras_sovit.data.batches import iterate_batches


def to_int_labels(labels):
    labels = np.asarray(labels)
    if labels.ndim == 2:  # one-hot (or soft) labels
        return np.argmax(labels, axis=1)
    return labels.reshape(-1)


def iterate(data, batch_size, name):
    """Yields (images, int labels) numpy batches of a one-pass source,
    each checked where data enters: finite images, labels >= 0."""
    for images, labels in iterate_batches(data, name, batch_size,
                                          one_pass=True):  # fmt: skip
        labels = check_class_labels(f"{name} labels", to_int_labels(labels))
        yield check_finite_values(f"{name} images", images), labels


def as_labels(name, value, num_examples):
    value = np.asarray(value)
    if value.ndim != 1 or value.shape[0] != num_examples:
        raise ValueError(
            f"`{name}` must be a 1-D array of {num_examples} integer labels. "
            f"Received shape: {value.shape}"
        )
    if not np.issubdtype(value.dtype, np.integer):
        if not np.all(np.equal(np.mod(value, 1), 0)):
            raise ValueError(f"`{name}` must hold integer class ids.")
        value = value.astype(np.int64)
    return value


def load_arrays(data, batch_size, name):
    """All `(images, int labels)` of a one-pass dataset, as arrays.

    A tuple of arrays comes back as the same image array (not a copy), so
    evaluators given one array share its features in a `feature_cache`.
    """
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(
        data[0], np.ndarray
    ):
        images, labels = data[0], to_int_labels(data[1])
        if len(images) != len(labels) or not len(labels):
            raise ValueError(
                f"`{name}` must hold as many images as labels, at least "
                f"one. Received: {len(images)} images, {len(labels)} labels"
            )
        check_finite_values(f"{name} images", images)
        labels = as_labels(f"{name} labels", labels, len(labels))
        return images, check_class_labels(f"{name} labels", labels)
    images, labels = [], []
    for x, y in iterate(data, batch_size, name):
        images.append(x)
        labels.append(y)
    if not labels or sum(len(y) for y in labels) == 0:
        raise ValueError(f"`{name}` is empty: it yielded no examples.")
    labels = np.concatenate(labels)
    return np.concatenate(images), as_labels(f"{name} labels", labels,
                                             len(labels))


def collect_labels(data, batch_size, name):
    labels = [y for _, y in iterate(data, batch_size, name)]
    if not labels or sum(len(y) for y in labels) == 0:
        raise ValueError(f"`{name}` is empty: it yielded no examples.")
    labels = np.concatenate(labels)
    return as_labels(f"{name} labels", labels, len(labels))


def check_num_classes(num_classes, labels):
    if num_classes is None:
        return int(labels.max()) + 1
    return check_positive_int("num_classes", num_classes)


def predict_padded(model, images, batch_size):
    """`model.predict` in chunks of exactly `batch_size` (the last padded).

    Every call feeds batches of one shape, so one compiled predict function
    serves every evaluator and every set size (no retrace for a short last
    batch), and the batch divides evenly over the devices of a
    data-parallel distribution when `batch_size` does. `predict`, not
    `predict_on_batch`: under a tf.distribute strategy Keras 3.15
    `predict_on_batch` feeds the whole batch to every replica.
    """
    chunks = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        short = batch_size - len(chunk)
        if short:
            pad = np.zeros((short, *chunk.shape[1:]), chunk.dtype)
            chunk = np.concatenate([chunk, pad])
        chunks.append(_predict(model, chunk)[: batch_size - short])
    return np.concatenate(chunks)


def _predict(model, images):
    out = model.predict(images, batch_size=len(images), verbose=0)
    if isinstance(out, dict):
        raise ValueError(
            "The model returned a dict; evaluators need a model (or "
            "`.backbone`) that returns one tensor."
        )
    return np.asarray(keras.ops.convert_to_numpy(out), np.float64)


def extract_features(model, images, batch_size):
    """Pooled features of `model.backbone` (or the model), float64.

    Token features `(B, T, D)` are averaged over the token axes.
    """
    extractor = getattr(model, "backbone", None)
    if extractor is None:
        extractor = model
    key = (id(extractor), id(images), len(images))
    features = cached(key)
    if features is not None:
        return features
    features = predict_padded(extractor, images, batch_size)
    if features.ndim > 2:
        features = features.mean(axis=tuple(range(1, features.ndim - 1)))
    # `images` stays alive with the entry so its id is not reused.
    remember(key, features, keep_alive=images)
    return features


def stratified_subset(labels, per_class, seed=0):
    """Indices of `per_class` examples of every class, seeded and sorted.

    Each class's examples are permuted with
    `numpy.random.default_rng((seed, class_id))` and the first `per_class`
    kept, so the subset of one class never depends on the others.

    Args:
        labels: 1-D array of int class ids.
        per_class: int. Examples kept per class.
        seed: int. Defaults to `0`.

    Returns:
        A sorted int array of indices into `labels`.

    Example:

    ```python
    labels = np.arange(100) % 4
    ids = keras_sovit.evaluation.stratified_subset(labels, 5)
    np.bincount(labels[ids])  # [5, 5, 5, 5]
    ```
    """
    labels = np.asarray(labels).reshape(-1)
    per_class = check_positive_int("per_class", per_class)
    chosen = []
    for class_id in np.unique(labels):
        members = np.flatnonzero(labels == class_id)
        if len(members) < per_class:
            raise ValueError(
                f"`per_class`={per_class} but class {int(class_id)} has only "
                f"{len(members)} examples. Received: per_class={per_class}"
            )
        rng = np.random.default_rng((int(seed), int(class_id)))
        chosen.append(rng.permutation(members)[:per_class])
    return np.sort(np.concatenate(chosen))


def mean_se(values):
    """Standard error of the mean of i.i.d. per-example values."""
    values = np.asarray(values, np.float64)
    if len(values) < 2:
        return float("nan")
    return float(values.std(ddof=1) / np.sqrt(len(values)))


def stratified_mean_se(values, labels):
    """Standard error of a mean over a test set drawn per class.

    With `n_c` examples drawn from class `c` (fixed counts, as in a
    stratified split), the overall mean is `sum_c w_c * mean_c` with
    `w_c = n_c / n`, and its variance is `sum_c w_c**2 * s_c**2 / n_c`
    (`s_c` the within-class sample standard deviation). It is smaller than
    the plain i.i.d. standard error by the between-class variance.
    """
    values = np.asarray(values, np.float64)
    labels = np.asarray(labels)
    n = len(values)
    variance = 0.0
    for class_id in np.unique(labels):
        members = values[labels == class_id]
        if len(members) < 2:
            return mean_se(values)
        weight = len(members) / n
        variance += weight**2 * members.var(ddof=1) / len(members)
    return float(np.sqrt(variance))


def crossed_mean_se(errors):
    """Standard error of a mean over shot draws x a shared test set.

    `errors` is a `(draws, test examples)` array (0/1 per prediction).
    The grand mean generalises over both new shot draws and new test
    examples; with the two-way random-effects decomposition
    `z[d, i] = m + a_d + b_i + e_di` its variance is
    `var(a) / D + var(b) / n + var(e) / (D n)`, estimated from the mean
    squares of rows (`MS_r`), columns (`MS_c`) and interaction (`MS_e`) as
    `(max(MS_r - MS_e, 0) + max(MS_c - MS_e, 0) + MS_e) / (D n)`. With one
    draw it is the plain per-example standard error (the draw-to-draw
    variance is then unknown, and not included).

    Example:

    ```python
    errors = np.random.default_rng(0).random((5, 300)) < 0.3
    keras_sovit.evaluation.crossed_mean_se(errors)  # about 0.012
    ```
    """
    z = np.asarray(errors, np.float64)
    draws, n = z.shape
    if draws == 1:
        return mean_se(z[0])
    grand = z.mean()
    rows = z.mean(axis=1, keepdims=True)
    cols = z.mean(axis=0, keepdims=True)
    ms_rows = n * np.sum((rows - grand) ** 2) / (draws - 1)
    ms_cols = draws * np.sum((cols - grand) ** 2) / (n - 1)
    residual = z - rows - cols + grand
    ms_int = np.sum(residual**2) / ((draws - 1) * (n - 1))
    variance = (
        max(ms_rows - ms_int, 0.0) + max(ms_cols - ms_int, 0.0) + ms_int
    ) / (draws * n)
    return float(np.sqrt(variance))


def check_l2(l2_regs, l2_reg):
    """`l2_regs` as a non-empty tuple of positive numbers; `l2_reg`
    (`None` or one such number) checked."""
    l2_regs = tuple(l2_regs) if np.iterable(l2_regs) else (l2_regs,)
    if not l2_regs:
        raise ValueError("`l2_regs` must not be empty. Received: ()")
    for value in l2_regs:
        check_positive_number("l2_regs", value)
    if l2_reg is not None:
        check_positive_number("l2_reg", l2_reg)
    return l2_regs
