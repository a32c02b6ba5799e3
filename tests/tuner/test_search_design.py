"""The oracle's design: phases and rules from outside, config, one reader."""

import dataclasses
import json
import os

import keras_tuner
import numpy as np
import pytest
from keras_tuner.engine.trial import TrialStatus

import keras_sovit
from keras_sovit.scaling import PAPER_LIKE_LAW
from keras_sovit.scaling import Rounding
from keras_sovit.scaling import SweepResults
from keras_sovit.shapes import round_to_multiple
from keras_sovit.tuner import Phase
from keras_sovit.tuner import ProposalRule
from keras_sovit.tuner import SearchConfig
from keras_sovit.tuner import ShapeOracle
from keras_sovit.tuner import register_phase
from keras_sovit.tuner import register_proposal_rule
from keras_sovit.tuner.proposals import ShapeGrid
from tests.tuner.driver import complete_trial
from tests.tuner.driver import drive

# The oracle's own logic: no backend computation to repeat on JAX/torch.
pytestmark = pytest.mark.backend_free

METRIC = "fewshot_10shot_error"
EXPONENTS = {"width": 0.22, "depth": 0.45, "mlp_dim": 0.6}
BASE = keras_sovit.ShapeSpec(608, 10, 928, 16, patch_size=14)
TARGET = 9e11
GIVEN = dict(
    objective=keras_tuner.Objective(METRIC, "min"), target_compute=TARGET,
    exponents=EXPONENTS, base_shape=BASE, base_compute=9e9,
    proposal_method="paper", seed=1, max_consecutive_failed_trials=1,
)


def run(oracle, law=PAPER_LIKE_LAW):
    """Drives the oracle trial by trial; returns the trials run."""
    def answer(trial):
        values = trial.hyperparameters.values
        shape = keras_sovit.ShapeSpec.from_dict(values)
        compute = values["compute_gflops"]
        return {METRIC: law.loss(shape, compute), "compute_gflops": compute}

    return drive(oracle, answer)


def report_of(oracle):
    path = os.path.join(oracle._project_dir, "shape_report.json")
    with open(path) as f:
        return json.load(f)


def test_validation_without_final_trials_writes_the_report(tmp_path):
    # Bug: with final_trials=() the search ended after the validation
    # trials without ever writing shape_report.json.
    oracle = ShapeOracle(**GIVEN, validation_trials=True,
                         validation_compute=9e10, final_trials=())
    oracle._set_project_dir(str(tmp_path), "p")
    trials = run(oracle)
    assert {t.hyperparameters.values["phase"] for t in trials} == {
        "validation"}
    report = report_of(oracle)
    assert report["phase"] == "done"
    assert report["validation_"]["locally_optimal"] in (True, False)
    assert report["proposal"] == oracle.proposal.to_dict()


def test_no_trials_at_all_still_proposes(tmp_path):
    # Bug: with nothing to train the constructor crashed inside KerasTuner
    # (the phase hyperparameter's default "done" was not a choice).
    oracle = ShapeOracle(**GIVEN, final_trials=())
    oracle._set_project_dir(str(tmp_path), "p")
    assert run(oracle) == []
    tau = TARGET / 9e9
    assert oracle.proposal.width == 16 * round(608 * tau ** (0.22 / 3) / 16)
    assert report_of(oracle)["proposal"] == oracle.proposal.to_dict()


def test_resume_detects_every_rounding_field(tmp_path):
    oracle = ShapeOracle(**GIVEN)
    oracle._set_project_dir(str(tmp_path), "p")
    oracle.create_trial("tuner0")
    oracle.save()
    changed = ShapeOracle(**dict(GIVEN, rounding=Rounding(depth_multiple=2)))
    changed._set_project_dir(str(tmp_path), "p")
    with pytest.raises(ValueError, match="rounding.*depth_multiple"):
        changed.reload()


def test_every_config_field_is_compared_on_resume():
    config = SearchConfig.create(**{
        k: v for k, v in GIVEN.items()
        if k not in ("seed", "max_consecutive_failed_trials")
    })
    saved = config.to_dict()
    json.dumps(saved)
    assert set(saved) == {f.name for f in dataclasses.fields(config)}
    config.check_resume(saved)
    for field in saved:
        with pytest.raises(ValueError, match=field):
            config.check_resume(dict(saved, **{field: "something else"}))


@register_proposal_rule
class WiderRule(ProposalRule):
    """Proposes x0 one width step wider, whatever the compute."""

    name = "test_wider"

    def propose(self, observations, target, constraints):
        base = observations.base_shape
        shape = constraints.snap(base.width + 16, base.depth, base.mlp_dim)
        return shape, {"method": self.name, "target": target}


