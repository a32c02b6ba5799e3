"""Losses that training and evaluation both use (evaluation imports them
from here, so `training` never needs `evaluation`)."""

import keras


@keras.saving.register_keras_serializable(package="keras_sovit")
class SigmoidCrossEntropy(keras.losses.Loss):
    """Sigmoid cross-entropy summed over classes (big_vision `sigmoid_xent`).

    Per example, the binary cross-entropy of every class logit against its
    target (one-hot or multi-hot) is summed over classes; the batch is then
    averaged. `keras.losses.BinaryCrossentropy` averages over classes
    instead, which divides gradients by the class count and interacts with
    gradient clipping. Label smoothing maps targets `y` to
    `y * (1 - label_smoothing) + 0.5 * label_smoothing`.

    Args:
        label_smoothing: float in [0, 1). Defaults to `0.0`.
        name: str. Defaults to `"sigmoid_cross_entropy"`.
        **kwargs: `keras.losses.Loss` arguments.

    Example:

    ```python
    loss = keras_sovit.training.SigmoidCrossEntropy()
    loss([[0.0, 1.0]], [[0.0, 0.0]])  # 2 * log(2)
    ```
    """

    def __init__(
        self, label_smoothing=0.0, name="sigmoid_cross_entropy", **kwargs
    ):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        y_pred = keras.ops.convert_to_tensor(y_pred)
        y_true = keras.ops.cast(y_true, y_pred.dtype)
        if self.label_smoothing:
            y_true = y_true * (1.0 - self.label_smoothing) + (
                0.5 * self.label_smoothing
            )
        per_class = keras.ops.binary_crossentropy(
            y_true, y_pred, from_logits=True
        )
        return keras.ops.sum(per_class, axis=-1)

    def get_config(self):
        config = super().get_config()
        config["label_smoothing"] = self.label_smoothing
        return config
