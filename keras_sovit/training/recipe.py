"""Pretraining recipes: the paper's, and a small-scale preset.

`recipe(total_steps, preset=...)` returns a plain dict; `make_optimizer`,
`make_schedule`, `make_loss` and `compile_for_pretraining` turn it into
Keras objects, and `pipeline_kwargs` into `input_pipeline` arguments.

The `"paper"` preset is the sweep recipe of the paper exactly (SPEC 5.2 /
big_vision `train_vit_g.py`):

| setting | paper | here |
| --- | --- | --- |
| optimizer | AdaFactor (big_vision variant) | `BigVisionAdafactor` |
| learning rate | 8e-4 | `base_lr=8e-4` |
| schedule | rsqrt, 10k warmup, 10k timescale, 50k cooldown | `RsqrtSchedule` |
| weight decay | 0.03 x lr, head kernel x100, kernels only | same |
| gradient clipping | global norm 1.0 | `clipnorm=1.0` |
| loss | sigmoid cross-entropy, label smoothing 0 | same |
| head bias init | -10 | `head_bias_init=-10.0` |
| augmentation | InceptionCrop (5-100 % area) + flip | `crop_area_range` |

Short runs: the paper preset's schedule lengths default to
`warmup_steps = min(10_000, total_steps // 10)`,
`cooldown_steps = min(50_000, total_steps // 5)` and
`timescale = max(1, min(10_000, total_steps // 10))`, so the paper's values
are used exactly whenever `total_steps >= 250_000`.

The `"small"` preset is for sweeps of a few hundred to a few thousand steps
on small images (28-32 px, ~10 classes, such as `animal_mnist`), where the
paper's recipe learns nothing: measured on animal_mnist at sweep budgets
(issue 10), with head bias -10, Adafactor, head weight decay x100 and crops
down to 5 % of a 28-px image, the head bias moved from -10 to -9.985 and
head accuracy was 0.15 (chance 0.10), and the features were no better than
an untrained network's. Each value and why:

- `optimizer="adamw"` (`AdamWDecayMults`): with the other changes below, a
  64/4/256 SoViT reaches validation loss 1.49 / 1.12 / 0.80 after 2 / 4 / 8
  epochs (SE 0.03, seeds within 0.04; issue 10), where the paper recipe
  stays at chance.
- `base_lr=2e-3`: the learning rate of those measurements.
- `loss="softmax"`: the data are single-label; a softmax needs no bias
  prior.
- `head_bias_init="prior"`: `head_bias_prior(loss, C)`, 0 for softmax and
  -log(C - 1) for sigmoid; the paper's -10 is the sigmoid prior of JFT's
  30k classes (-log(29592) = -10.3) and starts a 10-class head far off.
- `head_wd_mult=1.0`: x100 decays the zero-initialised head kernel back
  towards 0 at every step; here the head must learn in a few hundred steps.
- `crop_area_range=(0.35, 1.0)`: 5 % of a 28-px image is a 6x6-pixel crop,
  mostly background for a silhouette.
- `warmup_steps=min(50, total_steps // 10)`: AdamW needs a short warmup;
  50 steps are 0.2 epoch of 8000 images at batch 32.
- `timescale=max(1, min(250, total_steps // 10))`: an rsqrt time scale of
  one epoch (8000 / 32 steps) for long runs, so the rate is 0.34x peak after
  8 epochs; short runs scale it down like the paper preset does.
- `cooldown_steps=total_steps // 5`: a 20 % linear cooldown (Hägele et al.
  2024, arXiv 2405.18392, find 10-20 % matches cosine schedules).
- `weight_decay=0.03`, `clipnorm=1.0`, `label_smoothing=0.0`: the paper's;
  at 2e-3 for 2000 steps the decay shrinks kernels by 12 % in all.

The schedule values (warmup, timescale, cooldown) are this package's
choices, not measurements of issue 10; `benchmarks/real_data_study.py`
trains 42 shapes with them (see benchmarks/README.md).

Any value of either preset can be overridden by keyword.
"""

import math

import keras

from keras_sovit._validation import check_choice
from keras_sovit._validation import check_number
from keras_sovit._validation import check_positive_int
from keras_sovit._validation import check_range_pair
from keras_sovit.training.callbacks import ExamplesSeen
from keras_sovit.training.losses import SigmoidCrossEntropy
from keras_sovit.training.optimizers import AdamWDecayMults
from keras_sovit.training.optimizers import BigVisionAdafactor
from keras_sovit.training.schedules import RsqrtSchedule

