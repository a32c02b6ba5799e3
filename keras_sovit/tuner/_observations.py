"""Reading trial metrics into `SweepResults` rows for the fits."""

import math

from keras_tuner.engine.trial import TrialStatus

from keras_sovit.scaling.results import SweepResults
from keras_sovit.shapes import ShapeSpec
from keras_sovit.tuner._common import COMPUTE_METRIC
from keras_sovit.tuner._common import PHASE_HP
from keras_sovit.tuner._common import checkpoint_metric_name


def collect_results(trials, metric_name, image_size, phases, exclude):
    """All (compute, value) observations of completed trials, in trial order.

    Args:
        trials: dict of trial id -> `keras_tuner` trial.
        metric_name: str. The objective's name.
        image_size: `(height, width)`, for the examples seen.
        phases: tuple of phase names or `None` (all phases).
        exclude: callable `(trial_id, reason)`, told of every failed trial
            and of every completed trial without a finite value.
    """
    results = SweepResults()
    for trial_id in sorted(trials, key=_trial_order):
        trial = trials[trial_id]
        values = trial.hyperparameters.values
        phase = values.get(PHASE_HP)
        if phases is not None and phase not in phases:
            continue
        if trial.status == TrialStatus.FAILED:
            exclude(trial_id, "trial failed")
        if trial.status != TrialStatus.COMPLETED:
            continue
        shape = ShapeSpec.from_dict(values)
        rows = trial_observations(trial, metric_name)
        if not rows:
            exclude(trial_id, "no finite objective value")
        for compute, value in rows:
            results.append(
                shape, compute, value, metric_name=metric_name,
                examples_seen=int(round(compute / shape.gflops(image_size))),
                phase=str(phase), trial_id=str(trial_id),
            )
    return results


def trial_observations(trial, name):
    """(compute, value) pairs of a completed trial, NaNs left out.

    Pairs the objective's metric history with the `compute_gflops` metric
    at the same steps, adds checkpoint metrics (`"<name>@<i>"` with
    `"compute_gflops@<i>"`), and falls back to the trial's budget for the
    last step when no compute metric was reported.
    """
    observed = _history_observations(trial, name)
    for compute, value in _checkpoint_observations(trial.metrics, name):
        observed.setdefault(compute, value)
    return [(c, v) for c, v in sorted(observed.items())
            if _finite(v) and _finite(c) and c > 0]


def _history_observations(trial, name):
    metrics = trial.metrics
    if not metrics.exists(name):
        return {}
    history = metrics.get_history(name)
    computes = {}
    if metrics.exists(COMPUTE_METRIC):
        computes = {o.step: float(o.mean())
                    for o in metrics.get_history(COMPUTE_METRIC)}
    budget = float(trial.hyperparameters.values[COMPUTE_METRIC])
    observed = {}
    for i, obs in enumerate(history):
        compute = computes.get(obs.step)
        if compute is None and i == len(history) - 1:
            compute = budget
        if compute is not None:
            observed[compute] = float(obs.mean())
    return observed


def _checkpoint_observations(metrics, name):
    index = 0
    while metrics.exists(checkpoint_metric_name(name, index)):
        compute_name = checkpoint_metric_name(COMPUTE_METRIC, index)
        if metrics.exists(compute_name):
            value = metrics.get_last_value(checkpoint_metric_name(name, index))
            compute = metrics.get_last_value(compute_name)
            yield float(compute), float(value)
        index += 1


def _trial_order(trial_id):
    return (len(str(trial_id)), str(trial_id))


def _finite(value):
    return value is not None and math.isfinite(value)
