"""`SoViTHyperModel`: builds and trains a SoViT for one oracle trial."""

import dataclasses
import time

import keras
import keras_tuner

from keras_sovit._validation import check_bool
from keras_sovit._validation import check_choice
from keras_sovit._validation import check_image_shape
from keras_sovit._validation import check_positive_int
from keras_sovit._validation import check_rate
from keras_sovit.shapes import POOL_TYPES
from keras_sovit.shapes import POSEMB_TYPES
from keras_sovit.shapes import ShapeSpec
from keras_sovit.tuner.protocol import BUDGET_FRACTIONS_HP
from keras_sovit.tuner.protocol import COMPUTE_METRIC
from keras_sovit.tuner.protocol import HP_LIMITS
from keras_sovit.tuner.protocol import MAX_SEED
from keras_sovit.tuner.protocol import PHASE_HP
from keras_sovit.tuner.protocol import SEED_HP
from keras_sovit.tuner.protocol import UNTRAINED_PREFIX
from keras_sovit.tuner.protocol import PhaseName
from keras_sovit.tuner.protocol import TrialSpec
from keras_sovit.tuner.protocol import checkpoint_metric_name
from keras_sovit.tuner.protocol import format_fractions

# The small preset is meant for small images; the paper's sweeps use 224 px.
SMALL_IMAGE_MAX = 64
RECIPES = ("auto", "paper", "small")


