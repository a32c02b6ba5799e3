import json

import numpy as np
import pytest

from keras_sovit.scaling.paper.law import ShapeLaw
from keras_sovit.scaling.paper.plan import PAPER_STAR_CENTER
from keras_sovit.scaling.paper.plan import PAPER_STAR_GRIDS
from keras_sovit.scaling.paper.star_sweep import StarSweepFit
from keras_sovit.scaling.paper.star_sweep import fit_star_sweep
from keras_sovit.scaling.results import SweepResults
from keras_sovit.scaling.truths.laws import EQ2_STAR_TRUTH
from keras_sovit.scaling.truths.laws import PAPER_LIKE_LAW
from keras_sovit.scaling.truths.laws import eq2_loss
from keras_sovit.scaling.truths.laws import simulate
from keras_sovit.scaling.truths.laws import simulate_star

CENTER = PAPER_STAR_CENTER
DIMS = ("width", "depth", "mlp_dim")
TRUE_S = {d: p["c"] / (p["a"] + p["b"]) for d, p in EQ2_STAR_TRUTH.items()}
T_EVAL = 10 * 2e11  # 10x the largest budget


def _regret(dim, x_hat):
    p = EQ2_STAR_TRUTH[dim]
    x_true = (p["alpha"] * p["a"] * T_EVAL ** p["c"] / (p["beta"] * p["b"]))
    x_true = x_true ** (1 / (p["a"] + p["b"]))
    return eq2_loss(p, x_hat, T_EVAL) / eq2_loss(p, x_true, T_EVAL) - 1


def _xty(dim="depth", noise=0.0, seed=0):
    p = EQ2_STAR_TRUTH[dim]
    x = np.repeat(np.array(PAPER_STAR_GRIDS[dim], float), 3)
    t = np.tile([5e10, 1e11, 2e11], 6)
    y = eq2_loss(p, x, t)
    y = y * (1 + noise * np.random.default_rng(seed).standard_normal(18))
    return x, t, y


def test_shape_law_recovers_noise_free_parameters():
    x, t, y = _xty("depth")
    law = ShapeLaw().fit(x, t, y)
    truth = EQ2_STAR_TRUTH["depth"]
    assert law.converged_
    assert law.exponent == pytest.approx(TRUE_S["depth"], abs=1e-3)
    for key, value in truth.items():
        assert law.params[key] == pytest.approx(value, rel=1e-3)
    # Eq. (4) by an independent formula, and it minimises the law.
    x_star = (truth["alpha"] * truth["a"] * 1e12 ** truth["c"]
              / (truth["beta"] * truth["b"])) ** (1 / (truth["a"] + truth["b"]))
    assert law.optimal(1e12) == pytest.approx(x_star, rel=1e-3)
    assert law.predict(x_star, 1e12) < law.predict(1.1 * x_star, 1e12)
    assert law.predict(x_star, 1e12) < law.predict(0.9 * x_star, 1e12)
    np.testing.assert_allclose(law.predict(x, t), y, rtol=1e-6)
    report = law.report()
    assert report["n_points"] == 18 and report["rmse_relative"] < 1e-6


def test_shape_law_estimator_protocol():
    law = ShapeLaw(loss="huber", n_starts=2)
    assert law.get_params()["loss"] == "huber"
    assert law.set_params(n_starts=3) is law and law.n_starts == 3
    with pytest.raises(ValueError, match="bogus"):
        law.set_params(bogus=1)
    with pytest.raises(ValueError, match="not fitted"):
        law.predict(10.0, 1e10)
    x, t, y = _xty("width", noise=0.01)
    a = ShapeLaw(loss="huber").fit(x, t, y).params
    b = ShapeLaw(loss="huber").fit(x, t, y).fit(x, t, y).params
    assert a == pytest.approx(b, rel=1e-9)


