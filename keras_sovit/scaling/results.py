"""Sweep measurements as plain data: one row per (shape, compute, metric)."""

import csv
import glob
import json
import math
import os

import numpy as np

from keras_sovit._validation import check_number
from keras_sovit.shapes import SHAPE_FIELDS
from keras_sovit.shapes import ShapeSpec
from keras_sovit.shapes import check_shape_spec

NUMBER_FIELDS = ("compute_gflops", "examples_seen", "metric_value",
                 "metric_se")
CORE_FIELDS = SHAPE_FIELDS + NUMBER_FIELDS + ("metric_name",)
DEFAULT_METRIC = "fewshot_10shot_error"
COMPUTE_METRIC = "compute_gflops"
EXAMPLES_METRIC = "examples_seen"
CHECKPOINT_SEPARATOR = "@"
COMPLETED = "COMPLETED"
COOLED_METRIC = "cooled"
STANDARD_ERROR_SUFFIX = "_se"


def _check_number(name, value, allow_none=False):
    return check_number(name, value, allow_none=allow_none)


def _normalise_row(row):
    """Validates one row dict and returns a clean copy."""
    if not isinstance(row, dict):
        raise ValueError(f"`row` must be a dict. Received: row={row!r}")
    shape = ShapeSpec.from_dict(row)
    clean = shape.to_dict()
    clean["compute_gflops"] = _check_number(
        "compute_gflops", row.get("compute_gflops")
    )
    if clean["compute_gflops"] <= 0:
        raise ValueError(
            "`compute_gflops` must be positive. "
            f"Received: compute_gflops={clean['compute_gflops']}"
        )
    clean["examples_seen"] = _check_number(
        "examples_seen", row.get("examples_seen"), allow_none=True
    )
    clean["metric_value"] = _check_number(
        "metric_value", row.get("metric_value")
    )
    clean["metric_se"] = check_number(
        "metric_se", row.get("metric_se"), low=0.0, allow_none=True
    )
    name = row.get("metric_name", DEFAULT_METRIC)
    if not isinstance(name, str) or not name:
        raise ValueError(
            "`metric_name` must be a non-empty string. "
            f"Received: metric_name={name!r}"
        )
    clean["metric_name"] = name
    for key, value in row.items():
        if key in CORE_FIELDS:
            continue
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(
                "Extra row fields must map str keys to str values. "
                f"Received: {key!r}={value!r}"
            )
        clean[key] = value
    return clean