class SoViTHyperModel(keras_tuner.HyperModel):
    """Builds, compiles and trains a SoViT classifier for a shape trial.

    Everything a trial needs comes from its hyperparameters, so the
    hypermodel works the same on the chief and on KerasTuner workers:
    `width`, `depth`, `mlp_dim`, `num_heads`, `patch_size` give the
    `keras_sovit.models.SoViTClassifier`, `compute_gflops` the largest
    training budget, and `seed` (default 0) the replicate: it seeds the
    initialisation (`keras.utils.set_random_seed(seed)` right before the
    model is built, so a trial's weights do not depend on the trials
    before it) and, when `x` is a callable, the data order (`x(seed)` gives
    the training data).

    One trial trains several budgets from one run
    (`keras_sovit.training.BranchedRun`): budget `i` is
    `fraction_i * compute_gflops` for the fractions of `checkpoints`, or of
    the optional `budget_fractions` hyperparameter (a string such as
    `"0.25,0.5,1"`); budgets that buy no whole step, or the same steps as a
    larger one, are dropped (`feasible_budgets`). The run follows the
    recipe's main phase and cools down a branch at each budget over
    `cooldown_fraction` of its steps, so every reported value is that of a
    finished (cooled) run. The train step is traced once for all budgets
    of a trial, and with `reuse_compiled` (the default) once per shape:
    a trial with the shape and steps of the previous trial (another seed,
    a final or validation replicate) is trained by the previous trial's
    compiled model, reset to the new trial's initial weights and optimizer
    state, and its trained weights are copied into the new trial's model;
    the numbers are those of a fresh model. That earlier model object is
    therefore retrained: keep weights, not model objects, across trials
    (KerasTuner saves each trial's weights), or pass
    `reuse_compiled=False`.

    Reported metrics (all floats), for each budget `i` (0 = smallest):
    `"<metric>@i"` and `"<metric>_se@i"` for every evaluator metric,
    `"compute_gflops@i"` (the compute of that cooled point: main-run plus
    cooldown examples x GFLOPs per example), `"examples_seen@i"`,
    `"budget_gflops@i"` and `"cooled@i"` (1.0: measured at the end of a
    cooldown; 0.0 only with `cooldown_fraction=0`); the same values of the
    largest budget under the plain names; `"charged_gflops"`, the
    compute the trial trained in all (main run to the last branch point
    plus every cooldown); and `"untrained_<metric>"`, every metric of the
    network before training (the signal gate's baseline).

    Evaluator metrics: `fewshot_{n}shot_error` (+ `_se`) for every `n` in
    `shots` when few-shot sets are given (`FewShotEvaluator`),
    `probe_error` (+ `_se`) when probe sets are given
    (`LinearProbeEvaluator`), and `val_loss`, `val_error` (+ `_se`) of the
    trained head, with the loss it was trained with, when
    `validation_data` is passed to `search` (`ValidationEvaluator`).
    Compute counts the backbone's forward GFLOPs
    (`ShapeSpec.gflops(image_size, pool_type=...)`), as the oracle does.

    Recipe: `recipe="auto"` uses the `"small"` preset of
    `keras_sovit.training.recipe` for images of at most 64 px and the
    paper's otherwise; `compile_kwargs` overrides any recipe value (and
    passes other keys to `model.compile`). The schedule lengths are those
    of the trial's largest budget, with no cooldown in the main phase.

    The training data `x` passed to `tuner.search(x=...)` must be a
    repeating, batched dataset of `(images, one-hot labels)` with batches
    of `batch_size` (e.g. `keras_sovit.data.input_pipeline(...,
    training=True)`), or a callable `seed -> dataset` (preferred). Pass the
    callable for reproducible trials: every new iterator of one seeded,
    reshuffling `tf.data` pipeline yields another order, so with a shared
    dataset a trial's data depends on how many trials iterated it before
    in the process (trial order, retries, a resumed search); `x(seed)`
    gives each trial a fresh pipeline, the same for the same seed.
    `epochs`, `steps_per_epoch` and `verbose` are ignored: the budgets
    decide.

    Args:
        num_classes: int. Classes of the classifier head.
        image_shape: tuple. `(height, width, channels)` of the images.
        fewshot_train: dataset or `(images, labels)` or `None`. Shots are
            drawn from it for the few-shot probe.
        fewshot_test: dataset or `(images, labels)` or `None`. Scored by
            the few-shot probe.
        shots: tuple of ints. Shots per class. Defaults to `(10,)`.
        batch_size: int. Global batch size of `x`. Defaults to `32`.
        checkpoints: tuple of floats in (0, 1]. Budget fractions of
            `compute_gflops`; 1.0 is always added. Defaults to
            `(0.25, 0.5, 1.0)`.
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
        recipe: `"auto"`, `"small"` or `"paper"`. Defaults to `"auto"`.
        cooldown_fraction: float in [0, 1). Cooldown of each budget as a
            fraction of its steps. Defaults to `0.2`.
        probe_train: dataset or `(images, labels)` or `None`. The
            probe-train split of the many-shot linear probe.
        probe_test: dataset or `(images, labels)` or `None`. Its test split.
        probe_kwargs: dict or `None`. Extra `LinearProbeEvaluator`
            arguments.
        test_data: `(images, labels)`, a dataset or `None`. Scored only by
            final-phase trials, as `test_loss` and `test_error` (+ `_se`):
            the sweeps never see it.
        reuse_compiled: bool. Train consecutive trials of one shape and
            step count with one compiled model. Defaults to `True`.

    Attributes (after `fit`):
        last_run: the trial's `keras_sovit.training.BranchedRun`.
        last_timings: dict. Wall seconds of the trial's parts:
            `build_seconds` (`build`: model, initial weights, compile
            settings), `untrained_eval_seconds`, `first_step_seconds` (the
            first train step, tracing and compiling included when the
            model is new), `train_seconds` (all train steps),
            `eval_seconds` (the cooled evaluations), and `reused_compiled`
            (whether a compiled model was reused).

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
        recipe="auto",
        cooldown_fraction=0.2,
        probe_train=None,
        probe_test=None,
        probe_kwargs=None,
        test_data=None,
        reuse_compiled=True,
    ):
        super().__init__(name=name)
        self.reuse_compiled = check_bool("reuse_compiled", reuse_compiled,
                                         allow_none=False)
        self._compiled = None  # (shape and steps, the model that trained)
        self._decoded = None  # _Decoded: the last trial, decoded once
        self.last_timings = {}
        self.distribution = distribution
        self.test_data = test_data
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.image_shape = check_image_shape(image_shape)
        _check_pair("fewshot_train", fewshot_train,
                    "fewshot_test", fewshot_test)
        _check_pair("probe_train", probe_train, "probe_test", probe_test)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.checkpoints = _check_fractions("checkpoints", checkpoints)
        self.pool_type = check_choice("pool_type", pool_type, POOL_TYPES)
        self.posemb = check_choice("posemb", posemb, POSEMB_TYPES)
        self.recipe = check_choice("recipe", recipe, RECIPES)

        self.cooldown_fraction = check_rate("cooldown_fraction",
                                            cooldown_fraction)
        self.compile_kwargs = dict(compile_kwargs or {})
        self.shots = tuple(shots)
        self._evaluators = []
        if fewshot_train is not None:
            from keras_sovit.evaluation import FewShotEvaluator

            self._evaluators.append(FewShotEvaluator(
                fewshot_train, fewshot_test, shots=self.shots,
                num_classes=self.num_classes, **dict(fewshot_kwargs or {}),
            ))
        if probe_train is not None:
            from keras_sovit.evaluation import LinearProbeEvaluator

            self._evaluators.append(LinearProbeEvaluator(
                probe_train, probe_test, num_classes=self.num_classes,
                **dict(probe_kwargs or {}),
            ))

    @property
    def image_size(self):
        return self.image_shape[:2]

    @property
    def preset(self):
        """The recipe preset the trials use (`recipe="auto"` resolved)."""
        if self.recipe != "auto":
            return self.recipe
        small = max(self.image_size) <= SMALL_IMAGE_MAX
        return "small" if small else "paper"

    def declare_hyperparameters(self, hp):
        """Declares the shape, compute, seed and phase hyperparameters.

        The defaults are a tiny valid shape so that the tuner's up-front
        build is cheap; a `ShapeOracle` supplies the real values.
        """
        side = min(self.image_size)
        patch = min(
            (p for p in range(1, side + 1) if side % p == 0),
            key=lambda p: abs(side / p - 4),
        )
        hp.Int("width", 1, HP_LIMITS["width"], default=16)
        hp.Int("depth", 1, HP_LIMITS["depth"], default=1)
        hp.Int("mlp_dim", 1, HP_LIMITS["mlp_dim"], default=16)
        hp.Int("num_heads", 1, HP_LIMITS["num_heads"], default=1)
        hp.Int("patch_size", 1, side, default=patch)
        # Enough for one step of the default shape at every budget, so the
        # up-front build passes the budget check of `build`.
        one_step = self.batch_size * self.gflops_per_example(
            ShapeSpec(16, 1, 16, 1, patch)
        )
        hp.Float(
            COMPUTE_METRIC, 1e-6, 1e30, sampling="log",
            default=max(1.0, one_step * 4 / self.checkpoints[0]),
        )
        phases = [p.value for p in PhaseName if p != PhaseName.DONE]
        hp.Choice(PHASE_HP, phases, default=PhaseName.FINAL.value)
        hp.Int(SEED_HP, 0, MAX_SEED, default=0)
        # Declared, so a ShapeOracle gives one trial several budgets.
        hp.Fixed(BUDGET_FRACTIONS_HP, format_fractions(self.checkpoints))

    def trial(self, hp):
        """The trial's decoded hyperparameters (`protocol.TrialSpec`).

        Decoded once per trial: `build`, `fit` and every accessor below
        read this one spec (and its one `plan`) while `hp` keeps its values.
        """
        self.declare_hyperparameters(hp)
        key = tuple(sorted(hp.values.items()))
        if self._decoded is None or self._decoded.key != key:
            spec = TrialSpec.from_values(hp.values)
            fractions = _check_fractions(
                BUDGET_FRACTIONS_HP, spec.fractions or self.checkpoints
            )
            self._decoded = _Decoded(key, spec, fractions)
        return self._decoded.spec

    def shape(self, hp):
        """The trial's `ShapeSpec`."""
        return self.trial(hp).shape

    def gflops_per_example(self, shape):
        """Forward GFLOPs per example of the backbone, as the oracle counts."""
        return shape.gflops(self.image_size, pool_type=self.pool_type)

    def budgets(self, hp):
        """The trial's budgets in GFLOPs, ascending."""
        spec = self.trial(hp)
        return [spec.compute * f for f in self._decoded.fractions]

    def feasible_budgets(self, hp):
        """The trial's budgets that buy at least one step, one per step.

        A smaller budget that buys no whole step, or the same number of
        steps as a larger one, is dropped (so `"<metric>@0"` is the
        smallest feasible budget). Raises
        `keras_tuner.errors.FailedTrialError` (the trial fails without
        retries) when even the largest budget buys less than one step.
        """
        from keras_sovit.training.callbacks import steps_for_budget
        from keras_sovit.training.callbacks import whole_steps

        per_example = self.gflops_per_example(self.shape(hp))
        budgets = self.budgets(hp)
        by_steps = {}
        for budget in budgets:
            steps = whole_steps(budget, per_example, self.batch_size)
            if steps >= 1:
                by_steps[steps] = budget
        if not by_steps:
            try:
                steps_for_budget(budgets[-1], per_example, self.batch_size)
            except ValueError as error:
                raise keras_tuner.errors.FailedTrialError(
                    str(error)
                ) from error
        return [by_steps[s] for s in sorted(by_steps)]

    def plan(self, hp):
        """The trial's `keras_sovit.training.branch_plan` (computed once).

        Raises `keras_tuner.errors.FailedTrialError` when the largest
        budget buys less than one step.
        """
        from keras_sovit.training import branch_plan

        spec = self.trial(hp)
        if self._decoded.plan is None:
            try:
                self._decoded.plan = branch_plan(
                    self.feasible_budgets(hp),
                    self.gflops_per_example(spec.shape),
                    self.batch_size,
                    self.cooldown_fraction,
                )
            except ValueError as error:
                raise keras_tuner.errors.FailedTrialError(
                    str(error)
                ) from error
        return self._decoded.plan

    def total_steps(self, hp):
        """Training steps of the trial's largest budget.

        Raises `keras_tuner.errors.FailedTrialError` when a budget buys
        less than one step.
        """
        return self.plan(hp)["branches"][-1]["steps"]

    def seed(self, hp):
        """The trial's replicate seed (hyperparameter `seed`, default 0)."""
        return self.trial(hp).seed

    def build(self, hp):
        from keras_sovit.models import SoViTBackbone
        from keras_sovit.models import SoViTClassifier
        from keras_sovit.training import compile_for_pretraining

        self.last_timings = {}
        if self.distribution is not None:
            # KerasTuner clears the Keras session, and with it the global
            # distribution, before every build.
            keras.distribution.set_distribution(self.distribution)
        # Before building: a shape too large for its budget fails at once
        # instead of allocating a model that cannot take one step.
        spec = self.trial(hp)
        steps = self.total_steps(hp)
        begin = time.perf_counter()
        keras.utils.set_random_seed(spec.seed)
        backbone = SoViTBackbone(
            spec.shape,
            image_shape=self.image_shape,
            pool_type=self.pool_type,
            posemb=self.posemb,
        )
        model = SoViTClassifier(backbone, num_classes=self.num_classes)
        kwargs = {"cooldown_steps": 0, **self.compile_kwargs}
        compile_for_pretraining(
            model, total_steps=steps, preset=self.preset, **kwargs
        )
        self.last_timings = {"build_seconds": time.perf_counter() - begin}
        return model

    def fit(self, hp, model, x, *args, validation_data=None, callbacks=None,
            **kwargs):
        """Trains `model` for the trial's budgets and returns its metrics."""
        from keras_sovit.evaluation import ValidationEvaluator
        from keras_sovit.training import BranchedRun

        evaluators = list(self._evaluators)
        if validation_data is not None:
            evaluators.append(ValidationEvaluator(validation_data))
        spec = self.trial(hp)
        if self.test_data is not None and spec.phase == PhaseName.FINAL:
            evaluators.append(ValidationEvaluator(self.test_data,
                                                  prefix="test"))
        if not evaluators:
            raise ValueError(
                "SoViTHyperModel needs few-shot sets (`fewshot_train`, "
                "`fewshot_test`), probe sets or `validation_data` to report "
                "a metric. Received: validation_data=None"
            )
        data = x(spec.seed) if callable(x) else x
        trainer = self._trainer(hp, model)
        run = BranchedRun(
            trainer,
            data,
            [b["budget_gflops"] for b in self.plan(hp)["branches"]],
            self.gflops_per_example(spec.shape),
            self.batch_size,
            cooldown_fraction=self.cooldown_fraction,
            evaluators=evaluators,
            callbacks=callbacks,
        )
        begin = time.perf_counter()
        untrained = _evaluate_all(evaluators, trainer)
        untrained_seconds = time.perf_counter() - begin
        records = run.run()
        if trainer is not model:
            # The trial's own model holds the result, as without reuse.
            model.set_weights(trainer.get_weights())
        self.last_run = run
        self.last_timings = {
            "build_seconds": self.last_timings.get("build_seconds"),
            "untrained_eval_seconds": untrained_seconds,
            "first_step_seconds": run.first_step_seconds,
            "train_seconds": run.train_seconds,
            "eval_seconds": run.eval_seconds,
            "reused_compiled": trainer is not model,
        }
        metrics = trial_metrics(records, run.charged_gflops)
        metrics.update({UNTRAINED_PREFIX + k: v for k, v in untrained.items()})
        return metrics

    def _trainer(self, hp, model):
        """The compiled model that trains this trial.

        With `reuse_compiled`, a trial with the shape and steps of the
        previous trial trains that trial's model (its train and predict
        functions are compiled already), reset to `model`'s initial weights
        and optimizer state; otherwise `model` itself trains.
        """
        from keras_sovit.training.branched import build_optimizer
        from keras_sovit.training.branched import strategy_scope

        key = (self.shape(hp), self.total_steps(hp))
        kept, self._compiled = self._compiled, None
        if not self.reuse_compiled:
            return model
        if kept is None or kept[0] != key or kept[1] is model:
            self._compiled = (key, model)
            return model
        trainer = kept[1]
        build_optimizer(model)
        if _layout(trainer) != _layout(model):
            self._compiled = (key, model)
            return model
        with strategy_scope(trainer):
            trainer.set_weights(model.get_weights())
            for mine, fresh in zip(trainer.optimizer.variables,
                                   model.optimizer.variables):
                mine.assign(fresh)
        trainer.reset_metrics()
        self._compiled = kept
        return trainer

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
            "recipe": self.recipe,
            "cooldown_fraction": self.cooldown_fraction,
            "reuse_compiled": self.reuse_compiled,
        }


