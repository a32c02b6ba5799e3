"""Few-shot linear evaluation, the metric the paper's scaling laws fit."""

from keras_sovit.evaluation.fewshot import FewShotEvaluator
from keras_sovit.evaluation.fewshot import fewshot_error

__all__ = ["FewShotEvaluator", "fewshot_error"]
