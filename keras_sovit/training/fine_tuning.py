"""The paper's fine-tuning recipe (SPEC 5.4, Table 8).

| setting | paper | here |
| --- | --- | --- |
| steps, batch | 50k steps, 512 | `total_steps`, your pipeline |
| optimizer | SGD, momentum 0.9 | `LayerDecaySGD(momentum=0.9)` |
| learning rate | 0.03, cosine, 500 warmup steps | `base_lr`, `warmup_steps` |
| gradient clipping | global norm 1.0 | `clipnorm=1.0` |
| weight decay | none | none |
| loss | sigmoid cross-entropy | `SigmoidCrossEntropy` |
| head | kernel 0, bias -6.9 (1000 classes) | kernel 0, bias -log(classes) |
| LR decay | 0.85 (224 px), 0.9 (384, 518 px) | `layer_decay` |
| RandAugment | - (224), 2,10 (384, 518) | `randaugment` |
| mixup | - (224), 0.2 (384, 518) | `mixup_alpha` |

"LR decay" is read as layer-wise learning-rate decay (the schedule is
already cosine): block `i` of `depth` learns at `layer_decay ** (depth - i)`
times the rate, the stem and position embedding at
`layer_decay ** (depth + 1)`, the final norm, pooling head and classifier at
the full rate. The warm-up is scaled down for short runs:
`min(500, total_steps // 10)`.
"""

import math

import keras

from keras_sovit._validation import check_decay
from keras_sovit._validation import check_learning_rate
from keras_sovit._validation import check_momentum
from keras_sovit.training.losses import SigmoidCrossEntropy
from keras_sovit.training.optimizers import check_regex_pairs
from keras_sovit.training.optimizers import regex_multiplier

PAPER_FINE_TUNING = {
    "total_steps": 50_000,
    "batch_size": 512,
    "base_lr": 0.03,
    "momentum": 0.9,
    "clipnorm": 1.0,
    "warmup_steps": 500,
    "head_bias_init": -6.9,
}
PAPER_FINE_TUNING_BY_RESOLUTION = {
    224: {"layer_decay": 0.85, "randaugment": None, "mixup_alpha": None},
    384: {"layer_decay": 0.9, "randaugment": (2, 10), "mixup_alpha": 0.2},
    518: {"layer_decay": 0.9, "randaugment": (2, 10), "mixup_alpha": 0.2},
}
_KEYS = (
    "total_steps",
    "base_lr",
    "momentum",
    "clipnorm",
    "warmup_steps",
    "layer_decay",
    "randaugment",
    "mixup_alpha",
)