@register_phase
class Preview(Phase):
    """Trains the proposal at a quarter of the target first."""

    name = "test_preview"

    def plan(self, context):
        shape = context.proposal("target")
        return [context.trial(self.name, shape,
                              context.config.target_compute / 4)]

    def finish(self, context):
        rows = context.results(self.name)
        context.state.phase_data[self.name] = {
            "value": rows[0]["metric_value"]
        }
        return True


def test_a_phase_and_a_rule_added_from_outside_run(tmp_path):
    oracle = ShapeOracle(**dict(
        GIVEN, proposal_method="test_wider",
        phases=("proposal", "test_preview", "final"),
    ))
    oracle._set_project_dir(str(tmp_path), "p")
    trials = run(oracle)
    phases = [t.hyperparameters.values["phase"] for t in trials]
    assert phases == ["test_preview", "final"]
    expected = BASE.replace(width=BASE.width + 16)
    assert oracle.proposal == expected
    assert oracle.method == "test_wider"
    for trial, compute in zip(trials, (TARGET / 4, TARGET)):
        values = trial.hyperparameters.values
        assert keras_sovit.ShapeSpec.from_dict(values) == expected
        assert values["compute_gflops"] == compute
    preview = oracle.state.phase_data["test_preview"]["value"]
    assert preview == pytest.approx(PAPER_LIKE_LAW.loss(expected, TARGET / 4))
    assert report_of(oracle)["proposal_info_"]["target"] == TARGET


def test_unknown_phase_or_rule_is_refused():
    with pytest.raises(ValueError, match="phases"):
        ShapeOracle(**dict(GIVEN, phases=("proposal", "nope")))
    with pytest.raises(ValueError, match="proposal_method"):
        ShapeOracle(**dict(GIVEN, proposal_method="nope"))
    with pytest.raises(ValueError, match="Phase subclass"):
        register_phase(dict)


def test_one_rounding_rule_for_halves():
    # 40 / 16 = 2.5: every snapping path of the library rounds it up.
    assert round_to_multiple(40, 16) == 48
    assert Rounding(width_multiple=16).snap(40.0, 1.0, 40.0, 4, 1).width == 48
    grid = ShapeGrid(Rounding(width_multiple=8),
                     {"width": 16, "depth": 1, "mlp_dim": 16},
                     keras_sovit.ShapeSpec(64, 2, 64, 1, 4), (32, 32))
    assert grid.snap(40, 2.5, 40).to_dict() == {
        "width": 48, "depth": 3, "mlp_dim": 48, "num_heads": 1,
        "patch_size": 4,
    }


def test_oracle_and_project_files_read_trials_the_same(tmp_path):
    exponents = dict(EXPONENTS)
    oracle = ShapeOracle(**dict(
        GIVEN, exponents=exponents, base_shape=None, base_compute=None,
        grid={"width": [464, 592, 736], "depth": [4, 5, 6],
              "mlp_dim": [352, 432, 528]},
        grid_budget=9e9, star_center=BASE.replace(width=1968, depth=40,
                                                  mlp_dim=6144),
    ))
    tuner = keras_tuner.Tuner(oracle=oracle, hypermodel=_declare,
                              directory=str(tmp_path), project_name="p")
    first = oracle.create_trial("tuner0")
    values = first.hyperparameters.values
    shape = keras_sovit.ShapeSpec.from_dict(values)
    budget = values["compute_gflops"]
    complete_trial(oracle, first, [  # Not monotone.
        (step, {METRIC: value}) for step, value in enumerate((0.9, 0.5, 0.7))
    ])
    tuner.save()
    from_files = SweepResults.from_kerastuner(tuner.project_dir, METRIC)
    own = oracle.results()
    assert [r["metric_value"] for r in own] == [0.7]  # The last, not 0.5.
    assert [r["metric_value"] for r in from_files] == [0.7]
    assert [r["compute_gflops"] for r in from_files] == [budget]
    assert keras_sovit.ShapeSpec.from_dict(from_files[0]) == shape


def _declare(hp):
    for name in ("width", "depth", "mlp_dim", "num_heads", "patch_size"):
        hp.Int(name, 1, 4096)
    hp.Float("compute_gflops", 1.0, 1e13)
    hp.Choice("phase", ["star", "grid", "validation", "final"])
    return None


def test_mid_schedule_values_are_kept_out_of_the_fits(tmp_path):
    oracle = ShapeOracle(**GIVEN)
    oracle._set_project_dir(str(tmp_path), "p")
    trial = oracle.create_trial("tuner0")
    budget = trial.hyperparameters.values["compute_gflops"]
    # Mid-schedule (no cooldown yet): not a finished run of budget / 2.
    complete_trial(oracle, trial, [
        (0, {METRIC: 0.9, "compute_gflops": budget / 2}),
        (1, {METRIC: 0.5, "compute_gflops": budget,
             f"{METRIC}@0": 0.6, f"{METRIC}_se@0": 0.01,
             "compute_gflops@0": budget / 4, "cooled@0": 1.0}),
    ])  # fmt: skip
    rows = {r["compute_gflops"]: r for r in oracle.results()}
    assert sorted(rows) == [budget / 4, budget / 2, budget]
    assert rows[budget / 2]["cooled"] == "false"
    assert rows[budget / 4]["cooled"] == "true"
    assert rows[budget / 4]["metric_se"] == 0.01
    fitted = oracle._observe(finished=True)
    assert sorted(r["compute_gflops"] for r in fitted) == [budget / 4, budget]


