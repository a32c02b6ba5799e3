"""The paper's training recipe: schedule, optimizer setup, compute budgets."""

from keras_sovit.training.schedules import RsqrtSchedule

__all__ = ["RsqrtSchedule"]
