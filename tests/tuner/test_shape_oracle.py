"""ShapeOracle driven by hand (KerasTuner's own test pattern) on known laws."""

import json
import math
import os

import keras_tuner
import numpy as np
import pytest
from keras_tuner.engine.trial import TrialStatus

import keras_sovit
from keras_sovit.scaling import PAPER_LIKE_LAW
from keras_sovit.scaling import DataLimitedLaw
from keras_sovit.tuner import ShapeOracle
from keras_sovit.tuner import checkpoint_metric_name
from tests.tuner.driver import complete_trial
from tests.tuner.driver import drive

# The oracle's own logic: no backend computation to repeat on JAX/torch.
pytestmark = pytest.mark.backend_free

METRIC = "fewshot_10shot_error"
OBJECTIVE = keras_tuner.Objective(METRIC, "min")
CENTER = keras_sovit.ShapeSpec(1968, 40, 6144, 16, patch_size=14)
STAR_GRIDS = {
    "width": [608, 768, 928, 1088, 1328, 1648],
    "depth": [8, 10, 12, 16, 20, 24],
    "mlp_dim": [1088, 1360, 1728, 2160, 2592, 3072],
}
STAR_BUDGETS = [5e10, 1e11, 2e11]
# PAPER_LIKE_LAW's optimum at 9e9 GFLOPs is about (592, 5, 432).
GRID = {"width": [464, 592, 736], "depth": [4, 5, 6],
        "mlp_dim": [352, 432, 528]}
GRID_BUDGET = 9e9
TARGET = 9e11


# The search the tests run unless they say otherwise.
SEARCH = dict(
    objective=OBJECTIVE,
    target_compute=TARGET,
    star_center=CENTER,
    star_grids=STAR_GRIDS,
    star_budgets=STAR_BUDGETS,
    grid=GRID,
    grid_budget=GRID_BUDGET,
)


def make_oracle(**kwargs):
    config = dict(
        SEARCH, n_bootstrap=4, seed=7, max_consecutive_failed_trials=100
    )
    config.update(kwargs)
    return ShapeOracle(**config)


def observe(law, trial, noise=0.01):
    """The law's answer at the trial's compute and, cooled, at half of it.

    As a branched run reports it: the half-budget value is a checkpoint
    measured at the end of its own cooldown (`cooled@0`), so it is a
    finished run of that budget.
    """
    values = trial.hyperparameters.values
    shape = keras_sovit.ShapeSpec.from_dict(values)
    compute = values["compute_gflops"]
    rng = np.random.default_rng(int(trial.trial_id))
    half, full = (law.loss(shape, t) * (1 + noise * rng.standard_normal())
                  for t in (compute / 2, compute))
    return [(0, {
        METRIC: full, "compute_gflops": compute,
        checkpoint_metric_name(METRIC, 0): half,
        checkpoint_metric_name("compute_gflops", 0): compute / 2,
        checkpoint_metric_name("cooled", 0): 1.0,
    })]


def run(oracle, law, stop_after=None, fail=(), nan=(), leave_running=False,
        noise=0.01):
    """Drives the oracle; returns the trials in the order they were run."""
    def answer(trial):
        reports = observe(law, trial, noise)
        if trial.trial_id in nan:
            for _, metrics in reports:
                metrics[METRIC] = float("nan")
        return reports

    return drive(oracle, answer, stop_after, fail, leave_running)


def tid(index):
    """KerasTuner's trial id with `max_trials=None`."""
    return f"{index:04d}"


