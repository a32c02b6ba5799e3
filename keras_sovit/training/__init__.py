"""The paper's training recipe: schedule, optimizer setup, compute budgets."""

from keras_sovit.training.callbacks import ComputeBudget
from keras_sovit.training.callbacks import ExamplesSeen
from keras_sovit.training.callbacks import steps_for_budget
from keras_sovit.training.schedules import RsqrtSchedule

__all__ = [
    "ComputeBudget",
    "ExamplesSeen",
    "RsqrtSchedule",
    "steps_for_budget",
]