class SweepResults:
    """Measurements of a sweep: shape, compute, examples seen, metric.

    Each row is a plain dict with the shape fields (`width`, `depth`,
    `mlp_dim`, `num_heads`, `patch_size`), `compute_gflops` (examples seen ×
    forward GFLOPs per example), `examples_seen` (or `None`),
    `metric_name`, `metric_value`, and optional extra string fields such as
    `"phase"` or `"trial_id"`. Results can be appended to, filtered, saved
    as CSV (floats are written with `repr`, so a round trip is exact) and
    built from a KerasTuner project directory without importing KerasTuner.

    Args:
        rows: list of dict, or `None`. Initial rows. Defaults to `None`.

    Example:

    ```python
    results = keras_sovit.scaling.SweepResults()
    shape = keras_sovit.ShapeSpec(64, 2, 128, 4, patch_size=4)
    results.append(shape, compute_gflops=1e3, metric_value=0.42)
    results.to_csv("/tmp/sweep.csv")
    again = keras_sovit.scaling.SweepResults.from_csv("/tmp/sweep.csv")
    assert list(again) == list(results)
    ```
    """

    def __init__(self, rows=None):
        self._rows = []
        for row in rows or ():
            self._rows.append(_normalise_row(row))

    @classmethod
    def from_rows(cls, rows):
        """Builds results from an iterable of row dicts."""
        return cls(list(rows))

    def append(
        self,
        shape,
        compute_gflops,
        metric_value,
        metric_name=DEFAULT_METRIC,
        examples_seen=None,
        metric_se=None,
        **extra,
    ):
        """Adds one measurement of `shape` at `compute_gflops`.

        `metric_se` is the value's standard error, when known.
        """
        shape = check_shape_spec("shape", shape, allow_dict=True)
        row = shape.to_dict()
        row.update(
            compute_gflops=compute_gflops,
            examples_seen=examples_seen,
            metric_name=metric_name,
            metric_value=metric_value,
            metric_se=metric_se,
        )
        row.update(extra)
        self._rows.append(_normalise_row(row))
        return self

    def extend(self, other):
        """Appends every row of another `SweepResults` (or row list)."""
        for row in other:
            self._rows.append(_normalise_row(dict(row)))
        return self

    def __len__(self):
        return len(self._rows)

    def __iter__(self):
        return iter([dict(row) for row in self._rows])

    def __getitem__(self, index):
        return dict(self._rows[index])

    def __repr__(self):
        return f"SweepResults(<{len(self)} rows>)"

    @property
    def metric_names(self):
        """Sorted list of the metric names present."""
        return sorted({row["metric_name"] for row in self._rows})

    def filter(self, **equal_fields):
        """Rows whose fields equal all the given values."""
        for key, value in equal_fields.items():
            if isinstance(value, ShapeSpec):
                raise ValueError(
                    f"`{key}` must be a field value, not a ShapeSpec."
                )
        rows = [
            row
            for row in self._rows
            if all(row.get(k) == v for k, v in equal_fields.items())
        ]
        return SweepResults(rows)

    def shapes(self):
        """Distinct shapes, in order of first appearance."""
        seen = {}
        for row in self._rows:
            shape = ShapeSpec.from_dict(row)
            seen.setdefault(shape, None)
        return list(seen)

    def column(self, name):
        """List of one field's values, row by row."""
        return [row.get(name) for row in self._rows]

    def _fieldnames(self):
        extra = sorted(
            {k for row in self._rows for k in row if k not in CORE_FIELDS}
        )
        return list(CORE_FIELDS) + extra

    def to_csv(self, path):
        """Writes the rows to a CSV file (exact float round trip)."""
        fieldnames = self._fieldnames()
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fieldnames)
            writer.writeheader()
            for row in self._rows:
                out = {}
                for key in fieldnames:
                    value = row.get(key)
                    if value is None:
                        out[key] = ""
                    elif isinstance(value, float):
                        out[key] = repr(value)
                    else:
                        out[key] = str(value)
                writer.writerow(out)
        return path

    @classmethod
    def from_csv(cls, path):
        """Reads results written by `to_csv`."""
        rows = []
        with open(path, newline="") as f:
            for raw in csv.DictReader(f):
                row = {}
                for key, text in raw.items():
                    if key in SHAPE_FIELDS:
                        row[key] = int(text)
                    elif key in NUMBER_FIELDS:
                        row[key] = float(text) if text != "" else None
                    elif text != "":
                        row[key] = text
                rows.append(row)
        return cls(rows)

    @classmethod
    def from_kerastuner(cls, project_dir, metric_name):
        """Reads the `trial_*/trial.json` files of a KerasTuner project.

        Each trial is read by `trial_rows`, the same reader `ShapeOracle`
        uses: completed trials only, the value reported at each compute
        (never the best over steps), compute checkpoints included. Trials
        without the metric or the shape hyperparameters are skipped.
        """
        pattern = os.path.join(str(project_dir), "trial_*", "trial.json")
        paths = sorted(glob.glob(pattern))
        if not paths:
            raise ValueError(
                "`project_dir` holds no trial_*/trial.json files. "
                f"Received: project_dir={project_dir!r}"
            )
        results = cls()
        for path in paths:
            with open(path) as f:
                state = json.load(f)
            for row in trial_rows(state, metric_name):
                results._rows.append(_normalise_row(row))
        if not len(results):
            raise ValueError(
                f"No trial in `project_dir` recorded the metric. Received: "
                f"project_dir={project_dir!r}, metric_name={metric_name!r}"
            )
        return results


def checkpoint_metric_name(name, index):
    """Name under which a hypermodel reports `name` at checkpoint `index`.

    A `keras_tuner.Tuner` passes only the dictionary returned by
    `HyperModel.fit` to the oracle, so the values at earlier compute
    checkpoints travel as extra metrics `"<name>@<index>"`; the reader pairs
    `"<objective>@<i>"` with `"compute_gflops@<i>"`.
    """
    return f"{name}{CHECKPOINT_SEPARATOR}{int(index)}"