# The paper's values; `None` schedule lengths are scaled to the run.
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
    "crop_area_range": (0.05, 1.0),
}
# The small-scale preset (see the module docstring for every value).
SMALL_RECIPE = {
    "base_lr": 2e-3,
    "optimizer": "adamw",
    "weight_decay": 0.03,
    "head_wd_mult": 1.0,
    "clipnorm": 1.0,
    "loss": "softmax",
    "warmup_steps": 50,
    "cooldown_steps": None,
    "timescale": 250,
    "label_smoothing": 0.0,
    "head_bias_init": "prior",
    "crop_area_range": (0.35, 1.0),
}
PRESETS = {"paper": PAPER_RECIPE, "small": SMALL_RECIPE}
RECIPE_KEYS = tuple(PAPER_RECIPE)
OPTIMIZERS = ("adafactor", "adamw")
LOSSES = ("sigmoid", "softmax")
HEAD_KERNEL_PATTERN = r"(^|/)head/kernel$"


def head_bias_prior(loss, num_classes):
    """The head bias that makes an untrained head predict the class prior.

    With a zero head kernel every logit equals the bias `b`. For a sigmoid
    head each class then has probability `sigmoid(b)`; matching the uniform
    prior `1 / C` gives `b = -log(C - 1)` (-2.20 for 10 classes, -6.9 for
    1000, -10.3 for JFT's 29,593). A softmax head predicts the uniform
    prior for any constant bias, so its prior bias is 0.

    Args:
        loss: `"sigmoid"` or `"softmax"`.
        num_classes: int. At least 2 for a sigmoid head.

    Example:

    ```python
    keras_sovit.training.head_bias_prior("sigmoid", 10)  # -2.197...
    ```
    """
    check_choice("loss", loss, LOSSES)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int):
        raise ValueError(
            "`num_classes` must be an integer. Received: "
            f"num_classes={num_classes!r}"
        )
    if loss == "softmax":
        return 0.0
    if num_classes < 2:
        raise ValueError(
            "A sigmoid head prior needs `num_classes` >= 2. Received: "
            f"num_classes={num_classes}"
        )
    return -math.log(num_classes - 1)


def _resolve_head_bias(value, loss, num_classes):
    if value is None:
        return None
    if value == "prior":
        if num_classes is None:
            raise ValueError(
                "`head_bias_init='prior'` needs `num_classes`. Received: "
                "num_classes=None"
            )
        return head_bias_prior(loss, num_classes)
    check_number("head_bias_init", value)
    return float(value)


