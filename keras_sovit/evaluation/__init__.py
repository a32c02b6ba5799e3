"""Evaluators with standard errors: validation loss, linear probes."""

from keras_sovit._feature_cache import feature_cache
from keras_sovit.evaluation._common import crossed_mean_se
from keras_sovit.evaluation._common import stratified_subset
from keras_sovit.evaluation.fewshot import FewShotEvaluator
from keras_sovit.evaluation.fewshot import fewshot_error
from keras_sovit.evaluation.fewshot import select_l2
from keras_sovit.evaluation.probe import LinearProbeEvaluator
from keras_sovit.evaluation.validation import ValidationEvaluator
from keras_sovit.evaluation.validation import per_example_loss

__all__ = [
    "FewShotEvaluator",
    "LinearProbeEvaluator",
    "ValidationEvaluator",
    "crossed_mean_se",
    "feature_cache",
    "fewshot_error",
    "per_example_loss",
    "select_l2",
    "stratified_subset",
]
