"""Noise: replicate summaries, comparisons, variance weights, bootstrap."""

import math

import numpy as np
import pytest
from scipy import stats

from keras_sovit.scaling.noise import clearly_lower
from keras_sovit.scaling.noise import compare
from keras_sovit.scaling.noise import local_optimality
from keras_sovit.scaling.noise import replicate_summaries
from keras_sovit.scaling.noise import summarize
from keras_sovit.scaling.paper import star_sweep as star_lib
from keras_sovit.scaling.truths.laws import EQ2_STAR_TRUTH
from keras_sovit.scaling.truths.laws import simulate_star
from keras_sovit.shapes import ShapeSpec


def test_summarize_uses_the_spread_of_replicates_or_the_reported_se():
    values = [0.80, 0.84, 0.78]
    out = summarize(values, [0.5, 0.5, 0.5])
    assert out["mean"] == pytest.approx(sum(values) / 3)
    sd = math.sqrt(sum((v - out["mean"]) ** 2 for v in values) / 2)
    assert out["se"] == pytest.approx(sd / math.sqrt(3))
    assert summarize([0.8], [0.03]) == {"mean": 0.8, "se": 0.03, "n": 1}
    assert summarize([0.8])["se"] is None
    with pytest.raises(ValueError, match="values"):
        summarize([])


def test_replicate_summaries_group_by_shape_and_compute():
    shape = ShapeSpec(32, 2, 64, 2, 4).to_dict()
    rows = [dict(shape, compute_gflops=10.0, metric_value=v, metric_se=None)
            for v in (1.0, 2.0)]
    rows.append(dict(shape, compute_gflops=20.0, metric_value=0.5,
                     metric_se=0.1))
    out = replicate_summaries(rows)
    assert out[(32, 2, 64, 2, 4, 10.0)]["mean"] == 1.5
    assert out[(32, 2, 64, 2, 4, 10.0)]["n"] == 2
    assert out[(32, 2, 64, 2, 4, 20.0)]["se"] == 0.1


def test_compare_is_welch_and_says_not_distinguishable_honestly():
    a, b = [0.80, 0.79, 0.81], [0.90, 0.92, 0.91]
    out = compare(a, b)
    assert out["verdict"] == "better"
    assert out["p_value"] == pytest.approx(
        stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert compare(b, a)["verdict"] == "worse"
    assert compare([0.80, 0.90, 0.70], [0.82, 0.72, 0.92])["verdict"] == (
        "not distinguishable")
    # One seed gives no variance estimate: never a verdict.
    assert compare([0.1], [0.9])["verdict"] == "not distinguishable"


def test_clearly_lower_needs_two_standard_errors():
    low = {"mean": 1.0, "se": 0.03}
    assert clearly_lower(low, {"mean": 1.1, "se": 0.03}) is True
    assert clearly_lower(low, {"mean": 1.05, "se": 0.03}) is False
    assert clearly_lower(low, {"mean": 2.0, "se": None}) is None


def test_variance_weights_discount_points_known_to_be_noisy():
    """Three corrupted points with large SEs barely move the fit."""
    results = simulate_star(noise=0.0)
    rows = [dict(r, metric_se=1e-3 * r["metric_value"]) for r in results]
    for i in (0, 7, 13):  # Width runs, 30% off.
        rows[i] = dict(rows[i], metric_value=1.3 * rows[i]["metric_value"],
                       metric_se=0.5 * rows[i]["metric_value"])
    center = ShapeSpec(1968, 40, 6144, 16, 14)
    truth = EQ2_STAR_TRUTH["width"]
    s_true = truth["c"] / (truth["a"] + truth["b"])
    weighted = star_lib.fit_star_sweep(rows, center, dims=("width",),
                                      n_bootstrap=0, robust=False)
    plain = star_lib.fit_star_sweep(
        [dict(r, metric_se=None) for r in rows], center, dims=("width",),
        n_bootstrap=0, robust=False,
    )
    assert abs(weighted.exponents["width"] - s_true) < 0.01
    assert abs(plain.exponents["width"] - s_true) > 0.01


def test_bootstrap_resamples_whole_trials():
    x = np.array([1.0, 1.0, 2.0, 2.0, 3.0])
    trials = np.array(["a", "a", "b", "b", "c"], dtype=object)
    data = (x, x, x, np.ones(5, dtype=bool), np.ones(5), trials)
    rng = np.random.default_rng(0)
    for _ in range(20):
        index = star_lib._resample_trials(data, rng)
        drawn = trials[index]
        for name in ("a", "b"):
            # A trial comes with both of its runs or not at all.
            assert list(drawn).count(name) % 2 == 0
        assert len(set(drawn)) <= 3


def _welch_less(a, b):
    """One-sided Welch p-value of mean(a) < mean(b), written out."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    return float(stats.t.cdf(t, df))


def test_local_optimality_p_values_are_one_sided_welch():
    proposal = [1.00, 1.10, 0.90]
    neighbours = {"a": [0.80, 0.95, 0.85], "b": [1.2, 1.3, 1.0, 1.1]}
    result = local_optimality(proposal, neighbours, alpha=0.1)
    for name, values in neighbours.items():
        assert result["p_values"][name] == pytest.approx(
            _welch_less(values, proposal), rel=1e-9)
    assert result["alpha"] == 0.1


def test_local_optimality_corrects_for_the_number_of_neighbours():
    proposal = [1.00, 1.10, 0.90]
    close = [0.87, 0.97, 0.77]  # one-sided p between 0.1 / 4 and 0.1
    p = _welch_less(close, proposal)
    assert 0.025 < p < 0.1
    alone = local_optimality(proposal, {"close": close}, alpha=0.1)
    assert alone["locally_optimal"] is False
    assert alone["better"] == ["close"]
    worse = [2.0, 2.1, 1.9]
    four = local_optimality(
        proposal, {"close": close, "w1": worse, "w2": worse, "w3": worse},
        alpha=0.1)
    assert four["locally_optimal"] is True
    assert four["better"] == []


def test_local_optimality_false_alarm_rate_is_at_most_alpha():
    rng = np.random.default_rng(0)
    trials, alpha = 2000, 0.1
    alarms = detections = 0
    for _ in range(trials):
        proposal = rng.normal(size=3)
        same = {f"n{i}": rng.normal(size=3) for i in range(6)}
        alarms += local_optimality(proposal, same, alpha)[
            "locally_optimal"] is False
        far = dict(same, n0=rng.normal(size=3) - 10.0)
        detections += local_optimality(proposal, far, alpha)["better"] == [
            "n0"]
    # Under the null the rate is at most alpha (Bonferroni); 3 binomial
    # standard errors of slack for the 2000 draws.
    assert alarms / trials <= alpha + 3 * math.sqrt(alpha * 0.9 / trials)
    # A neighbour 10 sigma better is found (and only it) nearly always.
    assert detections / trials > 0.95


def test_local_optimality_needs_two_replicates_per_side():
    single = local_optimality([1.0], {"a": [0.5, 0.6]})
    assert single["locally_optimal"] is None
    assert single["p_values"] == {"a": None}
    partial = local_optimality([1.0, 1.1], {"a": [2.0, 2.1], "b": [0.5]})
    assert partial["locally_optimal"] is None
    with pytest.raises(ValueError, match="alpha"):
        local_optimality([1.0, 1.1], {"a": [2.0, 2.1]}, alpha=0.0)