TINY = dict(
    objective=keras_tuner.Objective(METRIC, "min"), target_compute=1e5,
    star_center=keras_sovit.ShapeSpec(64, 4, 256, 4, patch_size=4),
    star_grids={"width": [16, 32, 48], "depth": [1, 2, 3],
                "mlp_dim": [64, 128, 192]},
    star_budgets=[250.0, 500.0, 1000.0],
    grid={"width": [16, 32, 48], "depth": [1, 2, 3], "mlp_dim": [128]},
    grid_budget=100.0, image_size=32, n_bootstrap=20, seed=3,
    max_consecutive_failed_trials=1,
)


def answer_branched(oracle, trial, loss, se=0.01):
    """A branched run: one cooled value per budget fraction, with SEs."""
    values = trial.hyperparameters.values
    shape = keras_sovit.ShapeSpec.from_dict(values)
    budget = values["compute_gflops"]
    fractions = [float(f) for f in values.get(
        "budget_fractions", "1").split(",")]
    metrics = {}
    for i, fraction in enumerate(fractions):
        value = loss(shape, budget * fraction, values.get("seed", 0))
        metrics.update({
            f"{METRIC}@{i}": value, f"{METRIC}_se@{i}": se,
            f"compute_gflops@{i}": budget * fraction, f"cooled@{i}": 1.0,
        })
    metrics.update({METRIC: value, f"{METRIC}_se": se,
                    "compute_gflops": budget,
                    "charged_gflops": budget * (1 + 0.2 * len(fractions)),
                    f"untrained_{METRIC}": 2.3})
    complete_trial(oracle, trial, metrics)


def run_branched(oracle, loss, se=0.01):
    trials = []
    while True:
        trial = oracle.create_trial("tuner0")
        if trial.status == TrialStatus.STOPPED:
            return trials
        answer_branched(oracle, trial, loss, se)
        trials.append(trial)


def tiny_loss(shape, compute, seed=0):
    law = keras_sovit.scaling.DataLimitedLaw(
        alpha={"width": 3.0, "depth": 0.6, "mlp_dim": 3.0},
        a={"width": 0.5, "depth": 0.7, "mlp_dim": 0.5},
        B=30.0, c=0.5, eps=0.2, image_size=32,
    )
    return law.loss(shape, compute) * (1 + 0.003 * ((seed % 3) - 1))


def test_one_branched_trial_per_star_shape_with_replicates(tmp_path):
    oracle = ShapeOracle(**dict(TINY, branch_budgets=True, replicates=2,
                                final_trials=()))
    oracle._set_project_dir(str(tmp_path), "p")
    trials = run_branched(oracle, tiny_loss)
    star = [t.hyperparameters.values for t in trials
            if t.hyperparameters.values["phase"] == "star"]
    shapes = {json.dumps({k: v[k] for k in ("width", "depth", "mlp_dim")})
              for v in star}
    assert len(shapes) == 3 * 3 + 1 and len(star) == 2 * len(shapes)
    assert {v["seed"] for v in star} == {0, 1}
    assert {v["budget_fractions"] for v in star} == {"0.25,0.5,1"}
    assert {v["compute_gflops"] for v in star} == {1000.0}
    grid = [t.hyperparameters.values for t in trials
            if t.hyperparameters.values["phase"] == "grid"]
    assert {v["budget_fractions"] for v in grid} == {"0.25,0.5,1"}
    # Every budget of every run is a row of the star fit.
    assert len(oracle.results("star")) == 3 * len(star)
    assert oracle.compute_spent == pytest.approx(sum(
        t.hyperparameters.values["compute_gflops"] * 1.6 for t in trials))
    assert oracle.state.signal_["passed"] is True
    assert oracle.proposal is not None


def test_signal_gate_stops_a_search_that_measures_noise(tmp_path):
    def flat(shape, compute, seed=0):  # Compute does not help.
        return 1.0 + 0.01 * ((hash((shape, seed)) % 7) - 3)

    oracle = ShapeOracle(**dict(TINY, branch_budgets=True, replicates=2,
                                final_trials=("proposal",)))
    oracle._set_project_dir(str(tmp_path), "p")
    trials = run_branched(oracle, flat, se=0.05)
    # Stopped right after the star sweep: no grid, no final trials.
    assert {t.hyperparameters.values["phase"] for t in trials} == {"star"}
    assert oracle.phase == "done" and oracle.proposal is None
    signal = report_of(oracle)["signal_"]
    assert signal["passed"] is False
    assert signal["checks"]["budget"] is False
    assert signal["checks"]["trained"] is True  # 1.0 < 2.3 untrained.
    assert "raise the star budgets" in oracle.state.stopped_


