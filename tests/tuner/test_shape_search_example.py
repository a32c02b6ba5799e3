"""`examples/shape_search.py` end to end, with a very small configuration.

The paper's exponents are given (no star sweep, so no signal gate), the
grid sweep is a single 16 px shape whose one run reports three cooled
budgets, and the three final roles (proposal, standard ViT, x0) train for
a few steps on animal_mnist with two seeds each.

The example runs on JAX unless told otherwise, so these tests run on the
JAX pass only (on TensorFlow and torch the example took 90 s and 218 s of
the CI budget); the hypermodel and tuner it drives are tested on every
backend in test_hypermodel.py.
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
GRID_BUDGET = 0.4
TARGET = 1.0
pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="the example's default backend is JAX (examples/shape_search.py)",
)


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
        "--final-seeds", "2",
        "--validation-per-class", "10",
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
    assert saved["objective"] == "val_loss"
    assert saved["phase"] == "done" and saved["stopped"] is None
    assert saved["method"] == "paper"
    assert saved["exponents"] is None  # Given, not fitted.
    phases = [t["values"]["phase"] for t in saved["timings"]]
    assert phases.count("grid") == 1 and phases.count("final") == 6


def test_the_second_seed_of_a_final_role_reuses_its_compiled_model(report):
    _, saved, _ = report
    final = [t for t in saved["timings"] if t["values"]["phase"] == "final"]
    # Roles one after another, seeds 0 and 1 each: seed 1 follows its own
    # role's seed 0 and is trained by that trial's compiled model.
    assert [t["values"]["seed"] for t in final] == [0, 1] * 3
    assert [t["reused_compiled"] for t in final] == [False, True] * 3
    for timing in final:
        parts = (timing["build_seconds"] + timing["untrained_eval_seconds"]
                 + timing["train_seconds"] + timing["eval_seconds"])
        assert 0 < timing["first_step_seconds"] <= timing["train_seconds"]
        assert parts <= timing["seconds"]


def test_proposal_scales_the_grid_optimum_with_the_given_exponents(report):
    _, saved, output = report
    assert saved["base_shape"] == BASE.to_dict()
    # One grid shape is optimal at every cooled budget of its run, so t0 is
    # the smallest of them (B/4, floored to whole steps).
    rows = keras_sovit.scaling.SweepResults.from_csv(
        str(output / "shape_search" / "sweep_results.csv"))
    grid = [r["compute_gflops"] for r in rows if r["phase"] == "grid"]
    assert len(grid) == 3
    t0 = saved["base_compute"]
    assert t0 == min(grid)
    step = BASE.gflops(16) * 16
    assert GRID_BUDGET / 4 - step < t0 <= GRID_BUDGET / 4
    # x_k = x0_k * (T / t0) ** (s_k / 3), widths and MLP to multiples of 16.
    tau = TARGET / t0
    width = 16 * round(32 * tau ** (EXPONENTS["width"] / 3) / 16)
    depth = round(1 * tau ** (EXPONENTS["depth"] / 3))
    mlp = 16 * round(64 * tau ** (EXPONENTS["mlp_dim"] / 3) / 16)
    assert saved["proposal"] == keras_sovit.ShapeSpec(
        width, max(depth, 1), mlp, 4, patch_size=4
    ).to_dict()


def test_final_table_has_three_roles_with_seeds_and_a_verdict(report):
    _, saved, _ = report
    rows = {row["role"]: row for row in saved["final"]}
    assert sorted(rows) == ["proposal", "standard", "x0"]
    assert rows["proposal"]["shape"] == saved["proposal"]
    assert rows["x0"]["shape"] == BASE.to_dict()
    standard = keras_sovit.ShapeSpec.from_dict(rows["standard"]["shape"])
    assert standard.mlp_dim == 4 * standard.width
    for row in rows.values():
        assert row["seeds"] == [0, 1]
        assert len(row["values"]) == 2
        mean = sum(row["values"]) / 2
        assert row["objective_mean"] == pytest.approx(mean)
        sd = math.sqrt(sum((v - mean) ** 2 for v in row["values"]))
        assert row["objective_se"] == pytest.approx(sd / math.sqrt(2))
    assert saved["verdict"]["verdict"] in (
        "better", "worse", "not distinguishable")


def test_every_final_run_learned_more_than_the_untrained_network(report):
    _, saved, output = report
    with open(saved["oracle_report"]) as f:
        assert json.load(f)["proposal"] == saved["proposal"]
    trials = [t for t in saved["timings"] if t["values"]["phase"] == "final"]
    for timing in trials:
        path = output / "shape_search" / f"trial_{timing['trial_id']}" / (
            "trial.json")
        with open(path) as f:
            metrics = json.load(f)["metrics"]["metrics"]

        def last(name):
            return metrics[name]["observations"][-1]["value"][0]

        # The head's validation loss fell below the untrained network's by
        # more than two standard errors, and a test accuracy was measured.
        gap = last("untrained_val_loss") - last("val_loss")
        assert gap > 2 * last("val_loss_se")
        assert "test_error" in metrics
