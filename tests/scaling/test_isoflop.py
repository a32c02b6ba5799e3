import inspect
import re

import numpy as np
import pytest

from keras_sovit.scaling.isoflop import path
from keras_sovit.scaling.isoflop import search as isoflop
from keras_sovit.scaling.isoflop import surfaces
from keras_sovit.scaling.isoflop.path import fit_path
from keras_sovit.scaling.isoflop.search import IsoFlopSearch
from keras_sovit.scaling.isoflop.search import IsoFlopSettings
from keras_sovit.scaling.isoflop.search import Trainability
from keras_sovit.scaling.isoflop.surfaces import ccd_design
from keras_sovit.scaling.isoflop.surfaces import fit_surface
from keras_sovit.scaling.isoflop.surfaces import minimise_quadratic
from keras_sovit.scaling.isoflop.surfaces import whitened_spread
from keras_sovit.scaling.truths.suite import SATURATING_LAW
from keras_sovit.scaling.truths.suite import Observer
from keras_sovit.scaling.truths.suite import regret
from keras_sovit.shapes import ShapeSpec

TEMPLATE = ShapeSpec(608, 10, 928, 16, 14)
H = np.array([[0.8, 0.3, -0.1], [0.3, 0.5, 0.2], [-0.1, 0.2, 0.4]])
U_STAR = np.log([700.0, 12.0, 1500.0])


def _bowl(u, hessian=H, optimum=U_STAR, level=-1.5):
    du = np.atleast_2d(u) - optimum
    return level + 0.5 * np.einsum("ni,ij,nj->n", du, hessian, du)


def test_surface_recovers_a_rotated_quadratic():
    centre = U_STAR + np.array([0.3, -0.2, 0.25])
    spread = whitened_spread(H, 0.05, 1.0)
    u = ccd_design(centre, spread)
    surface = fit_surface(u, _bowl(u), centre, np.linalg.inv(spread.T))
    np.testing.assert_allclose(surface.hessian, H, atol=1e-9)
    newton = centre - np.linalg.solve(surface.hessian, surface.gradient)
    np.testing.assert_allclose(newton, U_STAR, atol=1e-9)
    assert surface(U_STAR) == pytest.approx(-1.5, abs=1e-9)
    assert surface.sigma < 1e-9


def test_borrowed_curvature_recovers_scale_and_optimum():
    centre = U_STAR + 0.1
    spread = whitened_spread(H, 0.05, 1.0)
    u = ccd_design(centre, spread, corners_only=True)
    assert len(u) == 10
    y = _bowl(u, hessian=0.6 * H)
    surface = fit_surface(u, y, centre, np.linalg.inv(spread.T), hessian=H)
    np.testing.assert_allclose(surface.hessian, 0.6 * H, atol=1e-9)
    newton = centre - np.linalg.solve(surface.hessian, surface.gradient)
    np.testing.assert_allclose(newton, U_STAR, atol=1e-9)


def test_curvature_prior_turns_a_noisy_saddle_back_into_a_bowl():
    rng = np.random.default_rng(0)
    centre = U_STAR
    spread = whitened_spread(H, 0.05, 1.0)
    basis = np.linalg.inv(spread.T)
    u = ccd_design(centre, spread)
    prior = (spread.T @ H @ spread, (0.03 / 0.025) ** 2)
    saddles = {"free": 0, "prior": 0}
    for _ in range(40):
        y = _bowl(u) + 0.03 * rng.standard_normal(len(u))
        for name, p in (("free", None), ("prior", prior)):
            s = fit_surface(u, y, centre, basis, prior=p)
            saddles[name] += np.linalg.eigvalsh(s.hessian).min() <= 0
    assert saddles["prior"] < saddles["free"]


def test_whitened_design_corners_rise_as_asked():
    spread = whitened_spread(H, 0.04, 10.0)
    u = ccd_design(np.zeros(3), spread)
    rise = 0.5 * np.einsum("ni,ij,nj->n", u, H, u)
    np.testing.assert_allclose(rise[:8], 0.04)
    capped = whitened_spread(H * 1e-6, 0.04, 0.5)
    assert np.all(np.linalg.norm(capped, axis=0) <= 0.5 + 1e-12)


def test_minimise_quadratic_inside_on_the_box_and_under_a_constraint():
    g, c = np.array([-1.0, 0.5, 0.0]), np.zeros(3)

    def q(u):
        u = np.atleast_2d(u)
        return u @ g + 0.5 * np.einsum("ni,ij,nj->n", u, H, u)

    wide = np.full(3, 5.0)
    inside = minimise_quadratic(g, H, c, -wide, wide)
    np.testing.assert_allclose(inside, -np.linalg.solve(H, g), atol=1e-9)
    rng = np.random.default_rng(0)
    lo, hi = -np.ones(3), np.ones(3)
    boxed = minimise_quadratic(g, H, c, lo, hi)
    sample = rng.uniform(lo, hi, (20000, 3))
    assert np.all((boxed >= lo - 1e-9) & (boxed <= hi + 1e-9))
    assert q(boxed)[0] <= q(sample).min() + 1e-9
    # A linear constraint u_0 <= 0.2 binds: the optimum lies on it.
    cut = minimise_quadratic(g, H, c, -wide, wide, lambda u: 0.2 - u[0])
    assert cut[0] == pytest.approx(0.2, abs=1e-6)
    sample = rng.uniform(-wide, wide, (20000, 3))
    sample = sample[sample[:, 0] <= 0.2]
    assert q(cut)[0] <= q(sample).min() + 1e-9


