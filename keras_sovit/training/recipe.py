"""The paper's pretraining recipe (SPEC 5.2 / big_vision `train_vit_g.py`).

| setting | paper | here |
| --- | --- | --- |
| optimizer | AdaFactor (big_vision variant) | `BigVisionAdafactor` (or AdamW) |
| learning rate | 8e-4 | `base_lr=8e-4` |
| schedule | rsqrt, 10k warmup, 10k timescale, 50k cooldown | `RsqrtSchedule` |
| weight decay | 0.03 x lr, head kernel x100, kernels only | same |
| gradient clipping | global norm 1.0 | `global_clipnorm=1.0` |
| loss | sigmoid cross-entropy, label smoothing 0 | same (softmax option) |
| head bias init | -10 | `set_head_bias(model, -10.0)` |

Short runs: the schedule lengths default to
`warmup_steps = min(10_000, total_steps // 10)`,
`cooldown_steps = min(50_000, total_steps // 5)` and
`timescale = max(1, min(10_000, total_steps // 10))`, so the paper's values
are used exactly whenever `total_steps >= 250_000`, and a 1,000-step run
warms up for 100 steps and cools down over the last 200. Every value can be
overridden.
"""

import keras

from keras_sovit._validation import check_choice
from keras_sovit._validation import check_number
from keras_sovit.training.callbacks import ExamplesSeen
from keras_sovit.training.optimizers import AdamWDecayMults
from keras_sovit.training.optimizers import BigVisionAdafactor
from keras_sovit.training.schedules import RsqrtSchedule

PAPER_RECIPE = {
    "base_lr": 8e-4,
    "optimizer": "adafactor",
    "weight_decay": 0.03,
    "head_wd_mult": 100.0,
    "clipnorm": 1.0,
    "loss": "sigmoid",
    "warmup_steps": 10_000,
    "cooldown_steps": 50_000,
    "timescale": 10_000,
    "label_smoothing": 0.0,
    "head_bias_init": -10.0,
}
OPTIMIZERS = ("adafactor", "adamw")
LOSSES = ("sigmoid", "softmax")
HEAD_KERNEL_PATTERN = r"(^|/)head/kernel$"


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