def fine_tuning_recipe(total_steps, paper_resolution=224, **overrides):
    """The paper's fine-tuning settings as a plain dict.

    Args:
        total_steps: int. Fine-tuning steps.
        paper_resolution: int. The column of Table 8 to use: `224`, `384`
            or `518` (choose the paper resolution your run stands for, e.g.
            `384` when fine-tuning above the pretraining resolution).
            Defaults to `224`.
        **overrides: new values for any key of the returned dict.

    Returns:
        A dict with `total_steps`, `base_lr`, `momentum`, `clipnorm`,
        `warmup_steps`, `layer_decay`, `randaugment` (for
        `keras_sovit.data.input_pipeline`) and `mixup_alpha` (likewise).

    Example:

    ```python
    config = keras_sovit.training.fine_tuning_recipe(
        total_steps=50_000, paper_resolution=384
    )
    config["layer_decay"], config["mixup_alpha"]  # (0.9, 0.2)
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
    if paper_resolution not in PAPER_FINE_TUNING_BY_RESOLUTION:
        raise ValueError(
            "`paper_resolution` must be one of "
            f"{sorted(PAPER_FINE_TUNING_BY_RESOLUTION)}. Received: "
            f"paper_resolution={paper_resolution!r}"
        )
    unknown = sorted(set(overrides) - set(_KEYS))
    if unknown:
        raise ValueError(
            f"Unknown fine-tuning settings {unknown}; the keys are "
            f"{list(_KEYS)}."
        )
    config = {
        "total_steps": total_steps,
        "base_lr": PAPER_FINE_TUNING["base_lr"],
        "momentum": PAPER_FINE_TUNING["momentum"],
        "clipnorm": PAPER_FINE_TUNING["clipnorm"],
        "warmup_steps": min(
            PAPER_FINE_TUNING["warmup_steps"], total_steps // 10
        ),
        **PAPER_FINE_TUNING_BY_RESOLUTION[paper_resolution],
    }
    config.update(overrides)
    check_learning_rate("base_lr", config["base_lr"])
    check_momentum("momentum", config["momentum"])
    check_decay("layer_decay", config["layer_decay"])
    if not 0 <= config["warmup_steps"] < total_steps:
        raise ValueError(
            "`warmup_steps` must be in [0, total_steps). Received: "
            f"warmup_steps={config['warmup_steps']!r}"
        )
    return config


def layer_decay_multipliers(model, layer_decay):
    """`(regex, multiplier)` pairs of layer-wise LR decay for a SoViT.

    Block `i` gets `layer_decay ** (depth - i)`; the patch stem, position
    embedding and class token `layer_decay ** (depth + 1)`; everything
    else (final norm, MAP head, pre-logits, head) 1.

    Example:

    ```python
    backbone = keras_sovit.models.SoViTBackbone(
        keras_sovit.ShapeSpec(32, 2, 64, 4, 4), image_shape=(16, 16, 3)
    )
    keras_sovit.training.layer_decay_multipliers(backbone, 0.5)
    # [('(^|/)encoderblock_0/', 0.25), ('(^|/)encoderblock_1/', 0.5),
    #  ('(^|/)(embedding|pos_embedding|cls)/', 0.125)]
    ```
    """
    check_decay("layer_decay", layer_decay)
    backbone = getattr(model, "backbone", model)
    depth = getattr(getattr(backbone, "shape_spec", None), "depth", None)
    if depth is None:
        raise ValueError(
            "`model` must be a keras_sovit SoViTBackbone or SoViTClassifier."
            f" Received: model={model!r}"
        )
    mults = [
        (rf"(^|/)encoderblock_{i}/", layer_decay ** (depth - i))
        for i in range(depth)
    ]
    mults.append(
        (r"(^|/)(embedding|pos_embedding|cls)/", layer_decay ** (depth + 1))
    )
    return mults


@keras.saving.register_keras_serializable(package="keras_sovit")
class LayerDecaySGD(keras.optimizers.SGD):
    """SGD whose learning rate is scaled per variable by path patterns.

    Each variable learns at `learning_rate * mult`, with `mult` from the
    first pattern of `lr_mults` that matches its path (1 when none does),
    which gives layer-wise learning-rate decay (see
    `layer_decay_multipliers`). Gradient clipping (`global_clipnorm`)
    applies to the raw gradients first, as in big_vision.

    Args:
        learning_rate: float or schedule. Defaults to `0.01`.
        momentum: float. Defaults to `0.0`.
        lr_mults: sequence of `(regex, multiplier)`. Defaults to `()`.
        **kwargs: `keras.optimizers.SGD` arguments (`nesterov`,
            `global_clipnorm`, ...).

    Example:

    ```python
    optimizer = keras_sovit.training.LayerDecaySGD(
        learning_rate=0.03,
        momentum=0.9,
        lr_mults=[(r"(^|/)encoderblock_0/", 0.9)],
        global_clipnorm=1.0,
    )
    ```
    """

    def __init__(
        self,
        learning_rate=0.01,
        momentum=0.0,
        lr_mults=(),
        name="layer_decay_sgd",
        **kwargs,
    ):
        super().__init__(
            learning_rate=learning_rate, momentum=momentum, name=name, **kwargs
        )
        self.lr_mults = check_regex_pairs("lr_mults", lr_mults)

    def lr_multiplier(self, path):
        """The learning-rate multiplier of a variable path (1 if none)."""
        return regex_multiplier(self.lr_mults, path, default=1.0)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._mults = [self.lr_multiplier(v.path) for v in var_list]

    def update_step(self, gradient, variable, learning_rate):
        mult = self._mults[self._get_variable_index(variable)]
        if mult != 1.0:
            learning_rate = learning_rate * mult
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config["lr_mults"] = [list(pair) for pair in self.lr_mults]
        return config


def make_fine_tuning_schedule(config):
    """Linear warm-up to `base_lr`, then cosine decay to 0.

    Example:

    ```python
    config = keras_sovit.training.fine_tuning_recipe(total_steps=1000)
    schedule = keras_sovit.training.make_fine_tuning_schedule(config)
    float(schedule(100))  # 0.03, the peak after 100 warm-up steps
    ```
    """
    warmup = config["warmup_steps"]
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else config["base_lr"],
        decay_steps=config["total_steps"] - warmup,
        warmup_target=config["base_lr"] if warmup else None,
        warmup_steps=warmup,
    )


def compile_for_fine_tuning(
    model, config, reset_head=True, metrics=None, **compile_kwargs
):
    """Compiles a `SoViTClassifier` with the paper's fine-tuning recipe.

    With `reset_head`, the head kernel is zeroed and its bias set to
    `-log(num_classes)` (the paper's -6.9 for 1000 classes: every class
    starts at probability about 1 / num_classes). The optimizer is
    `LayerDecaySGD` with the recipe's momentum, clipping, schedule and
    layer-wise decay; the loss is sigmoid cross-entropy on one-hot (or
    mixup) labels.

    Args:
        model: a `keras_sovit.models.SoViTClassifier`.
        config: dict from `fine_tuning_recipe`.
        reset_head: bool. Defaults to `True`.
        metrics: list or `None`. Defaults to categorical accuracy.
        **compile_kwargs: passed to `model.compile`.

    Example:

    ```python
    model = keras_sovit.models.SoViTClassifier.from_variant(
        "mu/4", num_classes=10, image_shape=(16, 16, 3)
    )
    config = keras_sovit.training.fine_tuning_recipe(total_steps=100)
    keras_sovit.training.compile_for_fine_tuning(model, config)
    ```
    """
    missing = sorted(set(_KEYS) - set(config))
    if missing:
        raise ValueError(
            f"`config` lacks {missing}; build it with fine_tuning_recipe. "
            f"Received: config={config!r}"
        )
    head = getattr(model, "head", None)
    if head is None or getattr(model, "backbone", None) is None:
        raise ValueError(
            "`model` must be a keras_sovit SoViTClassifier. "
            f"Received: model={model!r}"
        )
    if reset_head:
        num_classes = head.kernel.shape[-1]
        head.kernel.assign(
            keras.ops.zeros(head.kernel.shape, head.kernel.dtype)
        )
        head.bias.assign(
            keras.ops.full(head.bias.shape, -math.log(num_classes), "float32")
        )
    optimizer = LayerDecaySGD(
        learning_rate=make_fine_tuning_schedule(config),
        momentum=config["momentum"],
        lr_mults=layer_decay_multipliers(model, config["layer_decay"]),
        global_clipnorm=config["clipnorm"],
    )
    if metrics is None:
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    model.compile(
        optimizer=optimizer,
        loss=SigmoidCrossEntropy(),
        metrics=metrics,
        **compile_kwargs,
    )
    return optimizer