def test_shape_law_fixed_c():
    x, t, y = _xty("mlp_dim")
    law = ShapeLaw(fixed_c=0.65).fit(x, t, y)
    assert law.c_ == 0.65
    assert law.exponent == pytest.approx(TRUE_S["mlp_dim"], abs=1e-3)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"y": -1.0}, "y"),
        ({"t": 0.0}, "t"),
        ({"x": float("nan")}, "NaN"),
    ],
)
def test_shape_law_rejects_bad_points(change, match):
    x, t, y = _xty()
    arrays = {"x": x.copy(), "t": t.copy(), "y": y.copy()}
    for key, value in change.items():
        arrays[key][0] = value
    with pytest.raises(ValueError, match=match):
        ShapeLaw().fit(**arrays)


def test_shape_law_rejects_too_few_points_and_bad_args():
    x, t, y = _xty()
    with pytest.raises(ValueError, match="Too few points"):
        ShapeLaw().fit(x[:6], t[:6], y[:6])
    with pytest.raises(ValueError, match="loss"):
        ShapeLaw(loss="l1").fit(x, t, y)
    with pytest.raises(ValueError, match="distinct"):
        ShapeLaw().fit(np.full(18, 10.0), t, y)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(huber_delta=True), "huber_delta"),
        (dict(huber_delta=float("inf")), "huber_delta"),
        (dict(huber_delta=0.0), "huber_delta"),
        (dict(fixed_c=True), "fixed_c"),
        (dict(fixed_c=float("nan")), "fixed_c"),
        (dict(fixed_c=-0.5), "fixed_c"),
        (dict(n_starts=0), "n_starts"),
        (dict(grid_size=2.5), "grid_size"),
    ],
)
def test_shape_law_rejects_bad_params_by_name(kwargs, name):
    x, t, y = _xty()
    with pytest.raises(ValueError, match=f"`{name}`"):
        ShapeLaw(**kwargs).fit(x, t, y)


def test_from_params_rejects_non_finite_values():
    params = dict(alpha=2.0, a=0.5, beta=0.01, b=1.0, xi=1.0, eps=0.1, c=0.65)
    law = ShapeLaw.from_params(params)
    assert law.params["c"] == 0.65
    with pytest.raises(ValueError, match="params\\['eps'\\]"):
        ShapeLaw.from_params({**params, "eps": float("inf")})


def test_non_convergence_warns_and_flags():
    x, t, y = _xty("width", noise=0.01)
    law = ShapeLaw(n_starts=1, grid_size=2)
    # One polish step cannot converge: the flag and a warning say so.
    import keras_sovit.scaling._varpro as vp

    original = vp.fit_groups

    def one_step(*args, **kwargs):
        kwargs["max_nfev"] = 1
        return original(*args, **kwargs)

    vp.fit_groups = one_step
    try:
        with pytest.warns(RuntimeWarning, match="did not converge"):
            law.fit(x, t, y)
    finally:
        vp.fit_groups = original
    assert law.converged_ is False
    assert law.report()["converged"] is False


def test_star_sweep_noise_free_is_exact_and_state_round_trips():
    results = simulate_star(noise=0.0)
    fit = fit_star_sweep(results, CENTER, n_bootstrap=0)
    for dim in DIMS:
        assert abs(fit.exponents[dim] - TRUE_S[dim]) <= 1e-3
    assert fit.c == pytest.approx(0.65, abs=1e-4)
    state = json.loads(json.dumps(fit.to_dict()))
    again = StarSweepFit.from_dict(state)
    for dim in DIMS:
        assert again.exponents[dim] == fit.exponents[dim]
        assert again.optimal(dim, 1e12) == pytest.approx(
            fit.optimal(dim, 1e12), rel=1e-12
        )
        assert again.predict(dim, 700.0, 1e11) == pytest.approx(
            fit.predict(dim, 700.0, 1e11), rel=1e-12
        )


