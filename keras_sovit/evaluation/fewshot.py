"""Few-shot linear evaluation: the metric the paper's scaling laws fit.

The closed-form probe follows big_vision's few-shot least-squares evaluator
(`big_vision/evaluators/fewshot_lsr.py`): features are standardised with the
few-shot train set's per-dimension mean and standard deviation (plus 1e-5),
a constant feature of 100 is appended as an almost unregularised bias, the
targets are one-hot labels rescaled to {-1, +1}, the weights are the ridge
solution `(X^T X + l2 I)^-1 X^T Y`, and the prediction is the argmax.

`FewShotEvaluator` averages the probe over several seeded shot draws,
chooses the ridge strength by cross-validation on the shots alone (never on
the test set) unless it is fixed, and reports a standard error that covers
both the shot draws and the test-set sampling.
"""

import copy

import keras
import numpy as np

from keras_sovit._validation import check_class_labels
from keras_sovit._validation import check_positive_number
from keras_sovit.evaluation._common import as_labels as _as_labels
from keras_sovit.evaluation._common import check_l2
from keras_sovit.evaluation._common import check_num_classes
from keras_sovit.evaluation._common import collect_labels
from keras_sovit.evaluation._common import crossed_mean_se
from keras_sovit.evaluation._common import extract_features
from keras_sovit.evaluation._common import iterate
from keras_sovit.evaluation._common import load_arrays
from keras_sovit.evaluation._common import stratified_subset

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

    def scores(self, features, l2_reg):
        weights = (self.left / (self.eigs + l2_reg)) @ self.right
        return self._design(features) @ weights

    def predict(self, features, l2_reg):
        return np.argmax(self.scores(features, l2_reg), axis=1)


def select_l2(features, labels, folds, l2_regs, num_classes):
    """The ridge strength with the lowest cross-validated error.

    `folds[i]` is the fold of example `i`; each fold is predicted by a probe
    fitted on the others. Ties in error go to the lower cross-validated
    squared error of the {-1, +1} targets, then to the larger strength.

    Returns:
        `(l2, cv_errors)`, the errors in the order of `l2_regs`.

    Example:

    ```python
    x = np.random.default_rng(0).normal(size=(40, 8))
    y = np.arange(40) % 4
    x[np.arange(40), y] += 2.0
    l2, errors = keras_sovit.evaluation.select_l2(
        x, y, folds=np.arange(40) // 4 % 5, l2_regs=(0.1, 10.0),
        num_classes=4,
    )
    ```
    """
    l2_regs = tuple(float(v) for v in l2_regs)
    wrong = np.zeros(len(l2_regs))
    squared = np.zeros(len(l2_regs))
    targets = 2.0 * np.eye(num_classes)[labels] - 1.0
    for fold in np.unique(folds):
        held = folds == fold
        probe = _RidgeProbe(features[~held], labels[~held], num_classes)
        for k, l2 in enumerate(l2_regs):
            out = probe.scores(features[held], l2)
            wrong[k] += np.sum(np.argmax(out, 1) != labels[held])
            squared[k] += np.sum((out - targets[held]) ** 2)
    order = sorted(
        range(len(l2_regs)),
        key=lambda k: (wrong[k], squared[k], -l2_regs[k]),
    )
    return l2_regs[order[0]], wrong / len(labels)


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
    check_class_labels("train_labels", train_y, num_classes)
    check_class_labels("test_labels", test_y, num_classes)
    probe = _RidgeProbe(train_x, train_y, int(num_classes))
    return float(np.mean(probe.predict(test_x, float(l2_reg)) != test_y))


