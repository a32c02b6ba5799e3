"""Few-shot linear evaluation: the metric the paper's scaling laws fit.

The closed-form probe follows big_vision's few-shot least-squares evaluator
(`big_vision/evaluators/fewshot_lsr.py`): features are standardised with the
few-shot train set's per-dimension mean and standard deviation (plus 1e-5),
a constant feature of 100 is appended as an almost unregularised bias, the
targets are one-hot labels rescaled to {-1, +1}, the weights are the ridge
solution `(X^T X + l2 I)^-1 X^T Y`, and the prediction is the argmax.
"""

import copy

import keras
import numpy as np

from keras_sovit._validation import check_positive_number

BIAS_CONSTANT = 100.0
STD_EPSILON = 1e-5
DEFAULT_L2_REGS = tuple(2.0**k for k in range(-6, 11))


def _as_features(name, value):
    value = np.asarray(value, dtype=np.float64)
    if value.ndim != 2 or value.shape[0] == 0:
        raise ValueError(
            f"`{name}` must be a non-empty 2-D array (examples, features). "
            f"Received shape: {value.shape}"
        )
    if not np.all(np.isfinite(value)):
        raise ValueError(f"`{name}` contains NaN or infinite values.")
    return value


def _as_labels(name, value, num_examples):
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


def _check_label_range(name, labels, num_classes):
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.size:
        raise ValueError(
            f"`{name}` has labels out of range [0, {num_classes}): "
            f"{sorted(set(bad.tolist()))[:5]}. Pass the right `num_classes`."
        )


class _RidgeProbe:
    """Ridge regression onto {-1, +1} targets, cheap to re-solve per l2.

    One eigendecomposition of the Gram matrix (primal `X^T X` when there are
    at least as many examples as dimensions, dual `X X^T` otherwise) serves
    every l2 strength.
    """

    def __init__(self, features, labels, num_classes):
        self.mean = features.mean(axis=0, keepdims=True)
        self.std = features.std(axis=0, keepdims=True) + STD_EPSILON
        x = self._design(features)
        targets = 2.0 * np.eye(num_classes)[labels] - 1.0
        if x.shape[0] >= x.shape[1]:
            self.eigs, q = np.linalg.eigh(x.T @ x)
            self.left, self.right = q, q.T @ (x.T @ targets)
        else:
            self.eigs, q = np.linalg.eigh(x @ x.T)
            self.left, self.right = x.T @ q, q.T @ targets

    def _design(self, features):
        x = (features - self.mean) / self.std
        bias = np.full((x.shape[0], 1), BIAS_CONSTANT)
        return np.concatenate([x, bias], axis=1)

    def predict(self, features, l2_reg):
        weights = (self.left / (self.eigs + l2_reg)) @ self.right
        return np.argmax(self._design(features) @ weights, axis=1)


def fewshot_error(
    train_features,
    train_labels,
    test_features,
    test_labels,
    l2_reg,
    num_classes=None,
):
    """Error rate of a closed-form linear probe (big_vision few-shot LSR).

    Standardises features with the train set's statistics, appends a bias
    feature of 100, regresses {-1, +1} one-hot targets with ridge strength
    `l2_reg` and returns the fraction of test examples whose argmax
    prediction is wrong.

    Args:
        train_features: array `(n_train, dim)`. Frozen features of the
            few-shot train examples.
        train_labels: int array `(n_train,)`. Their class ids.
        test_features: array `(n_test, dim)`.
        test_labels: int array `(n_test,)`.
        l2_reg: float. Positive ridge strength.
        num_classes: int or `None`. Number of classes; inferred as
            `max(train_labels) + 1` when `None`.

    Returns:
        The test error rate, a float in [0, 1].

    Example:

    ```python
    import numpy as np
    x = np.random.default_rng(0).normal(size=(40, 8))
    y = np.arange(40) % 4
    x[np.arange(40), y] += 10.0  # class k lights up feature k
    keras_sovit.evaluation.fewshot_error(x, y, x, y, l2_reg=1.0)  # 0.0
    ```
    """
    train_x = _as_features("train_features", train_features)
    test_x = _as_features("test_features", test_features)
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(
            "`train_features` and `test_features` must have the same feature "
            f"dimension. Received: {train_x.shape[1]} and {test_x.shape[1]}"
        )
    train_y = _as_labels("train_labels", train_labels, train_x.shape[0])
    test_y = _as_labels("test_labels", test_labels, test_x.shape[0])
    check_positive_number("l2_reg", l2_reg)
    if num_classes is None:
        num_classes = int(max(train_y.max(), 0)) + 1
    elif isinstance(num_classes, bool) or not isinstance(
        num_classes, (int, np.integer)
    ) or num_classes < 1:
        raise ValueError(
            "`num_classes` must be a positive integer. Received: "
            f"num_classes={num_classes!r}"
        )
    _check_label_range("train_labels", train_y, num_classes)
    _check_label_range("test_labels", test_y, num_classes)
    probe = _RidgeProbe(train_x, train_y, int(num_classes))
    return float(np.mean(probe.predict(test_x, float(l2_reg)) != test_y))