def regret(law, shape, compute):
    best = law.true_optimum(compute, shape)
    return law.loss(shape, compute) / law.loss(best, compute) - 1.0


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One uninterrupted search, shared by the tests that only read it."""
    oracle = make_oracle(final_trials=("proposal", "control"))
    oracle._set_project_dir(str(tmp_path_factory.mktemp("full")), "p")
    trials = run(oracle, PAPER_LIKE_LAW)
    return oracle, trials


def test_phases_run_in_order_and_stop(finished):
    oracle, trials = finished
    phases = [t.hyperparameters.values["phase"] for t in trials]
    n_star = (sum(len(v) for v in STAR_GRIDS.values()) + 1) * 3
    assert phases[:n_star] == ["star"] * n_star
    assert set(phases[n_star:-2]) == {"grid"}
    assert len(phases) - n_star - 2 >= 27
    assert phases[-2:] == ["final", "final"]
    assert oracle.phase == "done"
    assert oracle.create_trial("tuner0").status == TrialStatus.STOPPED


def test_values_are_plain_python_on_the_declared_grid(finished):
    oracle, trials = finished
    space = {hp.name: hp for hp in oracle.hyperparameters.space}
    for trial in trials:
        for name, value in trial.hyperparameters.values.items():
            hp = space[name]
            if name in ("phase", "budget_fractions"):
                assert type(value) is str and value in hp.values
            elif name == "compute_gflops":
                assert type(value) is float
                assert hp.min_value <= value <= hp.max_value * (1 + 1e-12)
            elif name == "budget_fractions":
                assert type(value) is str and value in hp.values
            elif name == "patch_size":
                assert type(value) is int and value in hp.values
            else:
                assert type(value) is int, (name, type(value))
                assert hp.min_value <= value <= hp.max_value
                assert (value - hp.min_value) % (hp.step or 1) == 0
    json.dumps([t.hyperparameters.values for t in trials])


def test_compute_spent_sums_the_trial_budgets(finished):
    oracle, trials = finished
    star = sum(len(v) + 0 for v in STAR_GRIDS.values()) + 1
    expected = star * sum(STAR_BUDGETS) + 2 * TARGET
    expected += sum(t.hyperparameters.values["compute_gflops"]
                    for t in trials
                    if t.hyperparameters.values["phase"] == "grid")
    assert oracle.compute_spent == pytest.approx(expected)


def test_no_shape_and_budget_is_run_twice(finished):
    _, trials = finished
    keys = [json.dumps(t.hyperparameters.values, sort_keys=True)
            for t in trials]
    assert len(keys) == len(set(keys))


def test_proposal_is_near_the_true_optimum(finished):
    oracle, _ = finished
    proposal = oracle.proposal
    assert isinstance(proposal, keras_sovit.ShapeSpec)
    assert regret(PAPER_LIKE_LAW, proposal, TARGET) < 0.01
    # The final trial trains exactly that shape at the target compute.
    final = [t for t in oracle.trials.values()
             if t.hyperparameters.values["phase"] == "final"]
    values = final[0].hyperparameters.values
    assert keras_sovit.ShapeSpec.from_dict(values) == proposal
    assert values["compute_gflops"] == TARGET


def test_fit_recovers_the_star_exponents(finished):
    oracle, _ = finished
    # PAPER_LIKE_LAW's star exponents are 0.22, 0.45, 0.6.
    expected = {"width": 0.22, "depth": 0.45, "mlp_dim": 0.6}
    for dim, value in expected.items():
        assert abs(oracle.star_fit_.exponents[dim] - value) < 0.15, dim
    assert oracle.exponents_ == pytest.approx(oracle.star_fit_.exponents)


def test_control_is_a_standard_vit_of_equal_compute(finished):
    oracle, _ = finished
    control = oracle.control
    assert control.mlp_dim == 4 * control.width
    assert control.depth == oracle.proposal.depth
    ratio = control.gflops(224) / oracle.proposal.gflops(224)
    assert 0.8 < ratio < 1.25


def test_grid_base_shape_is_the_best_grid_point(finished):
    oracle, trials = finished
    rows = [(t.metrics.get_history(METRIC)[-1].mean(),
             keras_sovit.ShapeSpec.from_dict(t.hyperparameters.values))
            for t in trials if t.hyperparameters.values["phase"] == "grid"]
    assert oracle.base_shape_ == min(rows, key=lambda r: r[0])[1]


def test_report_files_are_written(finished):
    oracle, _ = finished
    directory = oracle._project_dir
    with open(os.path.join(directory, "shape_report.json")) as f:
        report = json.load(f)
    assert report["proposal"] == oracle.proposal.to_dict()
    assert report["method"] in ("paper", "joint")
    results = keras_sovit.scaling.SweepResults.from_csv(
        os.path.join(directory, "sweep_results.csv")
    )
    # Two checkpoints per completed trial, final trials included.
    assert len(results) == 2 * len(oracle.trials)
    for name in ("star_sweep.png", "scaling.png"):
        assert os.path.getsize(os.path.join(directory, name)) > 1000


@pytest.mark.tf_only  # KerasTuner itself uses tf.io.gfile only on TF.
def test_report_files_are_written_to_a_non_local_filesystem():
    """The project may be on gs:// (TPUs); TF's ram:// stands in for it."""
    import tensorflow as tf

    oracle = make_oracle(star_grids={
        "width": [608, 928, 1328], "depth": [8, 12, 20],
        "mlp_dim": [1088, 1728, 2592],
    })
    oracle._set_project_dir("ram://shape_oracle_test", "p")
    run(oracle, PAPER_LIKE_LAW)
    project = "ram://shape_oracle_test/p/"
    with tf.io.gfile.GFile(project + "shape_report.json") as f:
        report = json.load(f)
    assert report["phase"] == "done"
    assert report["proposal"] == oracle.proposal.to_dict()
    with tf.io.gfile.GFile(project + "sweep_results.csv") as f:
        lines = f.read().splitlines()
    # A header and two checkpoints per completed trial.
    assert len(lines) == 1 + 2 * len(oracle.trials)
    for name in ("star_sweep.png", "scaling.png"):
        with tf.io.gfile.GFile(project + name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_resume_mid_star_and_mid_grid_gives_the_same_proposal(
    finished, tmp_path
):
    reference, reference_trials = finished
    oracle = make_oracle(final_trials=("proposal", "control"))
    oracle._set_project_dir(str(tmp_path), "p")
    first = run(oracle, PAPER_LIKE_LAW, stop_after=20, leave_running=True)
    interrupted = first[-1].trial_id

    # Crash: a new oracle reloads the project; the running trial is retried.
    oracle = make_oracle(final_trials=("proposal", "control"))
    oracle._set_project_dir(str(tmp_path), "p")
    oracle.reload()
    retried = oracle.create_trial("tuner0")
    assert retried.trial_id == interrupted
    complete_trial(oracle, retried, observe(PAPER_LIKE_LAW, retried))
    second = run(oracle, PAPER_LIKE_LAW, stop_after=60, leave_running=True)
    assert second[-1].hyperparameters.values["phase"] == "grid"

    oracle = make_oracle(final_trials=("proposal", "control"))
    oracle._set_project_dir(str(tmp_path), "p")
    oracle.reload()
    assert oracle.phase == "grid"
    assert oracle.star_fit_.exponents == pytest.approx(
        reference.star_fit_.exponents
    )
    run(oracle, PAPER_LIKE_LAW)

    assert oracle.proposal == reference.proposal
    assert oracle.control == reference.control
    ids = sorted(oracle.trials)
    assert len(ids) == len(reference_trials)
    statuses = {t.status for t in oracle.trials.values()}
    assert statuses == {TrialStatus.COMPLETED}
    keys = {json.dumps(t.hyperparameters.values, sort_keys=True)
            for t in oracle.trials.values()}
    assert len(keys) == len(ids)


def test_resume_with_a_changed_plan_raises(tmp_path):
    oracle = make_oracle()
    oracle._set_project_dir(str(tmp_path), "p")
    run(oracle, PAPER_LIKE_LAW, stop_after=3)
    changed = make_oracle(star_budgets=[1e10, 2e10, 4e10])
    changed._set_project_dir(str(tmp_path), "p")
    with pytest.raises(ValueError, match="star_budgets.*overwrite=True"):
        changed.reload()
    # Harmless arguments follow the constructor.
    same = make_oracle(max_consecutive_failed_trials=5)
    same._set_project_dir(str(tmp_path), "p")
    same.reload()
    assert same.max_consecutive_failed_trials == 5
    assert len(same.trials) == 3


def test_failed_and_nan_trials_are_excluded(tmp_path):
    oracle = make_oracle()
    oracle._set_project_dir(str(tmp_path), "p")
    # Trials 0-2 are width=608 at the three budgets; 4 is width=768.
    bad = {tid(1), tid(4), tid(7)}
    run(oracle, PAPER_LIKE_LAW, fail={tid(1), tid(4)}, nan={tid(7)})
    assert oracle.phase == "done"
    assert set(oracle.excluded_trials) == bad
    star = oracle.results("star")
    used = {r["trial_id"] for r in star}
    assert used.isdisjoint(bad)
    assert len(used) == 57 - 3
    assert all(math.isfinite(r["metric_value"]) for r in star)
    assert regret(PAPER_LIKE_LAW, oracle.proposal, TARGET) < 0.02


def test_too_few_points_stops_with_a_clear_error(tmp_path):
    oracle = make_oracle()
    oracle._set_project_dir(str(tmp_path), "p")
    # Depth sweep: trials 18-35 (after 6 widths x 3 budgets).
    depth_trials = {tid(i) for i in range(18, 32)}
    with pytest.raises(RuntimeError, match="depth"):
        run(oracle, PAPER_LIKE_LAW, fail=depth_trials)


def test_idle_while_a_phase_waits_for_running_trials(tmp_path):
    oracle = make_oracle(exponents={"width": 0.22, "depth": 0.45,
                                    "mlp_dim": 0.6})
    oracle._set_project_dir(str(tmp_path), "p")
    grid = run(oracle, PAPER_LIKE_LAW, stop_after=26)
    running = oracle.create_trial("tuner0")
    assert running.status == TrialStatus.RUNNING
    # The grid plan is exhausted but one trial is still running.
    waiting = oracle.create_trial("tuner1")
    assert waiting.status == TrialStatus.IDLE
    # The same tuner asking again gets its own ongoing trial back.
    assert oracle.create_trial("tuner0").trial_id == running.trial_id
    for step, metrics in observe(PAPER_LIKE_LAW, running):
        oracle.update_trial(running.trial_id, metrics, step=step)
    running.status = TrialStatus.COMPLETED
    oracle.end_trial(running)
    final = oracle.create_trial("tuner1")
    assert len(grid) == 26
    assert final.status == TrialStatus.RUNNING
    assert final.hyperparameters.values["phase"] == "final"


def test_given_exponents_and_base_skip_both_sweeps(tmp_path):
    exponents = {"width": 0.22, "depth": 0.45, "mlp_dim": 0.6}
    base = keras_sovit.ShapeSpec(608, 10, 928, 16, patch_size=14)
    oracle = make_oracle(
        exponents=exponents, base_shape=base, base_compute=9e9,
        proposal_method="paper",
    )
    oracle._set_project_dir(str(tmp_path), "p")
    trials = run(oracle, PAPER_LIKE_LAW)
    assert [t.hyperparameters.values["phase"] for t in trials] == ["final"]
    # x_k = x0_k * tau^(s_k / 3), rounded to multiples of 16 (depth to 1).
    tau = TARGET / 9e9
    width = 16 * round(608 * tau ** (0.22 / 3) / 16)
    depth = round(10 * tau ** (0.45 / 3))
    mlp = 16 * round(928 * tau ** (0.6 / 3) / 16)
    assert oracle.proposal == keras_sovit.ShapeSpec(
        width, depth, mlp, 16, patch_size=14
    )


def test_paper_rule_caps_exponents_above_one(tmp_path, caplog):
    base = keras_sovit.ShapeSpec(608, 10, 928, 16, patch_size=14)
    oracle = make_oracle(
        exponents={"width": 0.22, "depth": 3.0, "mlp_dim": 0.6},
        base_shape=base, base_compute=9e9, proposal_method="paper",
    )
    oracle._set_project_dir(str(tmp_path), "p")
    run(oracle, PAPER_LIKE_LAW)
    tau = TARGET / 9e9
    # Depth grows by tau^(1/3) (s capped at 1), not tau^(3/3) = 100x.
    assert oracle.proposal.depth == round(10 * tau ** (1.0 / 3))
    assert oracle.proposal.width == 16 * round(608 * tau ** (0.22 / 3) / 16)
    assert "s_depth = 3 is outside [0, 1]" in caplog.text


def _validation_search(tmp_path, exponents, noise=0.005):
    oracle = make_oracle(exponents=exponents, validation_trials=True,
                         validation_compute=9e10, final_trials=())
    oracle._set_project_dir(str(tmp_path), "p")
    trials = run(oracle, PAPER_LIKE_LAW, noise=noise)
    validation = [t for t in trials
                  if t.hyperparameters.values["phase"] == "validation"]
    center = keras_sovit.ShapeSpec.from_dict(
        oracle.state.proposals_["validation"])
    true = {}
    for trial in validation:
        shape = keras_sovit.ShapeSpec.from_dict(trial.hyperparameters.values)
        true[shape] = PAPER_LIKE_LAW.loss(shape, 9e10)
    # Relative true gap of each neighbour below the proposal (> 0: better).
    gaps = {json.dumps(s.to_dict(), sort_keys=True): 1 - v / true[center]
            for s, v in true.items() if s != center}
    return oracle, validation, center, gaps


def test_validation_trials_are_replicated_neighbours(tmp_path):
    exponents = {"width": 0.22, "depth": 0.45, "mlp_dim": 0.6}
    oracle, validation, center, _ = _validation_search(tmp_path, exponents)
    shapes = {}
    for trial in validation:
        values = trial.hyperparameters.values
        assert values["compute_gflops"] == 9e10
        shape = keras_sovit.ShapeSpec.from_dict(values)
        shapes.setdefault(shape, []).append(values["seed"])
    assert len(shapes) == 7
    assert all(sorted(seeds) == [0, 1, 2] for seeds in shapes.values())
    for shape in shapes:
        changed = [d for d in ("width", "depth", "mlp_dim")
                   if getattr(shape, d) != getattr(center, d)]
        assert len(changed) <= 1 and (changed or shape == center)
        if changed:
            ratio = getattr(shape, changed[0]) / getattr(center, changed[0])
            assert 0.7 < ratio < 1.4
    report = oracle.validation
    assert len(report["proposal_values"]) == 3
    assert all(len(v) == 3 for v in report["neighbour_replicates"].values())
    assert report["proposal_value"] == pytest.approx(
        np.mean(report["proposal_values"]))


def test_validation_flags_only_truly_better_neighbours(tmp_path):
    # Exponents far from the truth's: the proposal is off its optimum, so
    # some neighbours are truly better by more than 1%, over 5 standard
    # errors of a 3-seed difference at 0.2% noise.
    wrong = {"width": 0.6, "depth": 0.05, "mlp_dim": 0.2}
    oracle, _, _, gaps = _validation_search(tmp_path, wrong, noise=0.002)
    report = oracle.validation
    clearly = {k for k, gap in gaps.items() if gap > 0.01}
    assert clearly  # the premise: the proposal is clearly beatable
    assert clearly <= set(report["better"])
    assert all(gaps[k] > 0 for k in report["better"])
    assert report["locally_optimal"] is False


def test_checkpoint_metrics_become_extra_rows(tmp_path):
    oracle = make_oracle(exponents={"width": 0.2, "depth": 0.4,
                                    "mlp_dim": 0.6})
    oracle._set_project_dir(str(tmp_path), "p")
    trial = oracle.create_trial("tuner0")
    metrics = {METRIC: 0.5, "compute_gflops": GRID_BUDGET}
    for i, (t, v) in enumerate(((GRID_BUDGET / 4, 0.9),
                                (GRID_BUDGET / 2, 0.7))):
        metrics[checkpoint_metric_name(METRIC, i)] = v
        metrics[checkpoint_metric_name("compute_gflops", i)] = t
    complete_trial(oracle, trial, metrics)
    rows = sorted((r["compute_gflops"], r["metric_value"])
                  for r in oracle.results("grid"))
    assert rows == [(GRID_BUDGET / 4, 0.9), (GRID_BUDGET / 2, 0.7),
                    (GRID_BUDGET, 0.5)]
    # The score is the value at the full budget.
    assert oracle.get_trial(trial.trial_id).score == 0.5


def test_data_limited_truth_is_found(tmp_path):
    law = DataLimitedLaw(
        alpha={"width": 30.0, "depth": 2.0, "mlp_dim": 30.0},
        a={"width": 0.7, "depth": 0.9, "mlp_dim": 0.6},
        B=400.0, c=0.35, eps=0.1, image_size=224,
    )
    opt = law.true_optimum(GRID_BUDGET, CENTER)
    assert opt.width < 1968  # The test grids must bracket the optimum.
    oracle = make_oracle(
        grid={d: [max(1, round(getattr(opt, d) * f / s) * s)
                  for f in (0.8, 1.0, 1.25)]
              for d, s in (("width", 16), ("depth", 1), ("mlp_dim", 16))},
        proposal_method="auto",
    )
    oracle._set_project_dir(str(tmp_path), "p")
    run(oracle, law)
    assert oracle.method == "joint"
    assert regret(law, oracle.proposal, TARGET) < 0.01


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"star_grids": {"width": [608, 928, 2048]}}, "star_grids"),
        ({"target_compute": 5e10}, "target_compute"),
        ({"objective": keras_tuner.Objective("acc", "max")}, "objective"),
        ({"objective": None}, "objective"),
        ({"objective": [OBJECTIVE, OBJECTIVE]}, "objective"),
        ({"proposal_method": "best"}, "proposal_method"),
        ({"final_trials": ("proposal", "baseline")}, "final_trials"),
        ({"star_budgets": [1e10]}, "star_budgets"),
        ({"grid_budget": -1.0}, "grid_budget"),
        ({"base_shape": CENTER}, "base_compute"),
        ({"star_grids": {"heads": [1, 2, 3]}}, "star_grids"),
        ({"exponents": {"width": 0.2}, "proposal_method": "joint"},
         "proposal_method"),
    ],
)
def test_bad_configurations_raise_before_training(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_oracle(**kwargs)


def test_hypermodel_missing_a_hyperparameter_is_refused(tmp_path):
    def build(hp):  # Forgets mlp_dim.
        for name in ("width", "depth", "num_heads", "patch_size"):
            hp.Int(name, 1, 4096)
        hp.Float("compute_gflops", 1.0, 1e13)
        hp.Choice("phase", ["star", "grid", "validation", "final"])
        return None

    with pytest.raises(ValueError, match="mlp_dim"):
        keras_tuner.Tuner(
            oracle=make_oracle(), hypermodel=build,
            directory=str(tmp_path), project_name="p",
        )


def declare_all(hp):
    for name in ("width", "depth", "mlp_dim", "num_heads", "patch_size"):
        hp.Int(name, 1, 4096)
    hp.Float("compute_gflops", 1.0, 1e13)
    hp.Choice("phase", ["star", "grid", "validation", "final"])


def test_shape_search_builds_its_oracle(tmp_path):
    tuner = keras_sovit.tuner.ShapeSearch(
        hypermodel=declare_all,
        directory=str(tmp_path),
        project_name="p",
        **SEARCH,
    )
    assert isinstance(tuner.oracle, ShapeOracle)
    assert tuner.oracle.config.target_compute == TARGET
    # The oracle's own declarations (on its grid) win over the hypermodel's.
    width = tuner.oracle.get_space().get_config()["space"][0]["config"]
    assert width["name"] == "width" and width["step"] == 16
    trial = tuner.oracle.create_trial("tuner0")
    assert trial.hyperparameters.values["width"] == 608


def test_shape_search_refuses_a_hypermodel_with_other_images(tmp_path):
    def hypermodel(side):
        return keras_sovit.tuner.SoViTHyperModel(
            num_classes=10, image_shape=(side, side, 3)
        )

    with pytest.raises(ValueError, match="image_size=\\(224, 224\\)"):
        keras_sovit.tuner.ShapeSearch(
            hypermodel=hypermodel(112),
            directory=str(tmp_path),
            project_name="p",
            **SEARCH,
        )
    tuner = keras_sovit.tuner.ShapeSearch(
        hypermodel=hypermodel(112),
        directory=str(tmp_path),
        project_name="q",
        **dict(SEARCH, image_size=112),
    )
    assert tuner.oracle.config.image_size == (112, 112)


class Crash(BaseException):
    """Not an `Exception`: KerasTuner lets it through, like a kill."""


class SimulatedHyperModel(keras_tuner.HyperModel):
    """Answers each trial from the law, as `observe`, through a Tuner."""

    def __init__(self, crash_at=None):
        super().__init__()
        self.crash_at = crash_at
        self.fits = 0

    def declare_hyperparameters(self, hp):
        declare_all(hp)

    def build(self, hp):
        import keras

        return keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])

    def fit(self, hp, model, *args, **kwargs):
        self.fits += 1
        if self.fits == self.crash_at:
            raise Crash()
        trial = type("T", (), {})()
        trial.hyperparameters = hp
        trial.trial_id = self.trial_id(hp)
        ((_, metrics),) = observe(PAPER_LIKE_LAW, trial)
        return metrics

    def trial_id(self, hp):
        return self.ids[json.dumps(hp.values, sort_keys=True)]


