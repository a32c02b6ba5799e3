"""The tests' one oracle driver: KerasTuner's worker loop without training.

A worker asks for a trial (`create_trial`), reports metrics
(`update_trial`, one call per step) and ends it (`end_trial`), until the
oracle stops. `answer(trial)` gives a trial's reports: a metrics dict, or a
list of `(step, metrics)` pairs.
"""

from keras_tuner.engine.trial import TrialStatus


def complete_trial(oracle, trial, reports):
    """Reports `reports` (a dict, or `(step, metrics)` pairs) and ends the
    trial as completed."""
    if isinstance(reports, dict):
        reports = [(None, reports)]
    for step, metrics in reports:
        if step is None:
            oracle.update_trial(trial.trial_id, metrics)
        else:
            oracle.update_trial(trial.trial_id, metrics, step=step)
    trial.status = TrialStatus.COMPLETED
    oracle.end_trial(trial)


def fail_trial(oracle, trial):
    trial.status = TrialStatus.FAILED
    oracle.end_trial(trial)


def drive(oracle, answer, stop_after=None, fail=(), leave_running=False,
          max_trials=1000):  # fmt: skip
    """One worker to the end (or `stop_after` trials); the trials it ran.

    Trials whose id is in `fail` fail; with `leave_running`, one more trial
    is started and left running (a crash mid-trial).
    """
    ran = []
    while stop_after is None or len(ran) < stop_after:
        trial = oracle.create_trial("tuner0")
        if trial.status == TrialStatus.STOPPED:
            break
        assert trial.status == TrialStatus.RUNNING
        ran.append(trial)
        if trial.trial_id in fail:
            fail_trial(oracle, trial)
            continue
        complete_trial(oracle, trial, answer(trial))
        assert len(ran) < max_trials, "the search does not end"
    if leave_running:
        trial = oracle.create_trial("tuner0")
        assert trial.status == TrialStatus.RUNNING
        ran.append(trial)
    return ran
