"""Optimizers of the paper's recipe with per-variable weight-decay factors.

Both optimizers apply big_vision's decoupled weight decay: at every step each
variable whose path matches a pattern of `wd_mults` is multiplied by
`1 - learning_rate * weight_decay * mult` (first matching pattern wins;
variables that match none are not decayed). With the default
`wd_mults=((r"kernel$", 1.0),)` only kernels decay, as in big_vision; biases,
LayerNorm scales, position embeddings and the MAP probe do not. The recipe
adds `(r"(^|/)head/kernel$", 100.0)` in front.

The decay is computed inside `update_step`, from the variable's value before
the gradient update, so it works the same on every backend, under `jit` and
under `tf.distribute` (where Keras calls `update_step` per replica variable).

Both optimizers can also add a linear cooldown to any learning rate or
schedule, switched on and off between training calls with
`set_cooldown(start_step, num_steps)` and `clear_cooldown()`: the rate of
step `s` is multiplied by `clip((start_step + num_steps - s) / num_steps, 0,
1)`. The start and length are optimizer variables (created in `build`, read
in the learning-rate computation), so a compiled train step sees new values
without recompiling on every backend: on JAX they travel with the optimizer
state that `fit` and `train_on_batch` pass to the jitted step, where a
variable created elsewhere would be frozen as a constant. This is how
`keras_sovit.training.BranchedRun` cools down branches of one run.
"""

import re

import keras
import numpy as np

from keras_sovit._validation import check_decay
from keras_sovit._validation import check_epsilon
from keras_sovit._validation import check_momentum
from keras_sovit._validation import check_number
from keras_sovit._validation import check_positive_int

DEFAULT_WD_MULTS = ((r"kernel$", 1.0),)


def regex_multiplier(pairs, path, default):
    """The multiplier of the first `(regex, multiplier)` pair whose regex
    matches `path` (`re.search`), else `default`."""
    for pattern, mult in pairs:
        if re.search(pattern, path):
            return mult
    return default


def check_regex_pairs(name, pairs):
    """`pairs` as a tuple of `(regex, multiplier)`, each regex compiled
    once to check it; a `ValueError` naming `name` otherwise."""
    try:
        checked = tuple((str(p), float(m)) for p, m in pairs)
        for pattern, _ in checked:
            re.compile(pattern)
    except (TypeError, ValueError, re.error) as error:
        raise ValueError(
            f"`{name}` must be a sequence of (regex, multiplier) pairs. "
            f"Received: {name}={pairs!r} ({error})"
        ) from None
    return checked


class _DecayMultipliers:
    """Mixin: decoupled weight decay scaled per variable by path patterns."""

    def _init_decay(self, weight_decay, wd_mults):
        self.decoupled_weight_decay = check_number(
            "weight_decay", weight_decay, low=0.0, allow_none=True
        )
        self.wd_mults = check_regex_pairs("wd_mults", wd_mults)

    def decay_multiplier(self, path):
        """The weight-decay multiplier of a variable path (0 if none)."""
        return regex_multiplier(self.wd_mults, path, default=0.0)

    def _build_decay(self, var_list):
        self._decay_mults = [self.decay_multiplier(v.path) for v in var_list]

    def _decay(self, variable, learning_rate):
        if not self.decoupled_weight_decay:
            return
        mult = self._decay_mults[self._get_variable_index(variable)]
        if mult == 0.0:
            return
        rate = keras.ops.cast(learning_rate, variable.dtype) * (
            self.decoupled_weight_decay * mult
        )
        self.assign_sub(variable, keras.ops.multiply(variable, rate))

    def _build_cooldown(self):
        self._cooldown_start = self.add_variable(
            shape=(), dtype="float32", initializer="zeros",
            name="cooldown_start",
        )
        self._cooldown_steps = self.add_variable(
            shape=(), dtype="float32", initializer="zeros",
            name="cooldown_steps",
        )

    def _check_built(self, what):
        if not self.built:
            raise ValueError(
                f"`{what}` needs a built optimizer: call "
                "`optimizer.build(model.trainable_variables)` first."
            )

    def set_cooldown(self, start_step, num_steps):
        """Cools the rate down linearly to 0 over `num_steps` steps.

        From step `start_step` on, the rate is multiplied by
        `(start_step + num_steps - step) / num_steps`, clipped to [0, 1].
        The optimizer must be built.
        """
        self._check_built("set_cooldown")
        for name, value in (("start_step", start_step),
                            ("num_steps", num_steps)):
            if isinstance(value, bool) or not isinstance(value, int) or (
                value < 0
            ):
                raise ValueError(
                    f"`{name}` must be a non-negative integer. Received: "
                    f"{name}={value!r}"
                )
        self._cooldown_start.assign(float(start_step))
        self._cooldown_steps.assign(float(num_steps))

    def clear_cooldown(self):
        """Switches the cooldown of `set_cooldown` off."""
        self._check_built("clear_cooldown")
        self._cooldown_steps.assign(0.0)

    def cooldown_factor(self):
        """The cooldown multiplier of the current step (1 when off)."""
        length = keras.ops.convert_to_tensor(self._cooldown_steps)
        step = keras.ops.cast(self.iterations, "float32")
        left = (self._cooldown_start + length - step) / keras.ops.maximum(
            length, 1.0
        )
        return keras.ops.where(
            length > 0.0, keras.ops.clip(left, 0.0, 1.0), 1.0
        )

    def _get_current_learning_rate(self):
        learning_rate = super()._get_current_learning_rate()
        if not self.built:
            return learning_rate
        return learning_rate * self.cooldown_factor()

    def _decay_config(self, config):
        config["weight_decay"] = self.decoupled_weight_decay
        config["wd_mults"] = [list(pair) for pair in self.wd_mults]
        return config


