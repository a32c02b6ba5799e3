"""`SoViTHyperModel`: builds and trains a SoViT for one oracle trial."""

import math

import keras
import keras_tuner
import numpy as np

from keras_sovit._validation import check_choice
from keras_sovit._validation import check_positive_int
from keras_sovit.shapes import POOL_TYPES
from keras_sovit.shapes import POSEMB_TYPES
from keras_sovit.shapes import ShapeSpec
from keras_sovit.tuner.protocol import COMPUTE_METRIC
from keras_sovit.tuner.protocol import DEFAULT_PHASES
from keras_sovit.tuner.protocol import PHASE_HP
from keras_sovit.tuner.protocol import checkpoint_metric_name


class SoViTHyperModel(keras_tuner.HyperModel):
    """Builds, compiles and trains a SoViT classifier for a shape trial.

    Everything a trial needs comes from its hyperparameters, so the
    hypermodel works the same on the chief and on KerasTuner workers:
    `width`, `depth`, `mlp_dim`, `num_heads`, `patch_size` give the
    `keras_sovit.models.SoViTClassifier`, and `compute_gflops` the training
    budget. `build` compiles the model with the paper's recipe
    (`keras_sovit.training.compile_for_pretraining`) for
    `steps = compute_gflops / (forward GFLOPs per example × batch_size)`.
    `fit` trains for exactly that budget with
    `keras_sovit.training.ComputeBudget`, evaluates at compute checkpoints
    (fractions of the budget) and returns a dict holding, at the full
    budget, the objective metrics and `compute_gflops`, plus the same
    values at every checkpoint as `"<name>@<i>"` (see
    `keras_sovit.tuner.checkpoint_metric_name`), which `ShapeOracle` turns
    into extra points of its scaling-law fits.

    Metrics: `fewshot_{n}shot_error` for every `n` in `shots` when few-shot
    sets are given (`keras_sovit.evaluation.FewShotEvaluator`), and
    `val_loss` and `val_error` (1 − accuracy) when `validation_data` is
    passed to `search`. Compute counts the backbone's forward GFLOPs
    (`ShapeSpec.gflops(image_size, pool_type=...)`), as the oracle does.

    The training data `x` passed to `tuner.search(x=...)` must be a
    repeating, batched dataset of `(images, one-hot labels)` with batches
    of `batch_size` (e.g. `keras_sovit.data.input_pipeline(...,
    training=True)`).

    Args:
        num_classes: int. Classes of the classifier head.
        image_shape: tuple. `(height, width, channels)` of the images.
        fewshot_train: dataset or `(images, labels)` or `None`. Shots are
            drawn from it for the few-shot probe.
        fewshot_test: dataset or `(images, labels)` or `None`. Scored by
            the few-shot probe.
        shots: tuple of ints. Shots per class. Defaults to `(10,)`.
        batch_size: int. Global batch size of `x`. Defaults to `32`.
        checkpoints: tuple of floats in (0, 1]. Fractions of the budget at
            which to evaluate. Defaults to `(0.25, 0.5, 1.0)`.
        pool_type: str. Pooling of the backbone. Defaults to `"map"`.
        posemb: str. Position embedding. Defaults to `"learn"`.
        compile_kwargs: dict or `None`. Extra arguments of
            `compile_for_pretraining` (e.g. `base_lr`, `optimizer`).
        fewshot_kwargs: dict or `None`. Extra arguments of
            `FewShotEvaluator`.
        distribution: `keras.distribution.Distribution` or `None`. Set
            before every build (JAX backend: e.g. `DataParallel`), since
            KerasTuner clears the Keras session, and with it the global
            distribution, between trials.
        name: str or `None`. Name of the hypermodel.

    Example:

    ```python
    import numpy as np
    images = np.random.uniform(-1, 1, (40, 16, 16, 3)).astype("float32")
    labels = np.arange(40) % 4
    hypermodel = keras_sovit.tuner.SoViTHyperModel(
        num_classes=4,
        image_shape=(16, 16, 3),
        fewshot_train=(images[:20], labels[:20]),
        fewshot_test=(images[20:], labels[20:]),
        shots=(2,),
        batch_size=8,
    )
    hp = keras_tuner.HyperParameters()
    hp.values.update(width=16, depth=1, mlp_dim=32, num_heads=2,
                     patch_size=4, compute_gflops=1.0)
    model = hypermodel.build(hp)
    ```
    """

    def __init__(
        self,
        num_classes,
        image_shape,
        fewshot_train=None,
        fewshot_test=None,
        shots=(10,),
        batch_size=32,
        checkpoints=(0.25, 0.5, 1.0),
        pool_type="map",
        posemb="learn",
        compile_kwargs=None,
        fewshot_kwargs=None,
        distribution=None,
        name=None,
    ):
        super().__init__(name=name)
        self.distribution = distribution
        self.num_classes = check_positive_int("num_classes", num_classes)
        if len(tuple(image_shape)) != 3:
            raise ValueError(
                "`image_shape` must be (height, width, channels). "
                f"Received: image_shape={image_shape!r}"
            )
        self.image_shape = tuple(
            check_positive_int("image_shape", v) for v in image_shape
        )
        if (fewshot_train is None) != (fewshot_test is None):
            raise ValueError(
                "Pass both `fewshot_train` and `fewshot_test` or neither. "
                f"Received: fewshot_train={type(fewshot_train).__name__}, "
                f"fewshot_test={type(fewshot_test).__name__}"
            )
        self.batch_size = check_positive_int("batch_size", batch_size)
        checkpoints = tuple(sorted(float(c) for c in checkpoints))
        if not checkpoints or not all(0 < c <= 1 for c in checkpoints):
            raise ValueError(
                "`checkpoints` must be fractions in (0, 1]. "
                f"Received: checkpoints={checkpoints!r}"
            )
        if checkpoints[-1] != 1.0:
            checkpoints += (1.0,)
        self.checkpoints = checkpoints
        self.pool_type = check_choice("pool_type", pool_type, POOL_TYPES)
        self.posemb = check_choice("posemb", posemb, POSEMB_TYPES)
        self.compile_kwargs = dict(compile_kwargs or {})
        self.shots = tuple(shots)
        self._evaluator = None
        if fewshot_train is not None:
            from keras_sovit.evaluation import FewShotEvaluator

            self._evaluator = FewShotEvaluator(
                fewshot_train, fewshot_test, shots=self.shots,
                num_classes=self.num_classes, **dict(fewshot_kwargs or {}),
            )

    @property
    def image_size(self):
        return self.image_shape[:2]

    def declare_hyperparameters(self, hp):
        """Declares the shape, compute and phase hyperparameters.

        The defaults are a tiny valid shape so that the tuner's up-front
        build is cheap; a `ShapeOracle` supplies the real values.
        """
        side = min(self.image_size)
        patch = min(
            (p for p in range(1, side + 1) if side % p == 0),
            key=lambda p: abs(side / p - 4),
        )
        hp.Int("width", 1, 1 << 16, default=16)
        hp.Int("depth", 1, 1 << 12, default=1)
        hp.Int("mlp_dim", 1, 1 << 18, default=16)
        hp.Int("num_heads", 1, 1024, default=1)
        hp.Int("patch_size", 1, side, default=patch)
        # Enough for one step of the default shape, so the up-front build
        # passes the budget check of `build`.
        one_step = self.batch_size * self.gflops_per_example(
            ShapeSpec(16, 1, 16, 1, patch)
        )
        hp.Float(
            COMPUTE_METRIC, 1e-6, 1e30, sampling="log",
            default=max(1.0, one_step),
        )
        hp.Choice(PHASE_HP, list(DEFAULT_PHASES), default=DEFAULT_PHASES[-1])

    def shape(self, hp):
        """The trial's `ShapeSpec`."""
        self.declare_hyperparameters(hp)
        return ShapeSpec(
            width=hp.get("width"),
            depth=hp.get("depth"),
            mlp_dim=hp.get("mlp_dim"),
            num_heads=hp.get("num_heads"),
            patch_size=hp.get("patch_size"),
        )

    def gflops_per_example(self, shape):
        """Forward GFLOPs per example of the backbone, as the oracle counts."""
        return shape.gflops(self.image_size, pool_type=self.pool_type)

    def total_steps(self, hp):
        """Training steps that fit in the trial's `compute_gflops`.

        Raises `keras_tuner.errors.FailedTrialError` (the trial fails
        without retries) when the budget buys less than one step.
        """
        from keras_sovit.training import steps_for_budget

        shape = self.shape(hp)
        budget = float(hp.get(COMPUTE_METRIC))
        try:
            return steps_for_budget(
                budget, self.gflops_per_example(shape), self.batch_size
            )
        except ValueError as error:
            raise keras_tuner.errors.FailedTrialError(str(error)) from error

    def build(self, hp):
        from keras_sovit.models import SoViTBackbone
        from keras_sovit.models import SoViTClassifier
        from keras_sovit.training import compile_for_pretraining

        if self.distribution is not None:
            # KerasTuner clears the Keras session, and with it the global
            # distribution, before every build.
            keras.distribution.set_distribution(self.distribution)
        # Before building: a shape too large for its budget fails at once
        # instead of allocating a model that cannot take one step.
        steps = self.total_steps(hp)
        backbone = SoViTBackbone(
            self.shape(hp),
            image_shape=self.image_shape,
            pool_type=self.pool_type,
            posemb=self.posemb,
        )
        model = SoViTClassifier(backbone, num_classes=self.num_classes)
        compile_for_pretraining(
            model, total_steps=steps, **self.compile_kwargs
        )
        return model

    def fit(self, hp, model, x, *args, validation_data=None, callbacks=None,
            **kwargs):
        """Trains `model` for the trial's budget and returns its metrics."""
        from keras_sovit.training import ComputeBudget

        shape = self.shape(hp)
        budget = float(hp.get(COMPUTE_METRIC))
        steps = self.total_steps(hp)
        evaluators = []
        if self._evaluator is not None:
            evaluators.append(self._evaluator)
        if validation_data is not None:
            evaluators.append(_ValidationEvaluator(validation_data))
        if not evaluators:
            raise ValueError(
                "SoViTHyperModel needs few-shot sets (`fewshot_train`, "
                "`fewshot_test`) or `validation_data` to report a metric. "
                "Received: validation_data=None"
            )
        compute_budget = ComputeBudget(
            budget,
            self.gflops_per_example(shape),
            checkpoints=[budget * c for c in self.checkpoints],
            evaluators=evaluators,
            batch_size=self.batch_size,
        )
        per_epoch = max(1, math.ceil(steps / len(self.checkpoints)))
        kwargs.pop("epochs", None)
        kwargs.pop("steps_per_epoch", None)
        model.fit(
            x,
            *args,
            epochs=len(self.checkpoints) + 1,
            steps_per_epoch=per_epoch,
            callbacks=[compute_budget, *(callbacks or [])],
            **kwargs,
        )
        return _trial_metrics(compute_budget.history)

    def get_config(self):
        return {
            "num_classes": self.num_classes,
            "image_shape": self.image_shape,
            "shots": self.shots,
            "batch_size": self.batch_size,
            "checkpoints": self.checkpoints,
            "pool_type": self.pool_type,
            "posemb": self.posemb,
            "compile_kwargs": self.compile_kwargs,
            "name": self.name,
        }


class _ValidationEvaluator:
    """Loss and error (1 − accuracy) of a model on validation data."""

    def __init__(self, data):
        self.data = data

    def evaluate(self, model):
        inputs = self.data[0] if isinstance(self.data, tuple) else self.data
        logits = model.predict(inputs, verbose=0)
        labels = np.concatenate(
            [np.asarray(y) for _, y in _batches(self.data)]
        )
        if labels.ndim == 2:
            labels = labels.argmax(-1)
        logits = np.asarray(logits, dtype="float64")
        logits = logits - logits.max(-1, keepdims=True)
        log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        loss = -log_probs[np.arange(len(labels)), labels].mean()
        error = float(np.mean(logits.argmax(-1) != labels))
        return {"val_loss": float(loss), "val_error": error}


def _batches(data):
    if isinstance(data, tuple):
        yield data
        return
    for batch in data:
        yield batch[0], batch[1]


def _trial_metrics(history):
    """Final metrics plus every checkpoint's as `"<name>@<i>"`."""
    metrics = {}
    for index, record in enumerate(history):
        for key, value in record.items():
            metrics[checkpoint_metric_name(key, index)] = float(value)
    metrics.update({k: float(v) for k, v in history[-1].items()})
    return metrics

