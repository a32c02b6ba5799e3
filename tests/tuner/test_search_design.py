"""The oracle's design: phases and rules from outside, config, one reader."""

import dataclasses
import json
import os

import keras_tuner
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
    trials = []
    while True:
        trial = oracle.create_trial("tuner0")
        if trial.status == TrialStatus.STOPPED:
            return trials
        assert trial.status == TrialStatus.RUNNING
        values = trial.hyperparameters.values
        shape = keras_sovit.ShapeSpec.from_dict(values)
        compute = values["compute_gflops"]
        oracle.update_trial(trial.trial_id, {
            METRIC: law.loss(shape, compute), "compute_gflops": compute,
        })
        trial.status = TrialStatus.COMPLETED
        oracle.end_trial(trial)
        trials.append(trial)


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
    for step, value in enumerate((0.9, 0.5, 0.7)):  # Not monotone.
        oracle.update_trial(first.trial_id, {METRIC: value}, step=step)
    first.status = TrialStatus.COMPLETED
    oracle.end_trial(first)
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
    oracle.update_trial(trial.trial_id, {
        METRIC: 0.9, "compute_gflops": budget / 2}, step=0)
    oracle.update_trial(trial.trial_id, {
        METRIC: 0.5, "compute_gflops": budget,
        f"{METRIC}@0": 0.6, f"{METRIC}_se@0": 0.01,
        "compute_gflops@0": budget / 4, "cooled@0": 1.0,
    }, step=1)
    trial.status = TrialStatus.COMPLETED
    oracle.end_trial(trial)
    rows = {r["compute_gflops"]: r for r in oracle.results()}
    assert sorted(rows) == [budget / 4, budget / 2, budget]
    assert rows[budget / 2]["cooled"] == "false"
    assert rows[budget / 4]["cooled"] == "true"
    assert rows[budget / 4]["metric_se"] == 0.01
    fitted = oracle._observe(finished=True)
    assert sorted(r["compute_gflops"] for r in fitted) == [budget / 4, budget]