def test_path_fit_recovers_known_exponents_and_resists_an_outlier():
    v = np.log([1 / 4096, 1 / 1024, 1 / 256, 1 / 64])
    s = np.array([0.07, 0.15, 0.2])
    a = np.log([1150.0, 27.0, 4300.0])
    optima = a + np.outer(v, s)
    covs = np.tile(np.eye(3) * 0.01, (4, 1, 1))
    got_a, got_s, cov = fit_path(v, optima, covs)
    np.testing.assert_allclose(got_a, a, atol=1e-12)
    np.testing.assert_allclose(got_s, s, atol=1e-12)
    assert cov.shape == (6, 6)
    bad = optima.copy()
    bad[2] += np.array([0.0, 0.8, 0.0])  # one level far off in depth
    robust, _, _ = fit_path(v, bad, covs)
    plain, _, _ = fit_path(v, bad, covs, robust=False)
    assert abs(robust[1] - a[1]) < 0.5 * abs(plain[1] - a[1])
    one_a, one_s, _ = fit_path(v[:1], optima[:1], covs[:1])
    np.testing.assert_allclose(one_a, optima[0])
    assert np.all(one_s == 0)


def test_trainability_margin_and_shrink_in():
    rule = Trainability(14, 224, 2.0, isoflop._BOUNDS)
    shape = ShapeSpec(1152, 27, 4304, 16, 14)
    t = 1e11
    examples = t / shape.gflops(224)
    expected = np.log(examples / (2.0 * shape.num_params(224)))
    u = np.log([1152, 27, 4304])
    assert rule.margin(u, t) == pytest.approx(expected)
    assert rule.margin(u, t) < 0  # 1e11 GFLOPs is too little for it
    inside = rule.shrink_in(u, t)[0]
    assert rule.margin(inside, t) == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(np.diff(u - inside), 0.0, atol=1e-12)


def _tiny_search(**kwargs):
    args = dict(n_bootstrap=10, max_search_compute=0.5, seed=0)
    args.update(kwargs)
    return IsoFlopSearch(8.8e11, TEMPLATE, **args)


def test_pending_trials_are_never_handed_out_twice():
    search = _tiny_search()
    first = search.ask(3)
    second = search.ask(3)
    ids = [t.trial_id for t in first + second]
    assert len(ids) == len(set(ids)) == 6
    rest = search.ask()
    assert len(rest) == 10  # the rest of the first design (16 in all)
    assert search.ask() == []  # nothing to do until values come back
    assert len(search.pending) == 16
    observe = Observer(SATURATING_LAW, noise=0.01, seed=0)
    for trial in first + second:
        search.tell(trial.trial_id, observe(trial.shape, trial.compute))
    assert search.ask() == []  # still waiting for ten of them
    for trial in rest:
        search.tell(trial.trial_id, observe(trial.shape, trial.compute))
    assert search.ask()  # the next round
    with pytest.raises(ValueError, match="trial_id"):
        search.tell(10_000, 0.5)
    with pytest.raises(ValueError, match="value"):
        search.tell(0, -1.0)


def test_every_trial_is_trainable_and_the_budget_holds():
    search = _tiny_search(min_examples_per_param=5.0)
    observe = Observer(SATURATING_LAW, noise=0.01, seed=1)
    while not search.done:
        for trial in search.ask():
            search.tell(trial.trial_id, observe(trial.shape, trial.compute))
    for trial in search.trials.values():
        shape = trial.shape
        examples = trial.compute / shape.gflops(224)
        assert examples >= 5.0 * shape.num_params(224)
        assert shape.width % 16 == 0 and shape.mlp_dim % 16 == 0
    result = search.result()
    assert result["compute"]["isoflop"] <= 0.5 + 1e-9
    assert result["compute"]["final"] == pytest.approx(1.0)
    assert result["total_compute"] == pytest.approx(observe.spent / 8.8e11)
    assert search.trials[max(search.trials)].phase == "final"