def trial_rows(state, metric_name, image_size=None, pool_type="map"):
    """Rows of one KerasTuner trial: the one trial → rows reader.

    `ShapeOracle` and `SweepResults.from_kerastuner` both read trials with
    it, so a project gives one table. Only a COMPLETED trial gives rows;
    a trial without the shape hyperparameters gives none. Observations:

    - the metric's history, each step paired with the `compute_gflops`
      metric of the same step; a step without one counts only if it is the
      last, at the trial's `compute_gflops` hyperparameter (its budget);
    - checkpoint metrics `"<metric>@<i>"` paired with
      `"compute_gflops@<i>"` (see `checkpoint_metric_name`).

    At each compute the value kept is the last one reported there, never
    the best over steps; non-finite values and computes are left out.
    Each row says whether it is a finished run (`cooled="true"`): the
    trial's last reported value (the end of its schedule), or a checkpoint
    reported with
    `"cooled@<i>"` = 1 (measured at the end of a cooldown branch). Other
    values were taken mid-schedule (`cooled="false"`): the fits leave them
    out. `"<metric>_se"` (at the same step or checkpoint) becomes
    `metric_se`; the trial's `seed` hyperparameter, if any, `seed`.

    Args:
        state: dict. A trial's state: `keras_tuner` `Trial.get_state()`,
            the content of its `trial.json`.
        metric_name: str. The metric to read.
        image_size: int, `(height, width)` or `None`. Given, examples seen
            are compute / the shape's forward GFLOPs; else the
            `examples_seen` metric of the same step, if any.
        pool_type: str. Pooling counted in those GFLOPs.

    Returns:
        A list of row dicts (see `SweepResults`), by increasing compute.
    """
    values = state.get("hyperparameters", {}).get("values", {})
    if state.get("status") != COMPLETED or any(
        field not in values for field in SHAPE_FIELDS
    ):
        return []
    metrics = state.get("metrics", {}).get("metrics", {})
    observed = _history(metrics, metric_name, values.get(COMPUTE_METRIC))
    for compute, point in _checkpoints(metrics, metric_name):
        # At one compute, a finished (cooled) value wins over another.
        if compute not in observed or (
            point[COOLED_METRIC] == "true"
            and observed[compute][COOLED_METRIC] == "false"
        ):
            observed[compute] = point
    shape = ShapeSpec.from_dict(values)
    base = dict(shape.to_dict(), metric_name=metric_name,
                trial_id=str(state.get("trial_id")))
    for key in ("phase", "seed"):
        if isinstance(values.get(key), (str, int)):
            base[key] = str(values[key])
    rows = []
    for compute in sorted(observed):
        point = observed[compute]
        if not (_finite(point["metric_value"]) and _finite(compute)
                and compute > 0):
            continue
        if image_size is not None:
            point["examples_seen"] = round(compute / shape.gflops(
                image_size, pool_type=pool_type, strict=False))
        if not _finite(point["metric_se"]):
            point["metric_se"] = None
        rows.append(dict(base, compute_gflops=compute, **point))
    return rows


def largest_compute_runs(shapes, compute):
    """The library's one hold-out rule: each shape's largest-compute run.

    Model selection (the "auto" choices of `JointLaw` and `ShapeOracle`,
    `fit_star_sweep(holdout="largest")`) fits on everything else and
    scores the extrapolation to these runs.

    Args:
        shapes: sequence of hashable shape keys (e.g. `ShapeSpec`), one per
            run.
        compute: sequence of the runs' computes.

    Returns:
        A boolean numpy array, True for the held-out runs.
    """
    compute = np.asarray(compute, dtype=float)
    largest = {}
    for shape, t in zip(shapes, compute):
        largest[shape] = max(largest.get(shape, -np.inf), t)
    return np.array([np.isclose(t, largest[s], rtol=1e-9, atol=0.0)
                     for s, t in zip(shapes, compute)], dtype=bool)


def largest_compute_rows(rows, key):
    """Each run's row at its largest compute, sorted by run.

    A run reports the compute its whole steps bought, a little under its
    budget, so a run's finished row is found by its key, never by the
    planned compute. `key(row)` names the run (e.g. its trial id); a tie
    keeps the first row.
    """
    last = {}
    for row in rows:
        run = key(row)
        kept = last.get(run)
        if kept is None or float(row["compute_gflops"]) > float(
            kept["compute_gflops"]
        ):
            last[run] = row
    return [last[run] for run in sorted(last)]


def _observations(metrics, name):
    """{step: mean value} of one metric in a trial's metrics config."""
    entry = metrics.get(name)
    if not entry:
        return {}
    out = {}
    for obs in entry.get("observations", []):
        value = obs["value"]
        if isinstance(value, (list, tuple)):
            value = sum(value) / len(value)
        out[int(obs.get("step", 0))] = float(value)
    return out


def _history(metrics, name, budget):
    """{compute: point} from the metric's step history."""
    observed = _observations(metrics, name)
    computes = _observations(metrics, COMPUTE_METRIC)
    examples = _observations(metrics, EXAMPLES_METRIC)
    errors = _observations(metrics, name + STANDARD_ERROR_SUFFIX)
    out = {}
    last = max(observed) if observed else None
    for step in sorted(observed):
        compute = computes.get(step)
        if compute is None and step == last and budget is not None:
            compute = float(budget)
        if compute is not None:
            # The last step ends the trial's schedule: a finished run.
            out[compute] = _point(observed[step], errors.get(step),
                                  examples.get(step), step == last)
    return out


def _checkpoints(metrics, name):
    """(compute, point) of each `"<name>@<i>"` checkpoint."""
    index = 0
    while checkpoint_metric_name(name, index) in metrics:
        def last(metric):
            return _last(metrics, checkpoint_metric_name(metric, index))

        compute = last(COMPUTE_METRIC)
        if compute is not None:
            yield compute, _point(
                last(name), last(name + STANDARD_ERROR_SUFFIX),
                last(EXAMPLES_METRIC), last(COOLED_METRIC) == 1.0,
            )
        index += 1


def _point(value, se, examples, cooled):
    return {"metric_value": value, "metric_se": se,
            "examples_seen": examples,
            COOLED_METRIC: "true" if cooled else "false"}


def _last(metrics, name):
    observed = _observations(metrics, name)
    return observed[max(observed)] if observed else None


def _finite(value):
    return value is not None and math.isfinite(value)
