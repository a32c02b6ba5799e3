"""benchmarks/real_data_analysis.py: reading the study's table."""

import csv
import importlib.util
import math
import os

import numpy as np
import pytest

HERE = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def load(name):
    path = os.path.join(HERE, "benchmarks", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def loss(shape, budget, seed):
    """A made-up cooled value: exact, so interpolation can be checked."""
    width, depth, mlp = shape
    return 1 + width / 100 + depth / 10 + mlp / 1000 + 10 / budget + seed


def write_table(path, study):
    """Two complete shapes (2 seeds) and one with a single seed."""
    rows = []
    shapes = {(16, 1, 64): (0, 1), (32, 2, 128): (0, 1), (64, 4, 256): (0,)}
    for shape, seeds in shapes.items():
        for seed in seeds:
            for index, fraction in enumerate(study.FRACTIONS):
                budget = 100 * fraction
                for cooled in (1, 0):
                    rows.append(study._row({
                        "width": shape[0], "depth": shape[1],
                        "mlp_dim": shape[2], "seed": seed,
                        "budget_index": index, "budget_gflops": budget,
                        "compute_gflops": budget * 0.99, "cooled": cooled,
                        "val_loss": loss(shape, budget, seed) + 0.5 * (
                            1 - cooled),
                    }))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=study.COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def test_table_keeps_complete_shapes_and_interpolates_in_log_compute(
        tmp_path):
    study, analysis = load("real_data_study"), load("real_data_analysis")
    path = str(tmp_path / "table.csv")
    write_table(path, study)
    table = analysis.Table(path)
    assert table.shapes == [(16, 1, 64), (32, 2, 128)]
    assert table.budgets == [6.25, 12.5, 25.0, 50.0, 100.0]
    key = (32, 2, 128)
    assert table.mean(key, 100.0) == pytest.approx(
        np.mean([loss(key, 100.0, s) for s in (0, 1)]))
    # Halfway in log-compute between B/4 and B/2.
    compute = math.sqrt(25.0 * 50.0)
    expected = (loss(key, 25.0, 1) + loss(key, 50.0, 1)) / 2
    assert table.value(key, compute, seed=1) == pytest.approx(expected)
    assert table.value(key, 50.0, seed=1, cooled=False) == pytest.approx(
        loss(key, 50.0, 1) + 0.5)
    shape = analysis.ShapeSpec(28, 2, 120, 4, 4)
    assert table.nearest(shape) == key
    rows = table.rows([key], 25.0)
    assert len(rows) == 6  # 3 budgets x 2 seeds, cooled only
    assert {r["compute_gflops"] for r in rows} == {6.1875, 12.375, 24.75}