def _to_int_labels(labels):
    labels = np.asarray(labels)
    if labels.ndim == 2:  # one-hot (or soft) labels
        return np.argmax(labels, axis=1)
    return labels.reshape(-1)


def _iterate(data, batch_size, name):
    """Yields (images, int labels) numpy batches from arrays or tf.data."""
    if isinstance(data, (tuple, list)) and len(data) == 2:
        images, labels = np.asarray(data[0]), np.asarray(data[1])
        if len(images) != len(labels):
            raise ValueError(
                f"`{name}` images and labels differ in length: "
                f"{len(images)} vs {len(labels)}"
            )
        for start in range(0, len(images), batch_size):
            stop = start + batch_size
            yield images[start:stop], _to_int_labels(labels[start:stop])
        return
    import tensorflow as tf

    if not isinstance(data, tf.data.Dataset):
        raise ValueError(
            f"`{name}` must be a tf.data.Dataset of (image, label) or a tuple "
            f"(images, labels) of arrays. Received: {type(data).__name__}"
        )
    if data.cardinality() == tf.data.INFINITE_CARDINALITY:
        raise ValueError(
            f"`{name}` is an infinite (repeated) dataset; pass a dataset "
            "that makes one pass, e.g. input_pipeline(..., training=False)."
        )
    spec = data.element_spec
    if isinstance(spec, dict):
        data = data.map(lambda d: (d["image"], d["label"]))
        spec = data.element_spec
    if spec[0].shape.rank == 3:  # unbatched examples
        data = data.batch(batch_size)
    for images, labels in data.as_numpy_iterator():
        yield images, _to_int_labels(labels)


def _collect_labels(data, batch_size, name):
    labels = [y for _, y in _iterate(data, batch_size, name)]
    if not labels or sum(len(y) for y in labels) == 0:
        raise ValueError(f"`{name}` is empty: it yielded no examples.")
    labels = np.concatenate(labels)
    return _as_labels(f"{name} labels", labels, len(labels))


def _extract(model, images):
    extractor = getattr(model, "backbone", None)
    if extractor is None:
        extractor = model
    # `predict`, not `predict_on_batch`: under a tf.distribute strategy
    # Keras 3.15 `predict_on_batch` feeds the whole batch to every replica
    # and concatenates their outputs (2x the rows with 2 replicas).
    features = extractor.predict(images, batch_size=len(images), verbose=0)
    if isinstance(features, dict):
        raise ValueError(
            "The feature extractor returned a dict; FewShotEvaluator needs a "
            "model (or `.backbone`) that returns one tensor."
        )
    features = np.asarray(keras.ops.convert_to_numpy(features), np.float64)
    if features.ndim > 2:  # (B, T, D) tokens: mean over the token axes
        features = features.mean(axis=tuple(range(1, features.ndim - 1)))
    return features


