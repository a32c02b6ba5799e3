"""The default ShapeOracle (the IsoFLOP search) driven by hand on a truth
outside every proposal rule's menu (KerasTuner's own test pattern)."""

import json
import os

import numpy as np
import pytest
from keras_tuner.engine.trial import TrialStatus

import keras_sovit
from keras_sovit.scaling.truths import suite as truths
from keras_sovit.tuner import ISOFLOP_PHASES
from keras_sovit.tuner import PAPER_PHASES
from keras_sovit.tuner import ShapeOracle
from tests.tuner.driver import complete_trial
from tests.tuner.driver import drive

# The oracle's own logic: no backend computation to repeat on JAX/torch.
pytestmark = pytest.mark.backend_free

METRIC = "val_loss"
# The search-efficiency benchmark's setting (benchmarks/README.md): SoViT-
# 400m's budget, 224 px, patch 14, 16 heads.
TARGET = 8.8e12
TEMPLATE = keras_sovit.ShapeSpec(1152, 27, 4304, 16, patch_size=14)
# Off-menu: an error saturating at chance over a product capacity, no power
# law anywhere (`keras_sovit.scaling.truths.suite`).
LAW = truths.SATURATING_LAW
NOISE = 0.01


def make_oracle(**kwargs):
    config = dict(objective=METRIC, target_compute=TARGET, template=TEMPLATE,
                  image_size=224, seed=3, max_consecutive_failed_trials=1)
    config.update(kwargs)
    return ShapeOracle(**config)


def observe(trial):
    """The truth at the trial's compute, 1% noise seeded by the trial id
    (so a resumed search sees the same values)."""
    values = trial.hyperparameters.values
    shape = keras_sovit.ShapeSpec.from_dict(values)
    rng = np.random.default_rng(int(trial.trial_id))
    return LAW.loss(shape, values["compute_gflops"]) * (
        1 + NOISE * rng.standard_normal())


def end(oracle, trial, charged=None):
    metrics = {METRIC: observe(trial),
               "compute_gflops": trial.hyperparameters.values[
                   "compute_gflops"]}
    if charged is not None:
        metrics["charged_gflops"] = charged
    complete_trial(oracle, trial, metrics)


def run(oracle, stop_after=None, fail=()):
    """One worker to the end (or `stop_after` trials); the trials run."""
    def answer(trial):
        return {METRIC: observe(trial),
                "compute_gflops": trial.hyperparameters.values[
                    "compute_gflops"]}

    return drive(oracle, answer, stop_after, fail)


def signature(trial):
    return json.dumps(trial.hyperparameters.values, sort_keys=True)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    oracle = make_oracle(final_trials=("proposal", "x0"))
    oracle._set_project_dir(str(tmp_path_factory.mktemp("iso")), "p")
    return oracle, run(oracle)


def test_isoflop_is_the_default_and_paper_is_available_by_name():
    assert make_oracle().config.phases == ISOFLOP_PHASES
    paper = ShapeOracle(METRIC, target_compute=2e4, image_size=32,
                        phases="paper")
    assert paper.config.phases == PAPER_PHASES
    assert paper.config.isoflop is None and paper.config.star_budgets
    with pytest.raises(ValueError, match="phases"):
        make_oracle(phases="chinchilla")
    with pytest.raises(ValueError, match="star_budgets"):
        make_oracle(phases="isoflop", star_budgets=[1e9, 2e9])
    with pytest.raises(ValueError, match="replicates=2"):
        make_oracle(replicates=2)
    with pytest.raises(ValueError, match="validation_trials"):
        make_oracle(validation_trials=True)


def test_off_menu_regret_is_small(finished):
    oracle, trials = finished
    phases = [t.hyperparameters.values["phase"] for t in trials]
    assert phases[-2:] == ["final", "final"]
    assert set(phases[:-2]) == {"isoflop"}
    assert oracle.phase == "done" and oracle.method == "isoflop"
    # The benchmark's documented medians for this truth at 1% noise: 0.09%
    # (max 0.24% over 5 seeds); the goal is a median <= 1%.
    optimum = LAW.true_optimum(TARGET, TEMPLATE, mlp_multiple=16)
    assert truths.regret(LAW, oracle.proposal, TARGET, optimum) < 0.01
    final = trials[-2].hyperparameters.values
    assert keras_sovit.ShapeSpec.from_dict(final) == oracle.proposal
    assert final["compute_gflops"] == TARGET
    x0 = keras_sovit.ShapeSpec.from_dict(trials[-1].hyperparameters.values)
    assert x0 == oracle.base_shape_