def _schedule_lengths(preset, overrides, total_steps):
    """Schedule lengths: overrides as given, `None` scaled to the run."""
    base = PRESETS[preset]
    scaled = {
        "warmup_steps": min(base["warmup_steps"], total_steps // 10),
        "timescale": max(1, min(base["timescale"], total_steps // 10)),
        "cooldown_steps": min(
            base["cooldown_steps"] or total_steps, total_steps // 5
        ),
    }
    return tuple(
        scaled[key] if overrides.get(key) is None else overrides[key]
        for key in ("warmup_steps", "cooldown_steps", "timescale")
    )


def recipe(total_steps, preset="paper", num_classes=None, **overrides):
    """A pretraining recipe as a plain, JSON-safe dict.

    `preset="paper"` is the paper's sweep recipe and `preset="small"` the
    small-scale recipe; the module docstring gives every value and its
    justification. Any key can be overridden by keyword. Schedule lengths
    not overridden (or passed as `None`) are scaled to `total_steps`:
    `warmup_steps = min(W, total_steps // 10)`,
    `timescale = max(1, min(T, total_steps // 10))` and
    `cooldown_steps = min(C, total_steps // 5)`, with `W`, `T`, `C` the
    preset's values (paper: 10k, 10k, 50k; small: 50, 250, no cap).

    Args:
        total_steps: int. Training steps, e.g. from `steps_for_budget`.
        preset: `"paper"` or `"small"`. Defaults to `"paper"`.
        num_classes: int or `None`. Needed when `head_bias_init` is
            `"prior"` (the small preset's default).
        **overrides: recipe values:
            `base_lr` (peak learning rate);
            `optimizer` (`"adafactor"`, the big_vision variant, or
            `"adamw"`);
            `weight_decay` (decoupled decay relative to the learning rate:
            kernels shrink by `weight_decay * lr(s)` per step);
            `head_wd_mult` (extra multiplier of the head kernel's decay);
            `clipnorm` (global gradient-norm clip, or `None`);
            `loss` (`"sigmoid"`, summed sigmoid cross-entropy, or
            `"softmax"`);
            `warmup_steps`, `cooldown_steps`, `timescale` (ints or `None`);
            `label_smoothing`;
            `head_bias_init` (a float, `None` to leave the bias alone, or
            `"prior"` for `head_bias_prior(loss, num_classes)`);
            `crop_area_range` (InceptionCrop area fractions, used by
            `pipeline_kwargs`).

    Returns:
        A dict with `total_steps` and exactly the keys above, schedule
        lengths and head bias resolved.

    Example:

    ```python
    config = keras_sovit.training.recipe(total_steps=1_000_000)
    config["warmup_steps"], config["cooldown_steps"]  # (10000, 50000)
    small = keras_sovit.training.recipe(1000, preset="small", num_classes=10)
    small["optimizer"], small["head_bias_init"]  # ("adamw", 0.0)
    ```
    """
    check_positive_int("total_steps", total_steps)
    check_choice("preset", preset, tuple(PRESETS))
    unknown = sorted(set(overrides) - set(RECIPE_KEYS))
    if unknown:
        raise ValueError(
            f"Unknown recipe keys {unknown}; the keys are "
            f"{list(RECIPE_KEYS)}. Received: {unknown[0]}="
            f"{overrides[unknown[0]]!r}"
        )
    config = dict(PRESETS[preset])
    config.update(overrides)
    _check_values(config)
    warmup, cooldown, timescale = _schedule_lengths(
        preset, overrides, total_steps
    )
    # Validates the three lengths against total_steps.
    RsqrtSchedule(
        config["base_lr"], warmup, timescale, cooldown, total_steps
    )
    clipnorm = config["clipnorm"]
    return {
        "total_steps": total_steps,
        "base_lr": float(config["base_lr"]),
        "optimizer": config["optimizer"],
        "weight_decay": float(config["weight_decay"]),
        "head_wd_mult": float(config["head_wd_mult"]),
        "clipnorm": None if clipnorm is None else float(clipnorm),
        "loss": config["loss"],
        "warmup_steps": warmup,
        "cooldown_steps": cooldown,
        "timescale": timescale,
        "label_smoothing": float(config["label_smoothing"]),
        "head_bias_init": _resolve_head_bias(
            config["head_bias_init"], config["loss"], num_classes
        ),
        "crop_area_range": check_range_pair(
            "crop_area_range", config["crop_area_range"], upper=1.0
        ),
    }


def _check_values(config):
    check_number("base_lr", config["base_lr"], low=0.0, low_open=True)
    check_choice("optimizer", config["optimizer"], OPTIMIZERS)
    check_number("weight_decay", config["weight_decay"], low=0.0)
    check_number("head_wd_mult", config["head_wd_mult"], low=0.0)
    if config["clipnorm"] is not None:
        check_number("clipnorm", config["clipnorm"], low=0.0,
                     low_open=True)
    check_choice("loss", config["loss"], LOSSES)
    check_number("label_smoothing", config["label_smoothing"], low=0.0,
                 high=1.0, high_open=True)


def pipeline_kwargs(config):
    """The `keras_sovit.data.input_pipeline` arguments of a recipe.

    Example:

    ```python
    config = keras_sovit.training.recipe(1000, preset="small", num_classes=10)
    keras_sovit.training.pipeline_kwargs(config)
    # {"crop_area_range": (0.35, 1.0)}
    ```
    """
    return {"crop_area_range": tuple(config["crop_area_range"])}


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


def _head_units(model, layer_name="head"):
    try:
        return getattr(model.get_layer(layer_name), "units", None)
    except ValueError:
        return None


def compile_for_pretraining(
    model, total_steps, preset="paper", metrics=None, **kwargs
):
    """Compiles a classifier with a pretraining recipe.

    Builds the optimizer, schedule and loss of `recipe(total_steps,
    preset, **overrides)`, sets the head bias when the model has a layer
    named `"head"` with a bias and `head_bias_init` is not `None` (the
    class count of `"prior"` is the head's `units`), and calls
    `model.compile`. Labels must be one-hot (as `keras_sovit.data`'s
    pipeline yields). `metrics` defaults to categorical accuracy; the
    `ExamplesSeen` metric is always added so `ComputeBudget` can count
    examples without a `batch_size`.

    Args:
        model: the `keras.Model` to compile, e.g. a
            `keras_sovit.models.SoViTClassifier`.
        total_steps: int. Number of training steps.
        preset: `"paper"` or `"small"`. Defaults to `"paper"`.
        metrics: list or `None`. Extra metrics.
        **kwargs: recipe keys (`base_lr`, `optimizer`, ..., see `recipe`)
            override the preset; every other keyword goes to
            `model.compile` (`jit_compile`, `steps_per_execution`, ...).

    Returns:
        The `recipe()` dict that was applied.

    Example:

    ```python
    inputs = keras.Input((8,))
    outputs = keras.layers.Dense(10, name="head")(inputs)
    model = keras.Model(inputs, outputs)
    config = keras_sovit.training.compile_for_pretraining(
        model, total_steps=1000, preset="small"
    )
    config["head_bias_init"]  # 0.0: a softmax head's prior
    ```
    """
    overrides = {k: v for k, v in kwargs.items() if k in RECIPE_KEYS}
    compile_kwargs = {
        k: v for k, v in kwargs.items() if k not in RECIPE_KEYS
    }
    config = recipe(
        total_steps,
        preset=preset,
        num_classes=_head_units(model),
        **overrides,
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
