"""The paper's training recipes (pretraining and fine-tuning), schedules,
optimizer setup and compute budgets."""

from keras_sovit.training.branched import BranchedRun
from keras_sovit.training.branched import branch_plan
from keras_sovit.training.callbacks import ComputeBudget
from keras_sovit.training.callbacks import ExamplesSeen
from keras_sovit.training.callbacks import steps_for_budget
from keras_sovit.training.fine_tuning import PAPER_FINE_TUNING
from keras_sovit.training.fine_tuning import PAPER_FINE_TUNING_BY_RESOLUTION
from keras_sovit.training.fine_tuning import LayerDecaySGD
from keras_sovit.training.fine_tuning import compile_for_fine_tuning
from keras_sovit.training.fine_tuning import fine_tuning_recipe
from keras_sovit.training.fine_tuning import layer_decay_multipliers
from keras_sovit.training.fine_tuning import make_fine_tuning_schedule
from keras_sovit.training.losses import SigmoidCrossEntropy
from keras_sovit.training.optimizers import AdamWDecayMults
from keras_sovit.training.optimizers import BigVisionAdafactor
from keras_sovit.training.recipe import PAPER_RECIPE
from keras_sovit.training.recipe import PRESETS
from keras_sovit.training.recipe import SMALL_RECIPE
from keras_sovit.training.recipe import compile_for_pretraining
from keras_sovit.training.recipe import head_bias_prior
from keras_sovit.training.recipe import make_loss
from keras_sovit.training.recipe import make_optimizer
from keras_sovit.training.recipe import make_schedule
from keras_sovit.training.recipe import pipeline_kwargs
from keras_sovit.training.recipe import recipe
from keras_sovit.training.recipe import set_head_bias
from keras_sovit.training.schedules import RsqrtSchedule

__all__ = [
    "AdamWDecayMults",
    "LayerDecaySGD",
    "PAPER_FINE_TUNING",
    "PAPER_FINE_TUNING_BY_RESOLUTION",
    "compile_for_fine_tuning",
    "fine_tuning_recipe",
    "layer_decay_multipliers",
    "make_fine_tuning_schedule",
    "BigVisionAdafactor",
    "BranchedRun",
    "ComputeBudget",
    "ExamplesSeen",
    "PAPER_RECIPE",
    "PRESETS",
    "RsqrtSchedule",
    "SMALL_RECIPE",
    "SigmoidCrossEntropy",
    "branch_plan",
    "compile_for_pretraining",
    "head_bias_prior",
    "make_loss",
    "make_optimizer",
    "make_schedule",
    "pipeline_kwargs",
    "recipe",
    "set_head_bias",
    "steps_for_budget",
]
