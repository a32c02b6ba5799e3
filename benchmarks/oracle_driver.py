"""Drives a `ShapeOracle` without training: every trial answered by a function.

The benchmarks replay the oracle against known truths or a table of real
runs. KerasTuner's Tuner would build and fit a model per trial; here one
worker asks (`create_trial`), reports what `answer(values)` returns
(`update_trial`) and ends the trial (`end_trial`), until the oracle stops.

    report = answer_trials(oracle, lambda values: {"val_loss": 1.0})
"""

import tempfile


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
            oracle.update_trial(trial.trial_id,
                                answer(trial.hyperparameters.values))
            trial.status = TrialStatus.COMPLETED
            oracle.end_trial(trial)
        return oracle.report()
