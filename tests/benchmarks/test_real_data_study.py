"""benchmarks/real_data_study.py: its design, resuming, and a tiny run."""

import csv
import importlib.util
import os

import pytest

STUDY = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    "benchmarks",
    "real_data_study.py",
)


def load_study():
    spec = importlib.util.spec_from_file_location("real_data_study", STUDY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_design_has_star_grid_and_off_axis_shapes_over_16x():
    study = load_study()
    shapes = study.design()
    dims = [s for _, s in shapes]
    assert len(set(dims)) == len(dims) >= 40
    roles = "+".join(r for r, _ in shapes)
    for role in ("centre", "star:width", "star:depth", "star:mlp_dim",
                 "grid", "off-axis"):
        assert role in roles
    assert max(study.FRACTIONS) / min(study.FRACTIONS) >= 16
    assert all(width % study.HEADS == 0 for width, _, _ in dims)


def test_resume_skips_pairs_already_in_the_table(tmp_path):
    study = load_study()
    path = str(tmp_path / "table.csv")
    assert study.done_pairs(path) == set()
    row = study._row({"width": 16, "depth": 1, "mlp_dim": 32, "seed": 1,
                      "val_loss": 1.25, "cooled": True})
    study.append_rows(path, [row])
    study.append_rows(path, [row])
    assert study.done_pairs(path) == {(16, 1, 32, 1)}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and rows[0]["val_loss"] == "1.25"
    assert rows[0]["cooled"] == "1"


@pytest.mark.large
def test_tiny_study_runs_and_resumes(tmp_path):
    study = load_study()
    path = str(tmp_path / "tiny.csv")
    assert study.main(["--tiny", "--seeds", "0", "--limit", "1",
                       "--output", path]) == 0
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    cooled = [r for r in rows if r["cooled"] == "1"]
    assert cooled and all(r["val_loss_se"] for r in cooled)
    untrained = [r for r in rows if r["budget_index"] == "-1"][0]
    assert float(cooled[-1]["val_loss"]) < float(untrained["val_loss"])
    assert study.main(["--tiny", "--seeds", "0", "--limit", "1",
                       "--output", path]) == 0
    with open(path, newline="") as f:
        again = list(csv.DictReader(f))
    first = (rows[0]["width"], rows[0]["depth"], rows[0]["mlp_dim"])
    # The done pair was skipped; the next pair was run.
    assert sum((r["width"], r["depth"], r["mlp_dim"]) == first
               for r in again) == len(rows)
    assert len(again) > len(rows)
