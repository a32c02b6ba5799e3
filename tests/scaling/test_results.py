import json
import os

import pytest

from keras_sovit.scaling.results import SweepResults
from keras_sovit.shapes import ShapeSpec

SHAPE = ShapeSpec(64, 2, 128, 4, 4)


def _results():
    results = SweepResults()
    results.append(SHAPE, 1234.5678901234567, 0.1 + 0.2, phase="star")
    results.append(
        SHAPE.replace(depth=3), 2e3, 1 / 3, examples_seen=1e6 / 7,
        metric_name="loss",
    )
    return results


def test_append_and_row_contents():
    results = _results()
    assert len(results) == 2
    row = results[0]
    assert row["width"] == 64 and row["depth"] == 2
    assert row["compute_gflops"] == 1234.5678901234567
    assert row["metric_name"] == "fewshot_10shot_error"
    assert row["examples_seen"] is None and row["phase"] == "star"
    assert results.metric_names == ["fewshot_10shot_error", "loss"]
    assert results.shapes() == [SHAPE, SHAPE.replace(depth=3)]
    assert len(results.filter(depth=3)) == 1
    assert results.column("metric_value") == [0.1 + 0.2, 1 / 3]


def test_csv_round_trip_is_exact(tmp_path):
    results = _results()
    path = results.to_csv(str(tmp_path / "sweep.csv"))
    again = SweepResults.from_csv(path)
    assert list(again) == list(results)
    assert again[1]["examples_seen"] == 1e6 / 7


def test_from_rows_validates():
    rows = list(_results())
    assert list(SweepResults.from_rows(rows)) == rows
    bad = dict(rows[0], compute_gflops=-1.0)
    with pytest.raises(ValueError, match="compute_gflops"):
        SweepResults.from_rows([bad])
    with pytest.raises(ValueError, match="metric_value"):
        SweepResults.from_rows([dict(rows[0], metric_value=float("nan"))])
    for key in ("metric_value", "compute_gflops", "examples_seen"):
        with pytest.raises(ValueError, match=f"`{key}` must be finite"):
            SweepResults.from_rows([dict(rows[0], **{key: float("inf")})])
    with pytest.raises(ValueError, match="width"):
        SweepResults.from_rows([dict(rows[0], width=0)])


def _write_trial(project, trial_id, values, observations, status="COMPLETED"):
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    for name, value in values.items():
        hp.Fixed(name, value)
    trial = keras_tuner.engine.trial.Trial(hp, trial_id=trial_id)
    for name, steps in observations.items():
        trial.metrics.register(name, direction="min")
        for step, value in steps:
            trial.metrics.update(name, value, step=step)
    trial.status = status
    folder = os.path.join(project, f"trial_{trial_id}")
    os.makedirs(folder, exist_ok=True)
    trial.save(os.path.join(folder, "trial.json"))


def test_from_kerastuner_reads_real_trial_files(tmp_path):
    project = str(tmp_path)
    shape = SHAPE.to_dict()
    _write_trial(
        project, "0",
        dict(shape, compute_gflops=5e3, phase="star"),
        {"fewshot_10shot_error": [(0, 0.5), (1, 0.4), (2, 0.45)]},
    )
    _write_trial(
        project, "1",
        dict(shape, depth=4, compute_gflops=9e3),
        {
            "fewshot_10shot_error": [(0, 0.6), (1, 0.3)],
            "compute_gflops": [(0, 1e3), (1, 2e3)],
            "examples_seen": [(0, 100.0), (1, 200.0)],
        },
    )
    _write_trial(project, "2", dict(shape), {"loss": [(0, 1.0)]})
    _write_trial(
        project, "3", dict(shape, compute_gflops=1e3),
        {"fewshot_10shot_error": [(0, 0.9)]}, status="FAILED",
    )
    with open(os.path.join(project, "trial_1", "trial.json")) as f:
        assert "hyperparameters" in json.load(f)
    results = SweepResults.from_kerastuner(project, "fewshot_10shot_error")
    rows = list(results)
    assert len(rows) == 3
    assert rows[0]["compute_gflops"] == 5e3
    # The value at the budget (the last step), never the best over steps.
    assert rows[0]["metric_value"] == 0.45
    assert rows[0]["phase"] == "star" and rows[0]["trial_id"] == "0"
    assert [r["compute_gflops"] for r in rows[1:]] == [1e3, 2e3]
    assert [r["metric_value"] for r in rows[1:]] == [0.6, 0.3]
    assert [r["examples_seen"] for r in rows[1:]] == [100.0, 200.0]
    assert rows[1]["depth"] == 4
    with pytest.raises(ValueError, match="metric"):
        SweepResults.from_kerastuner(project, "accuracy")
    with pytest.raises(ValueError, match="project_dir"):
        SweepResults.from_kerastuner(str(tmp_path / "nothing"), "loss")


def test_scaling_package_imports_no_framework():
    import subprocess
    import sys

    code = (
        "import sys, keras_sovit.scaling; "
        "bad = [m for m in ('keras', 'tensorflow', 'keras_tuner', 'jax') "
        "if m in sys.modules]; print(bad); assert not bad"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_largest_compute_rows_picks_each_runs_finished_row():
    from keras_sovit.scaling.results import largest_compute_rows

    rows = [
        {"trial_id": "b", "compute_gflops": 10.0, "v": 1},
        {"trial_id": "a", "compute_gflops": 99.9, "v": 2},  # bought < 100
        {"trial_id": "b", "compute_gflops": 39.8, "v": 3},
        {"trial_id": "a", "compute_gflops": 25.0, "v": 4},
        {"trial_id": "b", "compute_gflops": 39.8, "v": 5},  # a tie
    ]
    picked = largest_compute_rows(rows, key=lambda row: row["trial_id"])
    assert [(r["trial_id"], r["v"]) for r in picked] == [("a", 2), ("b", 3)]
