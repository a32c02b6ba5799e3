"""Files the oracle writes into its project directory.

The project directory may be on any filesystem `tf.io.gfile` knows
(`gs://` under TPUs, `ram://` in tests): the files are written to a local
temporary directory and then copied there.
"""

import json
import logging
import os
import tempfile

import tensorflow as tf
from keras_tuner.engine.trial import TrialStatus

from keras_sovit.shapes import SHAPE_FIELDS
from keras_sovit.tuner._common import PHASE_HP

logger = logging.getLogger("keras_sovit.tuner.shape_oracle")

REPORT_FILE = "shape_report.json"
RESULTS_FILE = "sweep_results.csv"
STAR_PLOT_FILE = "star_sweep.png"
SCALING_PLOT_FILE = "scaling.png"


def final_scores(trials):
    """Shape and score of every completed final trial, by trial id."""
    scores = {}
    for trial_id, trial in trials.items():
        values = trial.hyperparameters.values
        if values.get(PHASE_HP) != "final":
            continue
        if trial.status == TrialStatus.COMPLETED:
            scores[str(trial_id)] = {
                "shape": {f: values[f] for f in SHAPE_FIELDS},
                "score": float(trial.score),
            }
    return scores


def write_project_files(directory, report, results, oracle):
    """Writes the report, the sweep results and (once fitted) the plots.

    Args:
        directory: str. The project directory, local or e.g. `gs://...`.
        report: dict. `oracle.report()`.
        results: `keras_sovit.SweepResults`. All observations.
        oracle: `ShapeOracle`, for the fit and shapes the plots show.
    """
    with tempfile.TemporaryDirectory() as local:
        _write_local_files(local, report, results, oracle)
        tf.io.gfile.makedirs(directory)
        for name in sorted(os.listdir(local)):
            _replace(os.path.join(local, name), os.path.join(directory, name))


def _replace(source, target):
    # TF's ram:// filesystem appends when it overwrites, so the old file
    # goes first (on local disks and gs:// this changes nothing).
    if tf.io.gfile.exists(target):
        tf.io.gfile.remove(target)
    tf.io.gfile.copy(source, target)


def _write_local_files(directory, report, results, oracle):
    with open(os.path.join(directory, REPORT_FILE), "w") as f:
        json.dump(report, f, indent=2)
    if len(results):
        results.to_csv(os.path.join(directory, RESULTS_FILE))
    if oracle.fit_result is not None:
        _write_plots(directory, results, oracle)


def _write_plots(directory, results, oracle):
    try:
        from keras_sovit.scaling import plots
    except ImportError as error:  # matplotlib or plots.py missing.
        logger.warning("ShapeOracle: no plots written (%s).", error)
        return
    plots.plot_star_sweep(
        oracle.fit_result, results.filter(phase="star"),
        os.path.join(directory, STAR_PLOT_FILE),
        image_size=oracle.image_size,
    )
    if oracle.base_shape is not None:
        plots.plot_scaling(
            oracle.fit_result, oracle.base_shape, oracle.base_compute,
            [oracle.base_compute, oracle.target_compute],
            os.path.join(directory, SCALING_PLOT_FILE),
            rounding=oracle.rounding,
        )