@keras.saving.register_keras_serializable(package="keras_sovit")
class BigVisionAdafactor(_DecayMultipliers, keras.optimizers.Optimizer):
    """The big_vision variant of Adafactor used for the paper's sweeps.

    Unlike `keras.optimizers.Adafactor`, the update is not scaled by the
    parameter's RMS and has no relative step size: the learning rate is
    applied directly, as in big_vision's `scale_by_adafactor`. Per step `t`
    (from 1), with `beta2 = min(beta2_cap, 1 - t ** -decay_rate)` and
    `g2 = grad ** 2 + epsilon`:

    - variables whose two largest dimensions are both at least
      `min_dim_size_to_factor` keep factored second moments (row and column
      means of `g2` over those two dimensions) and use
      `v = row * col / mean(row)`; others keep the full `v`;
    - `u = grad / sqrt(v)`, clipped to RMS `clipping_threshold` when set;
    - `m = momentum * m + (1 - momentum) * u` (no debiasing; skipped when
      `momentum` is `None`; kept in the variable dtype, not bfloat16);
    - `var -= learning_rate * (m + weight_decay * mult * var)`.

    Gradient clipping by global norm (`global_clipnorm`) is the Keras
    base-optimizer argument.

    Args:
        learning_rate: float or schedule. Defaults to `8e-4`.
        weight_decay: float or `None`. Decoupled decay relative to the
            learning rate (0.03 in the paper). Defaults to `None`.
        wd_mults: sequence of `(regex, multiplier)` matched against
            variable paths. Defaults to `((r"kernel$", 1.0),)`.
        min_dim_size_to_factor: int. Defaults to `32`.
        decay_rate: float. Second-moment decay exponent. Defaults to `0.8`.
        beta2_cap: float. Defaults to `0.999`.
        clipping_threshold: float or `None`. Update RMS clipping. Defaults
            to `None`.
        momentum: float or `None`. Defaults to `0.9`.
        epsilon: float. Defaults to `1e-30`.
        **kwargs: Base optimizer arguments (`global_clipnorm`, `name`, ...).

    Example:

    ```python
    optimizer = keras_sovit.training.BigVisionAdafactor(
        learning_rate=8e-4,
        weight_decay=0.03,
        wd_mults=[(r"(^|/)head/kernel$", 100.0), (r"kernel$", 1.0)],
        global_clipnorm=1.0,
    )
    ```
    """

    def __init__(
        self,
        learning_rate=8e-4,
        weight_decay=None,
        wd_mults=DEFAULT_WD_MULTS,
        min_dim_size_to_factor=32,
        decay_rate=0.8,
        beta2_cap=0.999,
        clipping_threshold=None,
        momentum=0.9,
        epsilon=1e-30,
        name="big_vision_adafactor",
        **kwargs,
    ):
        kwargs.pop("weight_decay", None)
        check_positive_int("min_dim_size_to_factor", min_dim_size_to_factor)
        check_number("decay_rate", decay_rate, low=0.0, low_open=True)
        check_decay("beta2_cap", beta2_cap)
        check_number("clipping_threshold", clipping_threshold, low=0.0,
                     low_open=True, allow_none=True)  # fmt: skip
        check_momentum("momentum", momentum, allow_none=True)
        check_epsilon("epsilon", epsilon)
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self._init_decay(weight_decay, wd_mults)
        self.min_dim_size_to_factor = min_dim_size_to_factor
        self.decay_rate = decay_rate
        self.beta2_cap = beta2_cap
        self.clipping_threshold = clipping_threshold
        self.momentum = momentum
        self.epsilon = epsilon

    def _factored_dims(self, shape):
        """(largest, second largest) axes, or None when not factored."""
        if len(shape) < 2:
            return None
        order = np.argsort(shape, kind="stable")
        if shape[order[-2]] < self.min_dim_size_to_factor:
            return None
        return int(order[-1]), int(order[-2])

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._build_decay(var_list)
        self._build_cooldown()
        self._rows, self._cols, self._full, self._moms = [], [], [], []
        for var in var_list:
            shape = tuple(var.shape)
            dims = self._factored_dims(shape)
            name = var.path.replace("/", "_")
            if dims is None:
                row_shape, col_shape, full_shape = (), (), shape
            else:
                big, small = dims
                row_shape = tuple(s for i, s in enumerate(shape) if i != big)
                col_shape = tuple(s for i, s in enumerate(shape) if i != small)
                full_shape = ()
            mom_shape = shape if self.momentum else ()
            for store, var_shape, label in (
                (self._rows, row_shape, "row"),
                (self._cols, col_shape, "col"),
                (self._full, full_shape, "v"),
                (self._moms, mom_shape, "momentum"),
            ):
                store.append(
                    self.add_variable(
                        shape=var_shape,
                        dtype=var.dtype,
                        initializer="zeros",
                        name=f"{name}_{label}",
                    )
                )

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        dtype = variable.dtype
        gradient = keras.ops.cast(gradient, dtype)
        step = keras.ops.cast(self.iterations + 1, dtype)
        beta2 = keras.ops.minimum(
            self.beta2_cap, 1.0 - keras.ops.power(step, -self.decay_rate)
        )
        grad_sq = keras.ops.square(gradient) + self.epsilon
        dims = self._factored_dims(tuple(variable.shape))
        if dims is None:
            v = self._full[index]
            self.assign(v, beta2 * v + (1.0 - beta2) * grad_sq)
            update = gradient * keras.ops.rsqrt(v)
        else:
            big, small = dims
            row, col = self._rows[index], self._cols[index]
            self.assign(
                row,
                beta2 * row + (1.0 - beta2) * keras.ops.mean(grad_sq, big),
            )
            self.assign(
                col,
                beta2 * col + (1.0 - beta2) * keras.ops.mean(grad_sq, small),
            )
            small_in_row = small - 1 if small > big else small
            row_mean = keras.ops.mean(row, axis=small_in_row, keepdims=True)
            row_factor = keras.ops.rsqrt(row / row_mean)
            col_factor = keras.ops.rsqrt(col)
            update = (
                gradient
                * keras.ops.expand_dims(row_factor, big)
                * keras.ops.expand_dims(col_factor, small)
            )
        if self.clipping_threshold:
            rms = keras.ops.sqrt(keras.ops.mean(keras.ops.square(update)))
            update = update / keras.ops.maximum(
                1.0, rms / self.clipping_threshold
            )
        if self.momentum:
            mom = self._moms[index]
            self.assign(
                mom, self.momentum * mom + (1.0 - self.momentum) * update
            )
            update = mom
        self._decay(variable, learning_rate)
        lr = keras.ops.cast(learning_rate, dtype)
        self.assign_sub(variable, lr * update)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "min_dim_size_to_factor": self.min_dim_size_to_factor,
                "decay_rate": self.decay_rate,
                "beta2_cap": self.beta2_cap,
                "clipping_threshold": self.clipping_threshold,
                "momentum": self.momentum,
                "epsilon": self.epsilon,
            }
        )
        return self._decay_config(config)


