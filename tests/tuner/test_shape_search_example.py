"""`examples/shape_search.py` end to end, with a very small configuration.

The paper's exponents are given (no star sweep), the grid sweep is a single
16 px shape, and the two final trials (proposal and standard-shaped
control) train for a few steps on animal_mnist.
"""

import importlib.util
import json
import math
import os

import keras
import pytest

import keras_sovit

EXAMPLE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    "examples",
    "shape_search.py",
)
EXPONENTS = {"width": 0.22, "depth": 0.45, "mlp_dim": 0.6}
BASE = keras_sovit.ShapeSpec(32, 1, 64, 4, patch_size=4)
GRID_BUDGET = 0.1
TARGET = 0.5


def _load_example():
    spec = importlib.util.spec_from_file_location("shape_search", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    data_dir = keras_sovit.data.prepare(
        "animal_mnist", data_dir=str(tmp_path_factory.mktemp("tfds"))
    )
    output = tmp_path_factory.mktemp("search")
    example = _load_example()
    returned = example.main([
        "--backend", keras.backend.backend(),
        "--data-dir", data_dir,
        "--image-size", "16",
        "--patch-size", "4",
        "--exponents", "0.22,0.45,0.6",
        "--grid-widths", "32", "--grid-depths", "1", "--grid-mlps", "64",
        "--grid-budget", str(GRID_BUDGET),
        "--target-compute", str(TARGET),
        "--fewshot-examples", "100",
        "--shots", "2",
        "--batch-size", "16",
        "--output-dir", str(output),
        "--overwrite",
    ])
    path = output / "shape_search_report.json"
    with open(path) as f:
        saved = json.load(f)
    return returned, saved, output


def test_report_json_is_written_and_matches_the_return_value(report):
    returned, saved, _ = report
    assert saved["proposal"] == returned["proposal"]
    assert saved["trials_done"] == {"grid": 1, "final": 2}
    assert saved["trials_total"] == 3
    assert saved["phase"] == "done"
    assert saved["method"] == "paper"
    assert saved["exponents"] is None  # Given, not fitted.


def test_proposal_scales_the_grid_optimum_with_the_given_exponents(report):
    _, saved, _ = report
    assert saved["base_shape"] == BASE.to_dict()
    # One grid shape is optimal from its first compute checkpoint on, so
    # t0 is the compute it had reached at half of the grid budget.
    t0 = saved["base_compute"]
    assert GRID_BUDGET / 2 <= t0 <= GRID_BUDGET / 2 * 1.2
    # x_k = x0_k * (T / t0) ** (s_k / 3), widths and MLP to multiples of 16.
    tau = TARGET / t0
    width = 16 * round(32 * tau ** (EXPONENTS["width"] / 3) / 16)
    depth = round(1 * tau ** (EXPONENTS["depth"] / 3))
    mlp = 16 * round(64 * tau ** (EXPONENTS["mlp_dim"] / 3) / 16)
    assert saved["proposal"] == keras_sovit.ShapeSpec(
        width, max(depth, 1), mlp, 4, patch_size=4
    ).to_dict()


def test_table_rows_hold_both_final_trials(report):
    _, saved, _ = report
    rows = {row["role"]: row for row in saved["table"]}
    assert sorted(rows) == ["control", "proposal"]
    assert rows["proposal"]["shape"] == saved["proposal"]
    assert rows["control"]["shape"] == saved["control"]
    control = keras_sovit.ShapeSpec.from_dict(saved["control"])
    assert control.mlp_dim == 4 * control.width
    for row in rows.values():
        shape = keras_sovit.ShapeSpec.from_dict(row["shape"])
        assert row["status"] == "COMPLETED"
        assert row["params"] == shape.num_params(16, num_classes=10)
        per_example = shape.gflops(16)
        assert row["gflops_per_example"] == pytest.approx(per_example)
        # Stopped at the last whole batch of 16 within the budget.
        steps = math.floor(TARGET / (per_example * 16) + 1e-9)
        assert row["compute_gflops"] == pytest.approx(steps * 16 * per_example)
        assert 0.0 <= row["fewshot_error"] <= 1.0
        assert 0.0 <= row["test_accuracy"] <= 1.0


def test_oracle_project_files_exist(report):
    _, saved, output = report
    assert os.path.exists(saved["oracle_report"])
    with open(saved["oracle_report"]) as f:
        oracle_report = json.load(f)
    assert oracle_report["proposal"] == saved["proposal"]
    assert len(oracle_report["final_results"]) == 2
    assert os.path.exists(output / "shape_search" / "sweep_results.csv")