def recipe(
    total_steps,
    base_lr=8e-4,
    optimizer="adafactor",
    weight_decay=0.03,
    head_wd_mult=100.0,
    clipnorm=1.0,
    loss="sigmoid",
    warmup_steps=None,
    cooldown_steps=None,
    timescale=None,
    label_smoothing=0.0,
    head_bias_init=-10.0,
):
    """The paper's pretraining recipe as a plain, JSON-safe dict.

    Defaults are the sweep recipe of the paper (SPEC 5.2/5.3); schedule
    lengths left as `None` are scaled to `total_steps` as described in the
    module docstring (the paper's values for runs of 250k steps or more).

    Args:
        total_steps: int. Training steps, e.g. from `steps_for_budget`.
        base_lr: float. Peak learning rate. Defaults to `8e-4`.
        optimizer: `"adafactor"` (big_vision variant) or `"adamw"`.
        weight_decay: float. Decoupled decay relative to the learning rate:
            kernels shrink by `weight_decay * lr(s)` per step. Defaults to
            `0.03`.
        head_wd_mult: float. Extra multiplier of the head kernel's decay.
            Defaults to `100.0`.
        clipnorm: float or `None`. Global gradient-norm clip. Defaults to
            `1.0`.
        loss: `"sigmoid"` (summed sigmoid cross-entropy) or `"softmax"`.
        warmup_steps: int or `None`. Defaults to
            `min(10_000, total_steps // 10)`.
        cooldown_steps: int or `None`. Defaults to
            `min(50_000, total_steps // 5)`.
        timescale: int or `None`. Defaults to
            `max(1, min(10_000, total_steps // 10))`.
        label_smoothing: float. Defaults to `0.0`.
        head_bias_init: float or `None`. Head bias at the start of
            pretraining; `None` leaves it alone. Defaults to `-10.0`.

    Returns:
        A dict with exactly these keys, schedule lengths resolved.

    Example:

    ```python
    config = keras_sovit.training.recipe(total_steps=1_000_000)
    config["warmup_steps"], config["cooldown_steps"]  # (10000, 50000)
    ```
    """
    if (
        isinstance(total_steps, bool)
        or not isinstance(total_steps, int)
        or total_steps < 1
    ):
        raise ValueError(
            "`total_steps` must be a positive integer. Received: "
            f"total_steps={total_steps!r}"
        )
    check_number("base_lr", base_lr, low=0.0, low_open=True)
    check_choice("optimizer", optimizer, OPTIMIZERS)
    check_number("weight_decay", weight_decay, low=0.0)
    check_number("head_wd_mult", head_wd_mult, low=0.0)
    if clipnorm is not None:
        check_number("clipnorm", clipnorm, low=0.0, low_open=True)
    check_choice("loss", loss, LOSSES)
    check_number("label_smoothing", label_smoothing, low=0.0, high=1.0,
                     high_open=True)
    if head_bias_init is not None:
        check_number("head_bias_init", head_bias_init)
    if warmup_steps is None:
        warmup_steps = min(10_000, total_steps // 10)
    if cooldown_steps is None:
        cooldown_steps = min(50_000, total_steps // 5)
    if timescale is None:
        timescale = max(1, min(10_000, total_steps // 10))
    # Validates the three lengths against total_steps.
    RsqrtSchedule(base_lr, warmup_steps, timescale, cooldown_steps, total_steps)
    return {
        "total_steps": total_steps,
        "base_lr": float(base_lr),
        "optimizer": optimizer,
        "weight_decay": float(weight_decay),
        "head_wd_mult": float(head_wd_mult),
        "clipnorm": None if clipnorm is None else float(clipnorm),
        "loss": loss,
        "warmup_steps": warmup_steps,
        "cooldown_steps": cooldown_steps,
        "timescale": timescale,
        "label_smoothing": float(label_smoothing),
        "head_bias_init": (
            None if head_bias_init is None else float(head_bias_init)
        ),
    }


def make_schedule(config):
    """The `RsqrtSchedule` of a `recipe()` dict.

    Example:

    ```python
    config = keras_sovit.training.recipe(total_steps=1000)
    schedule = keras_sovit.training.make_schedule(config)
    float(schedule(100))  # 8e-4: the peak, at the end of the warmup
    ```
    """
    return RsqrtSchedule(
        config["base_lr"],
        config["warmup_steps"],
        config["timescale"],
        config["cooldown_steps"],
        config["total_steps"],
    )


def make_optimizer(config):
    """The optimizer of a `recipe()` dict, with the head kernel's decay.

    Example:

    ```python
    config = keras_sovit.training.recipe(total_steps=1000, optimizer="adamw")
    optimizer = keras_sovit.training.make_optimizer(config)
    optimizer.decay_multiplier("head/kernel")  # 100.0
    ```
    """
    wd_mults = [
        (HEAD_KERNEL_PATTERN, config["head_wd_mult"]),
        (r"kernel$", 1.0),
    ]
    cls = {"adafactor": BigVisionAdafactor, "adamw": AdamWDecayMults}
    return cls[config["optimizer"]](
        learning_rate=make_schedule(config),
        weight_decay=config["weight_decay"],
        wd_mults=wd_mults,
        global_clipnorm=config["clipnorm"],
    )


def make_loss(config):
    """The loss of a `recipe()` dict (expects one-hot labels).

    Example:

    ```python
    config = keras_sovit.training.recipe(total_steps=1000, loss="softmax")
    loss = keras_sovit.training.make_loss(config)
    ```
    """
    if config["loss"] == "sigmoid":
        return SigmoidCrossEntropy(label_smoothing=config["label_smoothing"])
    return keras.losses.CategoricalCrossentropy(
        from_logits=True, label_smoothing=config["label_smoothing"]
    )


def set_head_bias(model, value, layer_name="head"):
    """Fills the bias of the model's head layer with `value`.

    The paper initialises the classifier bias to -10 for sigmoid
    pretraining, so that every class starts with a probability near 4.5e-5.

    Args:
        model: a Keras model with a layer named `layer_name` that has a
            `bias` (a `keras.layers.Dense`, as in `SoViTClassifier`).
        value: float. The new bias value.
        layer_name: str. Defaults to `"head"`.

    Example:

    ```python
    inputs = keras.Input((8,))
    outputs = keras.layers.Dense(10, name="head")(inputs)
    model = keras.Model(inputs, outputs)
    keras_sovit.training.set_head_bias(model, -10.0)
    ```
    """
    try:
        layer = model.get_layer(layer_name)
    except ValueError:
        raise ValueError(
            f"`model` has no layer named {layer_name!r} (layer_name="
            f"{layer_name!r})."
        ) from None
    bias = getattr(layer, "bias", None)
    if bias is None:
        raise ValueError(
            f"Layer {layer_name!r} of `model` has no bias to initialise."
        )
    bias.assign(keras.ops.full(bias.shape, value, dtype=bias.dtype))


def _has_head(model, layer_name="head"):
    try:
        return getattr(model.get_layer(layer_name), "bias", None) is not None
    except ValueError:
        return False


def compile_for_pretraining(
    model,
    total_steps,
    base_lr=8e-4,
    optimizer="adafactor",
    weight_decay=0.03,
    head_wd_mult=100.0,
    clipnorm=1.0,
    loss="sigmoid",
    warmup_steps=None,
    cooldown_steps=None,
    timescale=None,
    label_smoothing=0.0,
    head_bias_init=-10.0,
    metrics=None,
    **compile_kwargs,
):
    """Compiles a classifier with the paper's pretraining recipe.

    Builds the optimizer, schedule and loss of `recipe(...)` (see its
    arguments), sets the head bias when the model has a layer named
    `"head"` with a bias and `head_bias_init` is not `None`, and calls
    `model.compile`. Labels must be one-hot (as `keras_sovit.data`'s
    pipeline yields). `metrics` defaults to categorical accuracy; the
    `ExamplesSeen` metric is always added so `ComputeBudget` can count
    examples without a `batch_size`.

    Args:
        model: the `keras.Model` to compile, e.g. a
            `keras_sovit.models.SoViTClassifier`.
        total_steps: int. Number of training steps.
        metrics: list or `None`. Extra metrics.
        **compile_kwargs: passed to `model.compile` (`jit_compile`,
            `steps_per_execution`, ...).

    Returns:
        The `recipe()` dict that was applied.

    Example:

    ```python
    inputs = keras.Input((8,))
    outputs = keras.layers.Dense(10, name="head")(inputs)
    model = keras.Model(inputs, outputs)
    config = keras_sovit.training.compile_for_pretraining(
        model, total_steps=1000
    )
    ```
    """
    config = recipe(
        total_steps,
        base_lr=base_lr,
        optimizer=optimizer,
        weight_decay=weight_decay,
        head_wd_mult=head_wd_mult,
        clipnorm=clipnorm,
        loss=loss,
        warmup_steps=warmup_steps,
        cooldown_steps=cooldown_steps,
        timescale=timescale,
        label_smoothing=label_smoothing,
        head_bias_init=head_bias_init,
    )
    if config["head_bias_init"] is not None and _has_head(model):
        set_head_bias(model, config["head_bias_init"])
    if metrics is None:
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    metrics = list(metrics) + [ExamplesSeen()]
    model.compile(
        optimizer=make_optimizer(config),
        loss=make_loss(config),
        metrics=metrics,
        **compile_kwargs,
    )
    return config
