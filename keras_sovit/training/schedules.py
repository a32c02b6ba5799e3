"""Learning-rate schedules of the SoViT recipe."""

import keras

from keras_sovit._validation import check_learning_rate
from keras_sovit._validation import check_non_negative_int


@keras.saving.register_keras_serializable(package="keras_sovit")
class RsqrtSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Reverse-square-root schedule with linear warmup and linear cooldown.

    The schedule of the paper's sweeps ("Reverse SQRT, 10K warmup steps, 50K
    cooldown steps", big_vision `decay_type="rsqrt"`). At step `s` the
    learning rate is

    `base_lr * min(1, s / warmup_steps) * r(s)
    * min(1, (total_steps - s) / cooldown_steps)`

    with `r(s) = 1 / sqrt(1 + (s - warmup_steps) / timescale)` for
    `s >= warmup_steps` and `r(s) = 1` before. A factor whose step count is
    zero (`warmup_steps=0` or `cooldown_steps=0`) is 1. After `total_steps`
    the cooldown factor is clipped at 0, so the rate stays 0.

    Args:
        base_lr: float. Peak learning rate.
        warmup_steps: int. Length of the linear warmup from 0.
        timescale: int. Time scale of the reverse-square-root decay; must be
            positive.
        cooldown_steps: int. Length of the final linear decay to 0.
        total_steps: int. Total number of training steps; must be at least
            `warmup_steps` and at least `cooldown_steps`.

    Example:

    ```python
    schedule = keras_sovit.training.RsqrtSchedule(
        base_lr=8e-4,
        warmup_steps=100,
        timescale=100,
        cooldown_steps=200,
        total_steps=1000,
    )
    optimizer = keras.optimizers.AdamW(learning_rate=schedule)
    float(schedule(50))  # 4e-4, halfway through the warmup.
    ```
    """

    def __init__(
        self, base_lr, warmup_steps, timescale, cooldown_steps, total_steps
    ):
        check_learning_rate("base_lr", base_lr, allow_zero=True)
        for name, value in (
            ("warmup_steps", warmup_steps),
            ("timescale", timescale),
            ("cooldown_steps", cooldown_steps),
            ("total_steps", total_steps),
        ):
            check_non_negative_int(name, value)
        if timescale == 0:
            raise ValueError(
                f"`timescale` must be positive. Received: timescale={timescale}"
            )
        if total_steps < warmup_steps:
            raise ValueError(
                "`total_steps` must be >= `warmup_steps`. Received: "
                f"total_steps={total_steps}, warmup_steps={warmup_steps}"
            )
        if total_steps < cooldown_steps:
            raise ValueError(
                "`total_steps` must be >= `cooldown_steps`. Received: "
                f"total_steps={total_steps}, cooldown_steps={cooldown_steps}"
            )
        # === Config ===
        self.base_lr = float(base_lr)
        self.warmup_steps = warmup_steps
        self.timescale = timescale
        self.cooldown_steps = cooldown_steps
        self.total_steps = total_steps

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        lr = keras.ops.convert_to_tensor(self.base_lr, "float32")
        if self.warmup_steps > 0:
            lr = lr * keras.ops.minimum(1.0, step / self.warmup_steps)
        since_warmup = keras.ops.maximum(step - self.warmup_steps, 0.0)
        lr = lr * keras.ops.rsqrt(1.0 + since_warmup / self.timescale)
        if self.cooldown_steps > 0:
            remaining = (self.total_steps - step) / self.cooldown_steps
            lr = lr * keras.ops.clip(remaining, 0.0, 1.0)
        return lr

    def get_config(self):
        return {
            "base_lr": self.base_lr,
            "warmup_steps": self.warmup_steps,
            "timescale": self.timescale,
            "cooldown_steps": self.cooldown_steps,
            "total_steps": self.total_steps,
        }
