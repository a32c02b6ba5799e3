"""Reading a search's KerasTuner trials: observations, metrics, compute.

Functions of the oracle's `trials` dict (trial id -> `keras_tuner` trial);
rows come from `keras_sovit.scaling.results.trial_rows`, the reader
`SweepResults.from_kerastuner` uses too.
"""

from keras_tuner.engine.trial import TrialStatus

from keras_sovit.scaling.results import COMPUTE_METRIC
from keras_sovit.scaling.results import SweepResults
from keras_sovit.scaling.results import trial_rows
from keras_sovit.shapes import SHAPE_FIELDS
from keras_sovit.tuner.protocol import CHARGED_METRIC
from keras_sovit.tuner.protocol import PHASE_HP


def observations(trials, metric_name, image_size, phases=None,
                 finished=False, exclude=None):
    """Rows of the completed trials of `phases` (all when `None`).

    Args:
        trials: dict of trial id -> `keras_tuner` trial.
        metric_name: str. The objective.
        image_size: `(height, width)`, for the examples seen.
        phases: tuple of phase names or `None`.
        finished: bool. Only finished runs (`cooled="true"` rows).
        exclude: callable `(trial_id, reason)` or `None`, told of failed
            trials and of completed ones without a finite value.

    Returns:
        `SweepResults`, in trial order.
    """
    results = SweepResults()
    for trial_id in sorted(trials, key=lambda i: (len(i), i)):
        trial = trials[trial_id]
        if phases is not None and (
            trial.hyperparameters.values.get(PHASE_HP) not in phases
        ):
            continue
        if trial.status == TrialStatus.FAILED and exclude:
            exclude(trial_id, "trial failed")
        rows = trial_rows(trial.get_state(), metric_name, image_size)
        if trial.status == TrialStatus.COMPLETED and not rows and exclude:
            exclude(trial_id, "no finite objective value")
        results.extend(r for r in rows
                       if not finished or r["cooled"] == "true")
    return results


def final_metrics(trials, phase):
    """The last value of every metric of each completed trial of `phase`.

    Each dict also holds the trial's hyperparameter values under
    `"values"`.
    """
    out = []
    for trial in trials.values():
        values = trial.hyperparameters.values
        if (trial.status == TrialStatus.COMPLETED
                and values.get(PHASE_HP) == phase):
            tracker = trial.metrics
            out.append(dict(
                {n: float(tracker.get_last_value(n)) for n in tracker.metrics},
                values=dict(values),
            ))
    return out


def compute_spent(trials):
    """GFLOPs trained by all completed trials.

    A trial's `charged_gflops` metric when reported (a branched run trains
    its main run and every cooldown), else its budget.
    """
    total = 0.0
    for trial in trials.values():
        if trial.status == TrialStatus.COMPLETED:
            metrics = trial.metrics
            total += (metrics.get_last_value(CHARGED_METRIC)
                      if metrics.exists(CHARGED_METRIC) else
                      trial.hyperparameters.values[COMPUTE_METRIC])
    return float(total)


def final_scores(trials, phase):
    """Shape and score of every completed trial of `phase`, by trial id."""
    scores = {}
    for trial_id, trial in trials.items():
        values = trial.hyperparameters.values
        if (values.get(PHASE_HP) == phase
                and trial.status == TrialStatus.COMPLETED):
            scores[str(trial_id)] = {
                "shape": {f: values[f] for f in SHAPE_FIELDS},
                "score": float(trial.score),
            }
    return scores