def _layout(model):
    """The classes and variable shapes a reused model must share."""
    return (
        type(model), type(model.optimizer),
        [tuple(v.shape) for v in model.weights],
        [tuple(v.shape) for v in model.optimizer.variables],
    )


@dataclasses.dataclass
class _Decoded:
    """One trial's decoded values: its hp values (the key), the spec, the
    budget fractions in force, and its plan once computed."""

    key: tuple
    spec: TrialSpec
    fractions: tuple
    plan: dict = None


def _check_pair(name_a, a, name_b, b):
    if (a is None) != (b is None):
        raise ValueError(
            f"Pass both `{name_a}` and `{name_b}` or neither. "
            f"Received: {name_a}={type(a).__name__}, "
            f"{name_b}={type(b).__name__}"
        )


def _check_fractions(name, fractions):
    try:
        fractions = tuple(sorted(float(c) for c in fractions))
    except (TypeError, ValueError):
        fractions = ()
    if not fractions or not all(0 < c <= 1 for c in fractions):
        raise ValueError(
            f"`{name}` must be fractions in (0, 1]. "
            f"Received: {name}={fractions!r}"
        )
    if fractions[-1] != 1.0:
        fractions += (1.0,)
    return fractions


def _evaluate_all(evaluators, model):
    """Every evaluator's metrics for the model as it is (e.g. untrained)."""
    out = {}
    for evaluator in evaluators:
        out.update({k: float(v) for k, v in evaluator.evaluate(model).items()})
    return out