def test_tuner_crash_and_resume_matches_the_uninterrupted_search(tmp_path):
    exponents = {"width": 0.22, "depth": 0.45, "mlp_dim": 0.6}
    reference = make_oracle(exponents=exponents)
    reference._set_project_dir(str(tmp_path), "reference")
    run(reference, PAPER_LIKE_LAW)

    def make_tuner(hypermodel, overwrite):
        tuner = keras_tuner.Tuner(
            oracle=make_oracle(exponents=exponents),
            hypermodel=hypermodel,
            directory=str(tmp_path),
            project_name="p",
            overwrite=overwrite,
        )
        tuner.oracle.verbose = 0
        return tuner

    def search(tuner, hypermodel):
        # The hypermodel learns trial ids from the oracle (chief only).
        class Ids(dict):
            def __missing__(self, key):
                for trial in tuner.oracle.ongoing_trials.values():
                    if json.dumps(trial.hyperparameters.values,
                                  sort_keys=True) == key:
                        return trial.trial_id
                raise KeyError(key)

        hypermodel.ids = Ids()
        tuner.search(verbose=0)

    hypermodel = SimulatedHyperModel(crash_at=15)  # In the grid sweep.
    tuner = make_tuner(hypermodel, overwrite=True)
    with pytest.raises(Crash):
        search(tuner, hypermodel)
    assert len(tuner.oracle.trials) == 15

    hypermodel = SimulatedHyperModel()
    tuner = make_tuner(hypermodel, overwrite=False)
    assert tuner.oracle.phase == "grid"
    search(tuner, hypermodel)
    oracle = tuner.oracle
    assert oracle.phase == "done"
    assert oracle.proposal == reference.proposal
    assert len(oracle.trials) == len(reference.trials)
    # The interrupted trial ran again; the 14 completed ones did not.
    assert hypermodel.fits == len(oracle.trials) - 14
    assert all(t.status == "COMPLETED" for t in oracle.trials.values())


def test_docstring_proposal_methods_are_the_registered_rules():
    import re

    from keras_sovit.tuner import ShapeOracle
    from keras_sovit.tuner import proposals

    doc = ShapeOracle.__doc__
    section = doc[doc.index("proposal_method:"):doc.index("validation_trials:")]
    offered = set(re.findall(r'`"(\w+)"`', section))
    # Every rule offered exists (other tests register rules of their own).
    assert offered and offered <= set(proposals.rule_names())
