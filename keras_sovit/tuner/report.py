"""Files the oracle writes into its project directory.

The project directory may be on any filesystem `tf.io.gfile` knows
(`gs://` under TPUs, `ram://` in tests): the files are written to a local
temporary directory and then copied there. Without TensorFlow (a JAX or
torch machine) the directory is a local path.
"""

import json
import logging
import os
import shutil
import tempfile

from keras_sovit.tuner.protocol import PhaseName

logger = logging.getLogger("keras_sovit.tuner.shape_oracle")

REPORT_FILE = "shape_report.json"
RESULTS_FILE = "sweep_results.csv"
STAR_PLOT_FILE = "star_sweep.png"
SCALING_PLOT_FILE = "scaling.png"


def write_project_files(directory, report, results, scaling=None):
    """Writes the report, the sweep results and (once fitted) the plots.

    Args:
        directory: str. The project directory, local or e.g. `gs://...`.
        report: dict. `ShapeOracle.report()`.
        results: `keras_sovit.SweepResults`. All observations.
        scaling: dict or `None`. What the plots show: `star_fit` (a
            `StarSweepFit`), `base_shape`, `base_compute`, `target_compute`,
            `rounding` and `image_size`; `None` before the star fit.
    """
    with tempfile.TemporaryDirectory() as local:
        _write_local_files(local, report, results, scaling)
        gfile = _gfile()
        gfile.makedirs(directory)
        for name in sorted(os.listdir(local)):
            source = os.path.join(local, name)
            target = os.path.join(directory, name)
            # TF's ram:// filesystem appends when it overwrites, so the old
            # file goes first (on local disks and gs:// this changes
            # nothing).
            if gfile.exists(target):
                gfile.remove(target)
            gfile.copy(source, target)


class _LocalFiles:
    """The part of `tf.io.gfile` used here, for local paths."""

    exists = staticmethod(os.path.exists)
    remove = staticmethod(os.remove)
    copy = staticmethod(shutil.copyfile)

    @staticmethod
    def makedirs(path):
        os.makedirs(path, exist_ok=True)


def _gfile():
    """`tf.io.gfile` (any filesystem TF knows), else local files."""
    try:
        import tensorflow as tf
    except ImportError:
        return _LocalFiles
    return tf.io.gfile


def _write_local_files(directory, report, results, scaling):
    with open(os.path.join(directory, REPORT_FILE), "w") as f:
        json.dump(report, f, indent=2)
    if len(results):
        results.to_csv(os.path.join(directory, RESULTS_FILE))
    if scaling is not None:
        _write_plots(directory, results, **scaling)


def _write_plots(directory, results, star_fit, base_shape, base_compute,
                 target_compute, rounding, image_size):
    try:
        from keras_sovit.scaling import plots
    except ImportError as error:  # matplotlib or plots.py missing.
        logger.warning("ShapeOracle: no plots written (%s).", error)
        return
    plots.plot_star_sweep(
        star_fit, results.filter(phase=PhaseName.STAR.value),
        os.path.join(directory, STAR_PLOT_FILE), image_size=image_size,
    )
    if base_shape is not None:
        plots.plot_scaling(
            star_fit, base_shape, base_compute,
            [base_compute, target_compute],
            os.path.join(directory, SCALING_PLOT_FILE), rounding=rounding,
        )
