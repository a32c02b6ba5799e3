"""Drives a KerasTuner oracle without training: trials answered by functions.

The benchmarks replay the oracle against known truths or a table of real
runs. KerasTuner's Tuner would build and fit a model per trial; here one
worker asks (`create_trial`), reports what `answer(values)` returns
(`update_trial`) and ends the trial (`end_trial`), until the oracle stops.

    report = answer_trials(oracle, lambda values: {"val_loss": 1.0})
"""

import tempfile


def complete_trial(oracle, trial, metrics):
    """Reports `metrics` for a running trial and ends it as completed."""
    from keras_tuner.engine.trial import TrialStatus

    oracle.update_trial(trial.trial_id, metrics)
    trial.status = TrialStatus.COMPLETED
    oracle.end_trial(trial)


def answer_trials(oracle, answer):
    """Runs `oracle` to the end; returns its `report()`.

    Args:
        oracle: a `keras_sovit.tuner.ShapeOracle` (its KerasTuner display is
            switched off).
        answer: callable `values -> metrics`: a trial's hyperparameter
            values to the metrics dict the oracle is told.
    """
    from keras_tuner.engine.trial import TrialStatus

    oracle.verbose = 0
    with tempfile.TemporaryDirectory() as directory:
        oracle._set_project_dir(directory, "replay")
        while True:
            trial = oracle.create_trial("worker")
            if trial.status != TrialStatus.RUNNING:
                break
            complete_trial(oracle, trial,
                           answer(trial.hyperparameters.values))
        return oracle.report()