@keras.saving.register_keras_serializable(package="keras_sovit")
class AdamWDecayMults(_DecayMultipliers, keras.optimizers.Adam):
    """AdamW whose decoupled weight decay has per-variable multipliers.

    Adam's update plus `var -= learning_rate * weight_decay * mult * var`,
    where `mult` comes from the first pattern of `wd_mults` that matches the
    variable's path (0 when none matches). With
    `wd_mults=((r".*", 1.0),)` this equals `keras.optimizers.AdamW`.

    Args:
        learning_rate: float or schedule. Defaults to `1e-3`.
        weight_decay: float or `None`. Decay relative to the learning rate.
            Defaults to `0.004`.
        wd_mults: sequence of `(regex, multiplier)`. Defaults to
            `((r"kernel$", 1.0),)`.
        **kwargs: `keras.optimizers.Adam` arguments (`beta_1`, `beta_2`,
            `epsilon`, `global_clipnorm`, ...).

    Example:

    ```python
    optimizer = keras_sovit.training.AdamWDecayMults(
        learning_rate=1e-3,
        weight_decay=0.03,
        wd_mults=[(r"(^|/)head/kernel$", 100.0), (r"kernel$", 1.0)],
    )
    ```
    """

    def __init__(
        self,
        learning_rate=1e-3,
        weight_decay=0.004,
        wd_mults=DEFAULT_WD_MULTS,
        name="adamw_decay_mults",
        **kwargs,
    ):
        kwargs.pop("weight_decay", None)
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self._init_decay(weight_decay, wd_mults)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._build_decay(var_list)
        self._build_cooldown()

    def update_step(self, gradient, variable, learning_rate):
        self._decay(variable, learning_rate)
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return self._decay_config(super().get_config())
