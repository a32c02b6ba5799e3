import math

import numpy as np
import pytest

from keras_sovit.scaling.paper.plan import PAPER_STAR_CENTER
from keras_sovit.scaling.paper.plan import PAPER_STAR_GRIDS
from keras_sovit.scaling.paper.plan import star_sweep_plan
from keras_sovit.scaling.paper.star_sweep import fit_star_sweep
from keras_sovit.scaling.plots import plot_scaling
from keras_sovit.scaling.plots import plot_star_sweep
from keras_sovit.scaling.truths.laws import PAPER_LIKE_LAW
from keras_sovit.scaling.truths.laws import simulate
from keras_sovit.shapes import ShapeSpec

EXAMPLES = (64e6, 128e6, 256e6)
X0 = ShapeSpec(608, 10, 928, 16, 14)


@pytest.fixture(scope="module")
def sweep():
    plan = star_sweep_plan(
        PAPER_STAR_CENTER, PAPER_STAR_GRIDS, EXAMPLES, budget_unit="examples"
    )
    results = simulate(PAPER_LIKE_LAW, plan, noise=0.01, seed=0)
    fit = fit_star_sweep(results, PAPER_STAR_CENTER, n_bootstrap=12)
    return fit, results


def _check_png(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 20_000


def test_plot_star_sweep(sweep, tmp_path):
    fit, results = sweep
    path = tmp_path / "star.png"
    fig = plot_star_sweep(fit, results, path)
    _check_png(path)
    assert [ax.get_xscale() for ax in fig.axes] == ["log"] * 3
    for ax, dim in zip(fig.axes, ("width", "depth", "mlp_dim")):
        assert f"s = {fit.exponents[dim]:.3f}" in ax.get_title()
        curves = [ln for ln in ax.lines if len(ln.get_xdata()) > 1]
        diamonds = [ln for ln in ax.lines if ln.get_marker() == "D"]
        assert len(curves) == len(EXAMPLES)
        # Observed runs and the held-out centre, per budget.
        assert len(ax.collections) == 2 * len(EXAMPLES)
        offsets = np.concatenate(
            [c.get_offsets() for c in ax.collections[::2]]
        )
        assert sorted(set(offsets[:, 0])) == list(PAPER_STAR_GRIDS[dim])
        # Each diamond is optimal (Eq. 4) for the compute spent there:
        # t = examples x GFLOPs of the centre with that value of `dim`.
        for marker in diamonds:
            x = float(marker.get_xdata()[0])
            gflops = PAPER_STAR_CENTER.replace(
                num_heads=1, **{dim: round(x)}
            ).gflops(224)
            ts = [e * gflops for e in EXAMPLES]
            assert min(
                abs(math.log(fit.laws[dim].optimal(t) / x)) for t in ts
            ) < 0.02


def test_plot_scaling(sweep, tmp_path):
    fit, _ = sweep
    t0 = 1e10
    computes = [t0 * 10**k for k in (0, 1, 2, 3)]
    path = tmp_path / "scaling.png"
    fig = plot_scaling(fit, X0, t0, computes, path)
    _check_png(path)
    assert len(fig.axes) == 3
    for ax, dim in zip(fig.axes, ("width", "depth", "mlp_dim")):
        assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
        line, dots = ax.lines
        s = fit.exponents[dim]
        x0 = getattr(X0, dim)
        np.testing.assert_allclose(
            line.get_ydata(), x0 * (line.get_xdata() / t0) ** (s / 3)
        )
        assert dots.get_ydata()[-1] == pytest.approx(
            x0 * 1000 ** (s / 3), rel=0.06
        )
        (band,) = ax.collections
        lo, hi = fit.intervals[dim]
        ys = band.get_paths()[0].vertices[:, 1]
        assert ys.max() == pytest.approx(x0 * 1000 ** (hi / 3), rel=1e-6)
        assert ys.min() == pytest.approx(x0, rel=1e-6)


def test_plots_reject_bad_input(sweep, tmp_path):
    fit, results = sweep
    with pytest.raises(ValueError, match="fit"):
        plot_star_sweep(None, results, tmp_path / "a.png")
    with pytest.raises(ValueError, match="computes"):
        plot_scaling(fit, X0, 1e10, [1e10], tmp_path / "b.png")
    with pytest.raises(ValueError, match="path"):
        plot_scaling(fit, X0, 1e10, [1e10, 1e11], None)


class _PowerPath:
    """A law whose optimal x is t**s, or given values (`path`)."""

    def __init__(self, s, path=None):
        self.s, self.path = s, path

    def optimal(self, ts):
        if self.path is not None:
            return np.asarray(self.path, dtype=float)
        return np.asarray(ts, dtype=float) ** self.s

    def predict(self, x, t):
        return x + t


def test_optimum_on_curve_of_an_underflowing_path_warns_nothing():
    import warnings

    from keras_sovit.scaling.plots import _optimum_on_curve

    xs, ts = np.array([1.0, 2.0, 4.0]), np.array([0.5, 2.0, 4.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # From (x, t) = (1, 0.5) to (2, 2), log-linear: log t = 2 log x -
        # log 2, and x = t**2 where log x = 4 log x - 2 log 2: x = 2**(2/3).
        x, _ = _optimum_on_curve(_PowerPath(2.0), xs, ts)
        assert x == pytest.approx(2 ** (2 / 3))
        # A steep fitted path that underflowed to 0 at the smallest budget
        # (as the demo's exponents of 4-7 give): its crossing is skipped.
        underflow = _PowerPath(None, path=[0.0, 8.0, 16.0])
        assert _optimum_on_curve(underflow, xs, ts) is None