def test_replicated_centres_are_distinct_trials(finished):
    _, trials = finished
    search = [t for t in trials
              if t.hyperparameters.values["phase"] == "isoflop"]
    assert len({signature(t) for t in trials}) == len(trials)
    seeds = [t.hyperparameters.values["seed"] for t in search]
    assert seeds == list(range(len(search)))  # the search's trial index
    # One budget per run (never a randomly sampled ladder).
    assert {t.hyperparameters.values["budget_fractions"]
            for t in search} == {"1"}
    # Without the seed, some trials (the designs' centre points) coincide.
    runs = {json.dumps({k: v for k, v in t.hyperparameters.values.items()
                        if k != "seed"}, sort_keys=True) for t in search}
    assert len(runs) < len(search)


def test_report_states_the_compute_in_units_of_t(finished):
    oracle, trials = finished
    compute = oracle.report()["compute"]
    spent = sum(t.hyperparameters.values["compute_gflops"] for t in trials)
    assert compute["total"] == pytest.approx(spent / TARGET)
    assert compute["total"] == pytest.approx(oracle.compute_spent / TARGET)
    assert compute["search"] == pytest.approx(compute["total"] - 2)
    # Sweeps <= 1.5 T by default, the final runs on top.
    assert 0 < compute["search"] <= 1.5
    with open(os.path.join(oracle._project_dir, "shape_report.json")) as f:
        saved = json.load(f)["compute"]
    assert saved["total"] == pytest.approx(compute["total"])
    assert saved["by_phase"] == pytest.approx(compute["by_phase"])


def test_charged_compute_is_what_the_report_counts(tmp_path):
    oracle = make_oracle()
    oracle._set_project_dir(str(tmp_path), "p")
    charged = []
    for _ in range(5):
        trial = oracle.create_trial("tuner0")
        charged.append(1.25 * trial.hyperparameters.values["compute_gflops"])
        end(oracle, trial, charged=charged[-1])
    assert oracle.report()["compute"]["total"] == pytest.approx(
        sum(charged) / TARGET)


def test_parallel_workers_get_distinct_trials_then_wait(tmp_path):
    oracle = make_oracle()
    oracle._set_project_dir(str(tmp_path), "p")
    running = []
    while True:
        trial = oracle.create_trial(f"worker{len(running)}")
        if trial.status != TrialStatus.RUNNING:
            break
        running.append(trial)
    # The first round (one central composite design) is handed out, each
    # trial once; the next round waits for its values.
    assert trial.status == TrialStatus.IDLE
    assert len(running) == 16
    assert len({signature(t) for t in running}) == 16
    for trial in running[:-1]:
        end(oracle, trial)
    assert oracle.create_trial("another").status == TrialStatus.IDLE
    end(oracle, running[-1])
    nxt = oracle.create_trial("another")
    assert nxt.status == TrialStatus.RUNNING
    assert nxt.hyperparameters.values["seed"] == 16


def test_resume_continues_the_same_search(tmp_path):
    reference = make_oracle()
    reference._set_project_dir(str(tmp_path / "ref"), "p")
    expected = [signature(t) for t in run(reference, stop_after=40)]

    oracle = make_oracle()
    oracle._set_project_dir(str(tmp_path / "run"), "p")
    first = run(oracle, stop_after=20)  # one round told, the next half run
    resumed = make_oracle()
    resumed._set_project_dir(str(tmp_path / "run"), "p")
    resumed.reload()
    second = run(resumed, stop_after=20)
    assert [signature(t) for t in first + second] == expected


def test_resume_with_a_changed_search_is_refused(tmp_path):
    oracle = make_oracle()
    oracle._set_project_dir(str(tmp_path), "p")
    run(oracle, stop_after=3)
    changed = make_oracle(isoflop={"max_search_compute": 1.0})
    changed._set_project_dir(str(tmp_path), "p")
    with pytest.raises(ValueError, match="isoflop.*overwrite=True"):
        changed.reload()
    moved = make_oracle(target_compute=TARGET * 2)
    moved._set_project_dir(str(tmp_path), "p")
    with pytest.raises(ValueError, match="target_compute"):
        moved.reload()


def test_failed_trials_are_left_out_and_the_search_ends(tmp_path):
    oracle = make_oracle(max_consecutive_failed_trials=3)
    oracle._set_project_dir(str(tmp_path), "p")
    trials = run(oracle, fail={"0003", "0020"})
    assert set(oracle.excluded_trials) == {"0003", "0020"}
    assert oracle.phase == "done"
    assert trials[-1].hyperparameters.values["phase"] == "final"
    optimum = LAW.true_optimum(TARGET, TEMPLATE, mlp_multiple=16)
    assert truths.regret(LAW, oracle.proposal, TARGET, optimum) < 0.01