class FewShotEvaluator(keras.callbacks.Callback):
    """Few-shot linear-probe error of a model's frozen features, with its SE.

    At the end of each epoch (and on demand through `evaluate`), extracts
    pooled features with `model.backbone` (or the model itself when it has
    no `backbone`); token features `(B, T, D)` are averaged over `T`. For
    every `n` in `shots` and each of `num_draws` shot draws it samples `n`
    examples per class from `train_ds`, fits the closed-form probe of
    `keras_sovit.evaluation.fewshot_error` and scores the test set. It
    returns (and logs) the mean error over draws as
    `fewshot_{n}shot_error` and its standard error as
    `fewshot_{n}shot_error_se`.

    Sampling: draw `d` permutes every class's examples with
    `numpy.random.default_rng(seed + d)` and takes the first `n` (so smaller
    shot sets are nested in larger ones). The train dataset's order must be
    deterministic.

    Ridge strength: with `l2_reg=None` it is chosen per draw by
    leave-one-shot-out cross-validation on the shots alone: fold `j` holds
    out the `j`-th shot of every class and is predicted by a probe fitted on
    the other `n - 1` (`n` folds; see `select_l2` for the tie rule). With
    one shot per class there is nothing to hold out and the largest
    candidate is used (big_vision's fixed `2**10` for the default grid). A
    number fixes it. The values used are kept in `selected_l2`.

    Test set: all of `test_ds`, or `test_per_class` examples of every class
    (`stratified_subset(labels, test_per_class, seed)`), so that the class
    mix does not vary with the draw of the test set.

    Standard error: the errors of all draws on all test examples form a
    `(draws, examples)` table; `crossed_mean_se` gives the standard error
    of its mean under new draws and new test examples (it ignores the
    variance reduction of a stratified test set, so it is slightly
    conservative there). Measured on animal_mnist, one draw with the L2
    chosen on 20 held-out shots had a draw-to-draw SD of 0.04-0.07 on top
    of a test-set SD of 0.025-0.028 for 300 images (issue 10): use several
    draws and a large test set.

    Args:
        train_ds: `tf.data.Dataset` of `(image, label)` (or `{"image",
            "label"}`), batched or not, or a tuple `(images, labels)` of
            arrays. Labels are class ids or one-hot rows. Must make one pass.
        test_ds: same kinds as `train_ds`.
        shots: tuple of ints. Shots per class. Defaults to `(10,)`.
        l2_regs: tuple of floats. Candidate ridge strengths. Defaults to
            `2**-6, 2**-5, ..., 2**10`.
        seed: int. Seed of the shot draws and the test subset. Defaults to
            `0`.
        num_classes: int or `None`. Inferred from the train labels when
            `None`.
        batch_size: int. Feature-extraction batch size. Defaults to `256`.
        l2_reg: float or `None`. A fixed ridge strength, or `None` for
            cross-validation over `l2_regs`. Defaults to `None`.
        num_draws: int. Independent shot draws averaged. Defaults to `5`.
        test_per_class: int or `None`. Stratified test subset size per
            class, or `None` for the whole test set. Defaults to `None`.

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
    evaluator.evaluate(model)
    # {"fewshot_5shot_error": ..., "fewshot_5shot_error_se": ...}
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
        l2_reg=None,
        num_draws=5,
        test_per_class=None,
    ):
        super().__init__()
        self._check_args(shots, l2_regs, batch_size, l2_reg)
        for name, value in (("seed", seed), ("num_draws", num_draws)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(
                    f"`{name}` must be an integer. Received: {name}={value!r}"
                )
        if num_draws < 1:
            raise ValueError(
                f"`num_draws` must be >= 1. Received: num_draws={num_draws}"
            )
        self.train_ds = train_ds
        self.test_ds = test_ds
        self.shots = tuple(int(n) for n in shots)
        self.l2_regs = tuple(sorted(float(v) for v in l2_regs))
        self.seed = seed
        self.batch_size = batch_size
        self.l2_reg = None if l2_reg is None else float(l2_reg)
        self.num_draws = num_draws
        self.test_per_class = test_per_class
        self.selected_l2 = {}
        train_labels = collect_labels(train_ds, batch_size, "train_ds")
        test_labels = collect_labels(test_ds, batch_size, "test_ds")
        self.num_classes = check_num_classes(num_classes, train_labels)
        check_class_labels("train_ds", train_labels, self.num_classes,
                          min_classes=2)
        check_class_labels("test_ds", test_labels, self.num_classes)
        self._check_shots(train_labels)
        self._train_labels = train_labels
        self._test_ids = None
        if test_per_class is not None:
            self._test_ids = stratified_subset(
                test_labels, test_per_class, seed
            )
        self._samples = self._sample(train_labels)
        self._shot_images = None

    @staticmethod
    def _check_args(shots, l2_regs, batch_size, l2_reg):
        shots = tuple(shots) if np.iterable(shots) else (shots,)
        if not shots or any(
            isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1
            for n in shots
        ):
            raise ValueError(
                "`shots` must be a non-empty tuple of positive integers. "
                f"Received: shots={shots!r}"
            )
        l2_regs = check_l2(l2_regs, l2_reg)
        if isinstance(batch_size, bool) or not isinstance(
            batch_size, int
        ) or batch_size < 1:
            raise ValueError(
                "`batch_size` must be a positive integer. Received: "
                f"batch_size={batch_size!r}"
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
        """Per draw: per class, a seeded permutation of its example ids."""
        samples = []
        for offset in range(self.num_draws):
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
        ids = [p[:n] for per_draw in self._samples for p in per_draw]
        return np.unique(np.concatenate(ids))

    def _load_shot_images(self):
        """Caches the images of every sampled shot (a small set)."""
        needed = self._needed_ids()
        images, offset = [], 0
        for batch, _ in iterate(self.train_ds, self.batch_size, "train_ds"):
            ids = np.arange(offset, offset + len(batch))
            images.append(batch[np.isin(ids, needed)])
            offset += len(batch)
        self._shot_images = (needed, np.concatenate(images))

    def _test_features(self, model):
        if isinstance(self.test_ds, (tuple, list)):
            images, labels = load_arrays(
                self.test_ds, self.batch_size, "test_ds"
            )
            feats = extract_features(model, images, self.batch_size)
            if self._test_ids is not None:
                return feats[self._test_ids], labels[self._test_ids]
            return feats, labels.astype(int)
        feats, labels = [], []
        for images, y in iterate(self.test_ds, self.batch_size, "test_ds"):
            feats.append(extract_features(model, images, self.batch_size))
            labels.append(y)
        feats = np.concatenate(feats)
        labels = np.concatenate(labels).astype(int)
        if self._test_ids is not None:
            return feats[self._test_ids], labels[self._test_ids]
        return feats, labels

    def _pick_l2(self, features, per_class, n):
        if self.l2_reg is not None:
            return self.l2_reg
        if n < 2 or len(self.l2_regs) == 1:
            return self.l2_regs[-1]
        ids = np.concatenate([p[:n] for p in per_class])
        folds = np.concatenate([np.arange(n) for _ in per_class])
        l2, _ = select_l2(
            features(ids), self._train_labels[ids], folds, self.l2_regs,
            self.num_classes,
        )
        return l2

    def evaluate(self, model):
        """Returns `fewshot_{n}shot_error` and `..._se` for each `n`."""
        if self._shot_images is None:
            self._load_shot_images()
        needed, images = self._shot_images
        shot_features = extract_features(model, images, self.batch_size)

        def features(ids):
            return shot_features[np.searchsorted(needed, ids)]

        test_x, test_y = self._test_features(model)
        results = {}
        for n in self.shots:
            wrong, chosen = [], []
            for per_class in self._samples:
                l2 = self._pick_l2(features, per_class, n)
                ids = np.concatenate([p[:n] for p in per_class])
                probe = _RidgeProbe(
                    features(ids), self._train_labels[ids], self.num_classes
                )
                wrong.append(probe.predict(test_x, l2) != test_y)
                chosen.append(l2)
            wrong = np.asarray(wrong, np.float64)
            name = f"fewshot_{n}shot_error"
            results[name] = float(wrong.mean())
            results[f"{name}_se"] = crossed_mean_se(wrong)
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


