"""Sweep measurements as plain data: one row per (shape, compute, metric)."""

import csv
import glob
import json
import math
import numbers
import os

from keras_sovit.shapes import SHAPE_FIELDS
from keras_sovit.shapes import ShapeSpec
from keras_sovit.shapes import check_shape_spec

NUMBER_FIELDS = ("compute_gflops", "examples_seen", "metric_value")
CORE_FIELDS = SHAPE_FIELDS + NUMBER_FIELDS + ("metric_name",)
DEFAULT_METRIC = "fewshot_10shot_error"


def _check_number(name, value, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(
            f"`{name}` must be a real number. Received: {name}={value!r}"
        )
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be finite. Received: {name}={value}")
    return value


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
        **extra,
    ):
        """Adds one measurement of `shape` at `compute_gflops`."""
        shape = check_shape_spec("shape", shape, allow_dict=True)
        row = shape.to_dict()
        row.update(
            compute_gflops=compute_gflops,
            examples_seen=examples_seen,
            metric_name=metric_name,
            metric_value=metric_value,
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

        Trial hyperparameters must hold the shape fields; the compute of a
        row comes from a `compute_gflops` metric recorded at the same step
        (one row per step, so each step can be a compute checkpoint), else
        from the trial's `compute_gflops` hyperparameter with the best value
        of `metric_name` (one row per trial). `examples_seen` is read the
        same way when present. Trials without the metric or the shape
        hyperparameters, and FAILED or INVALID trials, are skipped.
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
            for row in _trial_rows(state, metric_name):
                results._rows.append(_normalise_row(row))
        if not len(results):
            raise ValueError(
                f"No trial in `project_dir` recorded the metric. Received: "
                f"project_dir={project_dir!r}, metric_name={metric_name!r}"
            )
        return results


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


def _trial_rows(state, metric_name):
    if state.get("status") in ("FAILED", "INVALID"):
        return []
    values = state.get("hyperparameters", {}).get("values", {})
    if any(field not in values for field in SHAPE_FIELDS):
        return []
    metrics = state.get("metrics", {}).get("metrics", {})
    observed = _observations(metrics, metric_name)
    if not observed:
        return []
    base = {field: values[field] for field in SHAPE_FIELDS}
    base["metric_name"] = metric_name
    base["trial_id"] = str(state.get("trial_id"))
    if isinstance(values.get("phase"), str):
        base["phase"] = values["phase"]
    computes = _observations(metrics, "compute_gflops")
    examples = _observations(metrics, "examples_seen")
    rows = []
    if computes:
        for step in sorted(observed):
            if step not in computes:
                continue
            row = dict(base, compute_gflops=computes[step])
            row["metric_value"] = observed[step]
            row["examples_seen"] = examples.get(step)
            rows.append(row)
        return rows
    if "compute_gflops" not in values:
        return []
    direction = metrics[metric_name].get("direction", "min")
    pick = min if direction == "min" else max
    step = pick(observed, key=lambda s: observed[s])
    row = dict(base, compute_gflops=values["compute_gflops"])
    row["metric_value"] = observed[step]
    row["examples_seen"] = examples.get(step, values.get("examples_seen"))
    return [row]