def test_final_roles_with_seeds_and_a_verdict(tmp_path):
    oracle = ShapeOracle(**dict(
        TINY, branch_budgets=True, final_seeds=3,
        final_trials=("proposal", "standard", "x0"),
    ))
    oracle._set_project_dir(str(tmp_path), "p")
    trials = run_branched(oracle, tiny_loss)
    final = [t.hyperparameters.values for t in trials
             if t.hyperparameters.values["phase"] == "final"]
    assert len(final) == 9 and {v["seed"] for v in final} == {0, 1, 2}
    entries = {e["role"]: e for e in oracle.state.final_}
    assert set(entries) == {"proposal", "standard", "x0"}
    for entry in entries.values():
        assert entry["seeds"] == [0, 1, 2]
        shape = keras_sovit.ShapeSpec.from_dict(entry["shape"])
        values = [tiny_loss(shape, 1e5, s) for s in range(3)]
        assert entry["objective_mean"] == pytest.approx(np.mean(values))
        assert entry["objective_se"] == pytest.approx(
            np.std(values, ddof=1) / np.sqrt(3))
    standard = keras_sovit.ShapeSpec.from_dict(entries["standard"]["shape"])
    assert standard.mlp_dim == 4 * standard.width
    verdict = oracle.state.verdict_
    assert verdict["verdict"] in ("better", "worse", "not distinguishable")
    assert verdict["standard"]["difference"] == pytest.approx(
        entries["proposal"]["objective_mean"]
        - entries["standard"]["objective_mean"])


def test_the_standard_baseline_does_not_depend_on_the_proposal():
    grid = ShapeGrid(Rounding(), {"width": 16, "depth": 1, "mlp_dim": 16},
                     BASE, (224, 224))
    standard = grid.standard(BASE, 9e9, 9e11)
    again = grid.standard(BASE, 9e9, 9e11)
    assert standard == again and standard.mlp_dim == 4 * standard.width
    # Half of the 100x compute growth goes into per-example compute.
    ratio = standard.gflops(224) / BASE.gflops(224)
    assert 10 / 1.3 < ratio < 10 * 1.3
    # Its aspect is the ViT family's: B/16 is 768 wide and 12 deep.
    from keras_sovit.tuner.proposals import standard_depth
    assert standard_depth(768) == pytest.approx(12)
    assert standard_depth(1024) == pytest.approx(24)


class _ShallowIsBest:
    """A truth whose best depth is below 1: loss grows with depth, and
    width and MLP have interior optima at 64 and 256."""

    def loss(self, shape, compute):
        return (1.0 + 0.05 * shape.depth
                + 0.1 * np.log(shape.width / 64) ** 2
                + 0.1 * np.log(shape.mlp_dim / 256) ** 2
                + 1e3 / compute)


def test_grid_optimum_at_depth_one_is_accepted(tmp_path):
    # Bug: the grid sweep raised "wants depth below 1" instead of taking
    # the lattice's floor as the optimum (found on the real-data table,
    # where one-block models win at small budgets).
    oracle = ShapeOracle(
        objective=keras_tuner.Objective(METRIC, "min"), target_compute=1e4,
        exponents=EXPONENTS,
        grid={"width": [48, 64, 80], "depth": [1, 2, 3],
              "mlp_dim": [192, 256, 320]},
        grid_budget=1e3, image_size=28, final_trials=(), seed=0,
        max_consecutive_failed_trials=1,
    )
    oracle._set_project_dir(str(tmp_path), "p")
    run(oracle, _ShallowIsBest())
    assert oracle.state.base_shape_["depth"] == 1
    assert (oracle.state.base_shape_["width"],
            oracle.state.base_shape_["mlp_dim"]) == (64, 256)
    assert oracle.state.grid_extensions_ == 0
    assert oracle.proposal is not None


def test_seed_zero_is_a_seed(tmp_path):
    # Bug: KerasTuner turns a falsy seed into a random one, so seed=0 (the
    # example's default) gave the fits' bootstrap a different seed per run.
    oracle = ShapeOracle(**{**GIVEN, "seed": 0})
    assert oracle.seed == 0
    oracle._set_project_dir(str(tmp_path), "p")
    assert oracle._context().seed == 0
    # And it survives a reload.
    again = ShapeOracle(**{**GIVEN, "seed": 0})
    again.set_state(oracle.get_state())
    assert again.seed == 0
