"""Many-shot linear probe: a whole probe-train split onto a test split."""

import numpy as np

from keras_sovit._validation import check_class_labels
from keras_sovit._validation import check_positive_int
from keras_sovit.evaluation._common import check_l2
from keras_sovit.evaluation._common import check_num_classes
from keras_sovit.evaluation._common import extract_features
from keras_sovit.evaluation._common import load_arrays
from keras_sovit.evaluation._common import mean_se
from keras_sovit.evaluation._common import stratified_mean_se
from keras_sovit.evaluation._common import stratified_subset
from keras_sovit.evaluation.fewshot import DEFAULT_L2_REGS
from keras_sovit.evaluation.fewshot import _RidgeProbe
from keras_sovit.evaluation.fewshot import select_l2


class LinearProbeEvaluator:
    """Test error of a ridge probe fitted on a whole probe-train split.

    The closed-form probe of `keras_sovit.evaluation.fewshot_error`, fitted
    on the frozen features of every example of `train_data` (a "many-shot"
    probe: far less sampling noise than a few-shot one) and scored on
    `test_data`. The ridge strength is fixed (`l2_reg`) or chosen by
    stratified `folds`-fold cross-validation on the probe-train split
    alone (fold of an example: its rank in a seeded per-class permutation,
    modulo `folds`; ties as in `select_l2`).

    `evaluate(model)` returns `{name}_error` and `{name}_error_se`. The
    standard error is that of a mean over the test examples: the
    stratified formula (`stratified_mean_se`) when the evaluator drew the
    test set per class (`test_per_class`), else the i.i.d. one. It covers
    test-set sampling; the probe-train split is fixed.

    Args:
        train_data: `(images, labels)` arrays or a one-pass
            `tf.data.Dataset` of `(image, label)`; labels are class ids or
            one-hot rows.
        test_data: same kinds as `train_data`.
        l2_regs: tuple of floats. Candidate ridge strengths. Defaults to
            `2**-6, ..., 2**10`.
        l2_reg: float or `None`. A fixed strength instead of
            cross-validation. Defaults to `None`.
        folds: int. Cross-validation folds (>= 2). Defaults to `5`.
        num_classes: int or `None`. Inferred from the train labels.
        batch_size: int. Feature-extraction batch size. Defaults to `256`.
        seed: int. Seed of the folds and the test subset. Defaults to `0`.
        test_per_class: int or `None`. Stratified test subset size per
            class, or `None` for all of `test_data`. Defaults to `None`.
        name: str. Metric prefix. Defaults to `"probe"`.

    Example:

    ```python
    import numpy as np
    rng = np.random.default_rng(0)
    labels = np.arange(200) % 4
    images = rng.normal(size=(200, 4, 4, 1)).astype("float32")
    images[:, 0, 0, 0] += 3.0 * labels  # class shows in one pixel
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten()])
    probe = keras_sovit.evaluation.LinearProbeEvaluator(
        (images[:100], labels[:100]), (images[100:], labels[100:])
    )
    probe.evaluate(model)  # {"probe_error": ..., "probe_error_se": ...}
    ```
    """

    def __init__(
        self,
        train_data,
        test_data,
        l2_regs=DEFAULT_L2_REGS,
        l2_reg=None,
        folds=5,
        num_classes=None,
        batch_size=256,
        seed=0,
        test_per_class=None,
        name="probe",
    ):
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.folds = check_positive_int("folds", folds)
        if self.folds < 2:
            raise ValueError(f"`folds` must be >= 2. Received: folds={folds}")
        l2_regs = tuple(sorted(float(v)
                               for v in check_l2(l2_regs, l2_reg)))
        self.l2_regs = l2_regs
        self.l2_reg = None if l2_reg is None else float(l2_reg)
        self.seed = int(seed)
        self.name = str(name)
        self.train_images, self.train_labels = load_arrays(
            train_data, self.batch_size, "train_data"
        )
        images, labels = load_arrays(test_data, self.batch_size, "test_data")
        self.stratified = test_per_class is not None
        if self.stratified:
            ids = stratified_subset(labels, test_per_class, self.seed)
            images, labels = images[ids], labels[ids]
        self.test_images, self.test_labels = images, labels
        self.num_classes = check_num_classes(num_classes, self.train_labels)
        check_class_labels("train_data", self.train_labels, self.num_classes,
                          min_classes=2)
        check_class_labels("test_data", self.test_labels, self.num_classes)
        self._fold_ids = self._folds()
        self.selected_l2 = None

    def _folds(self):
        folds = np.zeros(len(self.train_labels), np.int64)
        rng = np.random.default_rng(self.seed)
        for class_id in np.unique(self.train_labels):
            members = rng.permutation(
                np.flatnonzero(self.train_labels == class_id)
            )
            folds[members] = np.arange(len(members)) % self.folds
        return folds

    def evaluate(self, model):
        """Returns `{name}_error` and `{name}_error_se`."""
        train_x = extract_features(model, self.train_images, self.batch_size)
        test_x = extract_features(model, self.test_images, self.batch_size)
        l2 = self.l2_reg
        if l2 is None:
            l2, _ = select_l2(
                train_x, self.train_labels, self._fold_ids, self.l2_regs,
                self.num_classes,
            )
        self.selected_l2 = l2
        probe = _RidgeProbe(train_x, self.train_labels, self.num_classes)
        wrong = (probe.predict(test_x, l2) != self.test_labels).astype(float)
        if self.stratified:
            se = stratified_mean_se(wrong, self.test_labels)
        else:
            se = mean_se(wrong)
        return {
            f"{self.name}_error": float(wrong.mean()),
            f"{self.name}_error_se": se,
        }