class FewShotEvaluator(keras.callbacks.Callback):
    """Few-shot linear-probe error of a model's frozen features.

    At the end of each epoch (and on demand through `evaluate`), extracts
    pooled features with `model.backbone` (or the model itself when it has
    no `backbone`), in batches with `predict`; token features
    `(B, T, D)` are averaged over `T`. It then samples `n` examples per class
    from `train_ds` for every `n` in `shots`, fits the closed-form probe of
    `keras_sovit.evaluation.fewshot_error` and logs the test error as
    `fewshot_{n}shot_error` into the epoch logs, so Keras `History` and
    KerasTuner can use it as an objective.

    Sampling: for each seed (`seed`, `seed + 1`, ...), every class's
    examples are permuted with `numpy.random.default_rng(seed)` and the
    first `n` are the `n` shots (so smaller shot sets are nested in larger
    ones). The train dataset's order must be deterministic.

    L2 selection: the last `h = max(1, floor(n * holdout_fraction))` shots of
    every class are held out, the probe is fitted on the other `n - h` per
    class for every value in `l2_regs`, and the value with the lowest
    held-out error wins (ties go to the larger value). The probe is then
    refitted on all `n` shots with that value and scored on `test_ds`.
    With `n == 1`, a single candidate or `holdout_fraction=0` there is no
    selection and the largest candidate is used (big_vision's fixed
    `2**10` for the default grid). With several seeds the errors are
    averaged. The chosen values are kept in `selected_l2`.

    Args:
        train_ds: `tf.data.Dataset` of `(image, label)` (or `{"image",
            "label"}`), batched or not, or a tuple `(images, labels)` of
            arrays. Labels are class ids or one-hot rows. Must make one pass.
        test_ds: same kinds as `train_ds`.
        shots: tuple of ints. Shots per class. Defaults to `(10,)`.
        l2_regs: tuple of floats. Candidate ridge strengths. Defaults to
            `2**-6, 2**-5, ..., 2**10`.
        seed: int. Seed of the shot sampling. Defaults to `0`.
        num_classes: int or `None`. Inferred from the train labels when
            `None`.
        batch_size: int. Feature-extraction batch size for unbatched
            datasets and arrays. Defaults to `256`.
        holdout_fraction: float in [0, 1). Fraction of the shots held out to
            pick the L2 strength. Defaults to `0.2`.
        num_seeds: int. Number of independent shot samples averaged.
            Defaults to `1`.

    Example:

    ```python
    import numpy as np
    rng = np.random.default_rng(0)
    images = rng.normal(size=(60, 8, 8, 3)).astype("float32")
    labels = np.arange(60) % 3
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten()])
    evaluator = keras_sovit.evaluation.FewShotEvaluator(
        (images[:30], labels[:30]), (images[30:], labels[30:]), shots=(5,)
    )
    evaluator.evaluate(model)  # {"fewshot_5shot_error": ...}
    ```
    """

    def __init__(
        self,
        train_ds,
        test_ds,
        shots=(10,),
        l2_regs=DEFAULT_L2_REGS,
        seed=0,
        num_classes=None,
        batch_size=256,
        holdout_fraction=0.2,
        num_seeds=1,
    ):
        super().__init__()
        self._check_args(shots, l2_regs, batch_size, holdout_fraction)
        for name, value in (("seed", seed), ("num_seeds", num_seeds)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(
                    f"`{name}` must be an integer. Received: {name}={value!r}"
                )
        if num_seeds < 1:
            raise ValueError(
                f"`num_seeds` must be >= 1. Received: num_seeds={num_seeds}"
            )
        self.train_ds = train_ds
        self.test_ds = test_ds
        self.shots = tuple(int(n) for n in shots)
        self.l2_regs = tuple(sorted(float(v) for v in l2_regs))
        self.seed = seed
        self.batch_size = batch_size
        self.holdout_fraction = float(holdout_fraction)
        self.num_seeds = num_seeds
        self.selected_l2 = {}
        train_labels = _collect_labels(train_ds, batch_size, "train_ds")
        test_labels = _collect_labels(test_ds, batch_size, "test_ds")
        if num_classes is None:
            num_classes = int(train_labels.max()) + 1
        elif isinstance(num_classes, bool) or not isinstance(
            num_classes, int
        ) or num_classes < 1:
            raise ValueError(
                "`num_classes` must be a positive integer. Received: "
                f"num_classes={num_classes!r}"
            )
        self.num_classes = num_classes
        _check_label_range("train_ds", train_labels, num_classes)
        _check_label_range("test_ds", test_labels, num_classes)
        self._check_shots(train_labels)
        self._train_labels = train_labels
        self._samples = self._sample(train_labels)
        self._shot_images = None

    @staticmethod
    def _check_args(shots, l2_regs, batch_size, holdout_fraction):
        shots = tuple(shots) if np.iterable(shots) else (shots,)
        if not shots or any(
            isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1
            for n in shots
        ):
            raise ValueError(
                "`shots` must be a non-empty tuple of positive integers. "
                f"Received: shots={shots!r}"
            )
        l2_regs = tuple(l2_regs) if np.iterable(l2_regs) else (l2_regs,)
        if not l2_regs:
            raise ValueError("`l2_regs` must not be empty. Received: ()")
        for value in l2_regs:
            check_positive_number("l2_regs", value)
        if isinstance(batch_size, bool) or not isinstance(
            batch_size, int
        ) or batch_size < 1:
            raise ValueError(
                "`batch_size` must be a positive integer. Received: "
                f"batch_size={batch_size!r}"
            )
        if not 0.0 <= holdout_fraction < 1.0:
            raise ValueError(
                "`holdout_fraction` must be in [0, 1). Received: "
                f"holdout_fraction={holdout_fraction!r}"
            )

    def _check_shots(self, labels):
        counts = np.bincount(labels, minlength=self.num_classes)
        smallest = int(counts.argmin())
        if max(self.shots) > counts[smallest]:
            raise ValueError(
                f"`shots` asks for {max(self.shots)} examples per class but "
                f"class {smallest} has only {counts[smallest]} in train_ds. "
                f"Received: shots={self.shots}"
            )

    def _sample(self, labels):
        """Per seed: per class, a seeded permutation of its example ids."""
        samples = []
        for offset in range(self.num_seeds):
            rng = np.random.default_rng(self.seed + offset)
            samples.append(
                [
                    rng.permutation(np.flatnonzero(labels == c))
                    for c in range(self.num_classes)
                ]
            )
        return samples

    def _needed_ids(self):
        n = max(self.shots)
        ids = [p[:n] for per_seed in self._samples for p in per_seed]
        return np.unique(np.concatenate(ids))

    def _load_shot_images(self):
        """Caches the images of every sampled shot (a small set)."""
        needed = self._needed_ids()
        images, offset = [], 0
        for batch, _ in _iterate(self.train_ds, self.batch_size, "train_ds"):
            ids = np.arange(offset, offset + len(batch))
            images.append(batch[np.isin(ids, needed)])
            offset += len(batch)
        self._shot_images = (needed, np.concatenate(images))

    def _features(self, model, images):
        chunks = [
            _extract(model, images[i : i + self.batch_size])
            for i in range(0, len(images), self.batch_size)
        ]
        return np.concatenate(chunks)

    def _test_features(self, model):
        feats, labels = [], []
        for images, y in _iterate(self.test_ds, self.batch_size, "test_ds"):
            feats.append(self._features(model, images))
            labels.append(y)
        return np.concatenate(feats), np.concatenate(labels).astype(int)

    def _pick_l2(self, features, per_class, n):
        holdout = int(np.floor(n * self.holdout_fraction))
        if n < 2 or len(self.l2_regs) == 1 or self.holdout_fraction == 0:
            return self.l2_regs[-1]
        holdout = max(1, holdout)
        fit = np.concatenate([p[: n - holdout] for p in per_class])
        held = np.concatenate([p[n - holdout : n] for p in per_class])
        labels = self._train_labels
        probe = _RidgeProbe(features(fit), labels[fit], self.num_classes)
        errors = [
            np.mean(probe.predict(features(held), l2) != labels[held])
            for l2 in self.l2_regs
        ]
        best = min(errors)
        return max(l2 for l2, e in zip(self.l2_regs, errors) if e == best)

    def evaluate(self, model):
        """Returns `{"fewshot_{n}shot_error": float}` for each `n`."""
        if self._shot_images is None:
            self._load_shot_images()
        needed, images = self._shot_images
        shot_features = self._features(model, images)

        def features(ids):
            return shot_features[np.searchsorted(needed, ids)]

        test_x, test_y = self._test_features(model)
        results = {}
        for n in self.shots:
            errors, chosen = [], []
            for per_class in self._samples:
                l2 = self._pick_l2(features, per_class, n)
                ids = np.concatenate([p[:n] for p in per_class])
                probe = _RidgeProbe(
                    features(ids), self._train_labels[ids], self.num_classes
                )
                errors.append(np.mean(probe.predict(test_x, l2) != test_y))
                chosen.append(l2)
            results[f"fewshot_{n}shot_error"] = float(np.mean(errors))
            self.selected_l2[n] = chosen
        return results

    def __deepcopy__(self, memo):
        # KerasTuner deep-copies callbacks per trial; tf.data datasets cannot
        # be deep-copied, and the datasets and cached shot images are
        # read-only, so copies share them and keep their own results.
        clone = copy.copy(self)
        clone.selected_l2 = {}
        memo[id(self)] = clone
        return clone

    def on_epoch_end(self, epoch, logs=None):
        results = self.evaluate(self.model)
        if logs is not None:
            logs.update(results)
