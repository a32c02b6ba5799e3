"""Validation loss and error of a trained classifier head, with SEs."""

import keras
import numpy as np

from keras_sovit._feature_cache import caching
from keras_sovit._validation import check_positive_int
from keras_sovit.evaluation._common import extract_features
from keras_sovit.evaluation._common import load_arrays
from keras_sovit.evaluation._common import mean_se
from keras_sovit.evaluation._common import predict_padded
from keras_sovit.evaluation._common import stratified_mean_se
from keras_sovit.evaluation._common import stratified_subset
from keras_sovit.training.losses import SigmoidCrossEntropy

HEAD_LOSSES = ("softmax", "sigmoid")


def _loss_of(model):
    """`"softmax"` or `"sigmoid"`: the loss a compiled model trains with."""
    loss = getattr(model, "loss", None)
    if isinstance(loss, SigmoidCrossEntropy):
        return "sigmoid"
    if isinstance(loss, keras.losses.CategoricalCrossentropy) and (
        loss.get_config().get("from_logits")
    ):
        return "softmax"
    raise ValueError(
        "ValidationEvaluator cannot tell the head's loss from the model's "
        f"compiled loss {loss!r}: pass `loss='softmax'` or "
        "`loss='sigmoid'`."
    )


def per_example_loss(logits, labels, loss):
    """Per-example log-loss of logits for int labels, in float64.

    `"softmax"`: `logsumexp(z) - z[y]`. `"sigmoid"`: the binary
    cross-entropy of every class logit against the one-hot target, summed
    over classes (as `keras_sovit.training.SigmoidCrossEntropy`). Label
    smoothing is a training regulariser and is not applied.

    Example:

    ```python
    keras_sovit.evaluation.per_example_loss(
        np.zeros((2, 4)), np.array([0, 3]), "softmax"
    )  # [log 4, log 4]
    ```
    """
    z = np.asarray(logits, np.float64)
    rows = np.arange(len(labels))
    if loss == "softmax":
        top = z.max(axis=1, keepdims=True)
        lse = top[:, 0] + np.log(np.exp(z - top).sum(axis=1))
        return lse - z[rows, labels]
    targets = np.zeros_like(z)
    targets[rows, labels] = 1.0
    bce = np.maximum(z, 0) - z * targets + np.log1p(np.exp(-np.abs(z)))
    return bce.sum(axis=1)


class ValidationEvaluator:
    """Loss and error of a classifier's own head on held-out data.

    `evaluate(model)` runs `model.predict` (logits) and returns
    `{prefix}_loss`, `{prefix}_loss_se`, `{prefix}_error` and
    `{prefix}_error_se`. The loss is the one the head was trained with
    (read from the compiled `SigmoidCrossEntropy` or from-logits
    `CategoricalCrossentropy`, or given as `loss`), without label
    smoothing; the error is 1 - top-1 accuracy. Each standard error is
    that of a mean of per-example values over the evaluated set: the
    stratified formula when the evaluator drew `test_per_class` examples
    of every class, else `std / sqrt(n)`.

    Args:
        data: `(images, labels)` arrays or a one-pass `tf.data.Dataset` of
            `(image, label)`; labels are class ids or one-hot rows.
        loss: `"softmax"`, `"sigmoid"` or `None` (read from the model).
            Defaults to `None`.
        batch_size: int. Prediction batch size. Defaults to `256`.
        test_per_class: int or `None`. Stratified subset size per class.
            Defaults to `None` (all of `data`).
        seed: int. Seed of the subset. Defaults to `0`.
        prefix: str. Metric prefix. Defaults to `"val"`.

    Example:

    ```python
    import numpy as np
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
    data = (np.ones((8, 3), "float32"), np.arange(8) % 4)
    evaluator = keras_sovit.evaluation.ValidationEvaluator(
        data, loss="softmax"
    )
    evaluator.evaluate(model)  # {"val_loss": ..., "val_loss_se": ..., ...}
    ```
    """

    def __init__(
        self,
        data,
        loss=None,
        batch_size=256,
        test_per_class=None,
        seed=0,
        prefix="val",
    ):
        if loss is not None and loss not in HEAD_LOSSES:
            raise ValueError(
                f"`loss` must be one of {list(HEAD_LOSSES)} or None. "
                f"Received: loss={loss!r}"
            )
        self.loss = loss
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.prefix = str(prefix)
        images, labels = load_arrays(data, self.batch_size, "data")
        self.stratified = test_per_class is not None
        if self.stratified:
            ids = stratified_subset(labels, test_per_class, seed)
            images, labels = images[ids], labels[ids]
        self.images, self.labels = images, labels

    def _se(self, values):
        if self.stratified:
            return stratified_mean_se(values, self.labels)
        return mean_se(values)

    def _logits(self, model):
        """Logits; inside a `feature_cache`, from shared backbone features.

        For a backbone with pooled `(B, D)` outputs followed directly by a
        linear `Dense` head (a `SoViTClassifier` without `pre_logits`), the
        logits are `features @ kernel + bias`, so the evaluator reuses the
        features another evaluator extracted from the same images.
        """
        backbone = getattr(model, "backbone", None)
        head = getattr(model, "head", None)
        linear_head = (
            isinstance(head, keras.layers.Dense)
            and head.activation is keras.activations.linear
            and getattr(model, "pre_logits", None) is None
        )
        if caching() and linear_head and backbone is not None and len(
            backbone.output.shape
        ) == 2:
            features = extract_features(model, self.images, self.batch_size)
            kernel = keras.ops.convert_to_numpy(head.kernel)
            bias = keras.ops.convert_to_numpy(head.bias)
            return features @ kernel.astype(np.float64) + bias
        return predict_padded(model, self.images, self.batch_size)

    def evaluate(self, model):
        """Returns the loss and error with their standard errors."""
        loss = self.loss or _loss_of(model)
        logits = self._logits(model)
        if logits.ndim != 2 or int(self.labels.max()) >= logits.shape[1]:
            raise ValueError(
                f"The model's outputs have shape {logits.shape}; "
                "ValidationEvaluator needs logits (examples, classes) "
                f"covering label {int(self.labels.max())}."
            )
        losses = per_example_loss(logits, self.labels, loss)
        wrong = (logits.argmax(axis=1) != self.labels).astype(np.float64)
        p = self.prefix
        return {
            f"{p}_loss": float(losses.mean()),
            f"{p}_loss_se": self._se(losses),
            f"{p}_error": float(wrong.mean()),
            f"{p}_error_se": self._se(wrong),
        }