def trial_metrics(records, charged_gflops):
    """A trial's metrics dict from `BranchedRun` records.

    Every budget `i` gives `"<name>@i"` for the evaluator metrics (with
    their `_se`) and `compute_gflops`, `examples_seen`, `budget_gflops`,
    `cooled` (1.0 or 0.0); the largest budget's values also appear under
    the plain names; `charged_gflops` is the compute of the whole run.

    Example:

    ```python
    records = [
        {"compute_gflops": 1.0, "examples_seen": 8, "budget_gflops": 1.0,
         "cooled": True, "val_loss": 2.0, "val_loss_se": 0.1, "steps": 1},
        {"compute_gflops": 2.0, "examples_seen": 16, "budget_gflops": 2.0,
         "cooled": True, "val_loss": 1.5, "val_loss_se": 0.1, "steps": 2},
    ]
    metrics = keras_sovit.tuner.hypermodel.trial_metrics(records, 2.4)
    metrics["val_loss@0"], metrics["val_loss"]  # 2.0, 1.5
    ```
    """
    plan_keys = {"steps", "branch_step", "cooldown_steps"}
    metrics = {}
    for index, record in enumerate(records):
        values = {
            key: float(value) for key, value in record.items()
            if key not in plan_keys
        }
        for key, value in values.items():
            metrics[checkpoint_metric_name(key, index)] = value
    last = {
        key: float(value) for key, value in records[-1].items()
        if key not in plan_keys
    }
    metrics.update(last)
    metrics["charged_gflops"] = float(charged_gflops)
    return metrics