def test_star_sweep_on_decomposable_truth_holds_out_the_centre():
    grids = PAPER_STAR_GRIDS
    budgets = (5e10, 1e11, 2e11)
    plan = [(CENTER.replace(**{d: v}), t) for d in grids for v in grids[d]
            for t in budgets]
    plan += [(CENTER, t) for t in budgets]
    results = simulate(PAPER_LIKE_LAW, plan, noise=0.0)
    fit = fit_star_sweep(results, CENTER, n_bootstrap=0, holdout="center")
    truth = PAPER_LIKE_LAW.star_params(CENTER)
    for dim in DIMS:
        assert fit.exponents[dim] == pytest.approx(truth[dim]["s"], abs=1e-3)
        assert len(fit.holdout_errors[dim]) == 3
        assert fit.holdout_error[dim] < 1e-6
    largest = fit_star_sweep(results, CENTER, n_bootstrap=0,
                             holdout="largest")
    # Each model's largest run: 6 grid values plus the centre.
    assert len(largest.holdout_errors["width"]) == 7


def test_star_sweep_noisy_small_sample():
    """3 seeds at 1% noise (the full 20-seed check is marked large)."""
    errors, regrets = [], []
    for seed in range(3):
        fit = fit_star_sweep(simulate_star(noise=0.01, seed=seed), CENTER,
                             n_bootstrap=0)
        for dim in DIMS:
            errors.append(abs(fit.exponents[dim] - TRUE_S[dim]))
            regrets.append(_regret(dim, fit.optimal(dim, T_EVAL)))
    assert np.median(errors) <= 0.05
    assert np.median(regrets) <= 0.01


def test_star_sweep_bootstrap_intervals_small_sample():
    fit = fit_star_sweep(simulate_star(noise=0.01, seed=1), CENTER,
                         n_bootstrap=30, random_state=0)
    covered = 0
    for dim in DIMS:
        lo, hi = fit.intervals[dim]
        assert lo < fit.exponents[dim] < hi or np.isclose(lo, hi)
        assert len(fit.bootstrap_exponents[dim]) >= 25
        covered += lo <= TRUE_S[dim] <= hi
    assert covered >= 2


def test_star_sweep_errors():
    results = simulate_star(noise=0.0)
    with pytest.raises(ValueError, match="not swept"):
        fit_star_sweep(results.filter(depth=40, mlp_dim=6144), CENTER,
                       n_bootstrap=0)
    few = SweepResults([r for r in results if r["compute_gflops"] == 1e11
                        or r["width"] != 1968])
    few = SweepResults([r for r in few if not (
        r["width"] == 1968 and r["depth"] == 40 and r["compute_gflops"] > 6e10
    )])
    with pytest.raises(ValueError, match="Too few runs|distinct compute"):
        fit_star_sweep(few, CENTER, n_bootstrap=0)
    with pytest.raises(ValueError, match="holdout"):
        fit_star_sweep(results, CENTER, holdout="first")
    with pytest.raises(ValueError, match="dims"):
        fit_star_sweep(results, CENTER, dims=("heads",))
    mixed = SweepResults(list(results))
    mixed.append(CENTER, 1e11, 0.3, metric_name="other")
    with pytest.raises(ValueError, match="metric_name"):
        fit_star_sweep(mixed, CENTER, n_bootstrap=0)


@pytest.mark.large
def test_star_sweep_accuracy_20_seeds():
    """The issue's full check: 20 seeds, 1% noise, bootstrap 90% CIs."""
    errors, regrets, covered = [], [], []
    for seed in range(20):
        fit = fit_star_sweep(simulate_star(noise=0.01, seed=seed), CENTER,
                             n_bootstrap=100, random_state=seed)
        for dim in DIMS:
            lo, hi = fit.intervals[dim]
            errors.append(abs(fit.exponents[dim] - TRUE_S[dim]))
            regrets.append(_regret(dim, fit.optimal(dim, T_EVAL)))
            covered.append(lo <= TRUE_S[dim] <= hi)
    assert np.median(errors) <= 0.05
    assert np.median(regrets) <= 0.01
    assert np.mean(covered) >= 0.8
