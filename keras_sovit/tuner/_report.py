"""Files the oracle writes into its project directory."""

import json
import logging
import os

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
    """Writes the report, the sweep results and (once fitted) the plots."""
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