def test_verification_false_accept_rate_is_near_its_stated_level():
    """A prediction whose true gap is twice the tolerance must be verified
    in at most about α of the replications (α = 0.1, 40 replications: at
    most 9, a binomial 0.99 bound)."""
    rng = np.random.default_rng(3)
    search = _tiny_search(n_bootstrap=40, tolerance=0.005, error_rate=0.1)
    direction = np.linalg.solve(H, np.ones(3))
    direction /= np.sqrt(direction @ H @ direction)
    predicted = U_STAR + direction * np.sqrt(2 * 0.01)  # gap 1%
    centre = predicted
    spread = whitened_spread(H, 0.06, 1.0)
    accepted = 0
    for _ in range(40):
        u = ccd_design(centre, spread)
        shapes = [TEMPLATE.replace(width=int(16 * round(np.exp(x[0]) / 16)),
                                   depth=int(round(np.exp(x[1]))),
                                   mlp_dim=int(16 * round(np.exp(x[2]) / 16)))
                  for x in u]
        ids = []
        for shape, x in zip(shapes, u):
            trial = search.new_trial(shape, 1e11, "isoflop")
            ux = search.log_shape(shape)
            trial.value = float(np.exp(_bowl(ux)[0] + 0.01 *
                                       rng.standard_normal()))
            ids.append(trial.trial_id)
        fit = search.fit_level([(centre, spread, ids, None)])
        fit.predicted = predicted
        search.levels = [fit]
        accepted += search.verify()["verified"]
    assert accepted <= 9


def test_short_search_on_an_off_menu_truth_has_small_regret():
    """Bound fixed before this seed was run: 1% (the issue's goal at 1%
    noise). Budget of the error (IsoFlopSearch at 1% noise): a level's
    location error costs about 9σ²/(4 n rise) ≈ 0.03% in whitened units,
    the path's extrapolation multiplies the variance by about 2.6 (GLS
    over T/4096..T/64), path curvature and lattice rounding add up to about
    0.3%: ≈ 0.4%, well inside 1%."""
    target = 8.8e12
    search = IsoFlopSearch(target, TEMPLATE, n_bootstrap=30, seed=7)
    observe = Observer(SATURATING_LAW, noise=0.01, seed=4242)
    while not search.done:
        for trial in search.ask():
            search.tell(trial.trial_id, observe(trial.shape, trial.compute))
    result = search.result()
    assert result["total_compute"] <= 2.5 + 1e-9
    assert regret(SATURATING_LAW, result["proposal"], target) < 0.01


def test_from_observations_is_a_proposal_rule_on_any_design():
    """Noise-free grids at two computes of a known bowl whose optimum moves
    as a power law: the rule recovers the path's exponents."""
    import itertools

    s = np.array([0.1, 0.15, 0.2])
    target = 1e13

    def optimum(t):
        return np.log([1200.0, 28.0, 4300.0]) + s * np.log(t / target)

    rows = []
    for t in (1e10, 1e11):
        grid = np.exp(optimum(t))[None] * np.exp(
            0.3 * np.array(list(itertools.product((-1, 0, 1), repeat=3)))
        )
        for w, d, m in grid:
            shape = TEMPLATE.replace(width=int(16 * round(w / 16)),
                                     depth=int(round(d)),
                                     mlp_dim=int(16 * round(m / 16)))
            u = np.log([shape.width, shape.depth, shape.mlp_dim])
            rows.append((shape, t, float(np.exp(_bowl(u, optimum=optimum(
                t))[0]))))
    search = IsoFlopSearch.from_observations(
        rows, target, TEMPLATE, n_bootstrap=10, slope_prior_sd=0
    )
    got = np.array(list(search.report["exponents"].values()))
    np.testing.assert_allclose(got, s, atol=0.02)
    assert len(search.levels) == 2 and search.done
    with pytest.raises(ValueError, match="rows"):
        IsoFlopSearch.from_observations(rows[:5], target, TEMPLATE)


def test_bad_arguments():
    with pytest.raises(ValueError, match="target_compute"):
        IsoFlopSearch(-1.0, TEMPLATE)
    with pytest.raises(ValueError, match="template"):
        IsoFlopSearch(1e12, (608, 10, 928))
    with pytest.raises(ValueError, match="fractions"):
        IsoFlopSearch(1e12, TEMPLATE, fractions=(0.5, 0.1))
    with pytest.raises(ValueError, match="prior"):
        IsoFlopSearch(1e12, TEMPLATE, prior=(1, 2))
    with pytest.raises(ValueError, match="error_rate"):
        IsoFlopSearch(1e12, TEMPLATE, error_rate=0.7)
    with pytest.raises(ValueError, match="max_rounds"):
        IsoFlopSettings(max_rounds=(2, 0))
    with pytest.raises(ValueError, match="bounds"):
        IsoFlopSettings(bounds={"heads": (1, 2)})
    with pytest.raises(ValueError, match="nonsense"):
        IsoFlopSettings.create(nonsense=1)
    with pytest.raises(ValueError, match="points"):
        fit_surface(np.zeros((5, 3)), np.zeros(5), np.zeros(3), np.eye(3))


def test_docstring_examples_run():
    import keras_sovit

    objects = [
        surfaces.fit_surface, surfaces.minimise_quadratic, path.fit_path,
        isoflop.IsoFlopSearch, IsoFlopSettings,
    ]
    for obj in objects:
        blocks = re.findall(r"```python\n(.*?)```", inspect.getdoc(obj), re.S)
        assert blocks, obj
        for block in blocks:
            exec(block, {"keras_sovit": keras_sovit})
