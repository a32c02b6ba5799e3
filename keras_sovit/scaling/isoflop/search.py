"""A model-agnostic compute-optimal shape search: IsoFLOP trust regions.

Pure numpy/scipy. The search assumes only that, at a fixed compute, the
metric is smooth in log-shape with one basin, and that the optimum moves
smoothly with compute; it never assumes a functional form for the loss.
See `IsoFlopSearch` for the phases and their contracts.
"""

import dataclasses
import itertools
import numbers

import numpy as np

from keras_sovit._json import jsonable
from keras_sovit._validation import check_bounds
from keras_sovit._validation import check_positive_int
from keras_sovit._validation import check_positive_number
from keras_sovit._validation import check_range_pair
from keras_sovit._validation import image_hw
from keras_sovit.scaling.isoflop.path import fit_path
from keras_sovit.scaling.isoflop.surfaces import ccd_design
from keras_sovit.scaling.isoflop.surfaces import fit_surface
from keras_sovit.scaling.isoflop.surfaces import minimise_quadratic
from keras_sovit.scaling.isoflop.surfaces import positive_definite
from keras_sovit.scaling.isoflop.surfaces import whitened_spread
from keras_sovit.scaling.paper.plan import PAPER_PRIOR
from keras_sovit.shapes import SCALED_DIMS as DIMS
from keras_sovit.shapes import Rounding
from keras_sovit.shapes import ShapeSpec
from keras_sovit.shapes import forward_gflops
from keras_sovit.shapes import param_count

# Fewest distinct shapes a full quadratic in three log-sizes needs.
_N_COEF = 10


# ---------------------------------------------------------------------------
# Trainable shapes.


class Trainability:
    """Which shapes a compute budget can train, in log-shape coordinates.

    A shape is trainable at compute t when it lies in the box `bounds` and
    sees at least `min_examples_per_param` examples per weight:
    t / GFLOPs(x) ≥ floor · N(x). `margin` is the log of that ratio over the
    floor (≥ 0 when trainable).

    FLOPs and weights are `keras_sovit.shapes.forward_gflops` and
    `param_count` (the backbone, "map" pooling, learned position
    embeddings), vectorised over log-shapes.

    Args:
        patch_size: int.
        image_size: int or (height, width). Leftover pixels are dropped.
        min_examples_per_param: float.
        bounds: dict `{dim: (low, high)}` of shape values.
    """

    def __init__(self, patch_size, image_size, min_examples_per_param,
                 bounds):
        height, width = image_hw(image_size)
        self.patch_size = int(patch_size)
        self.num_patches = (height // self.patch_size) * (
            width // self.patch_size)
        self.floor = float(min_examples_per_param)
        self.lo = np.log([bounds[d][0] for d in DIMS])
        self.hi = np.log([bounds[d][1] for d in DIMS])

    def margin(self, u, t):
        """log(examples / (floor · params)); vectorised over rows of u."""
        x = np.exp(np.asarray(u, dtype=float))
        w, d, m = x[..., 0], x[..., 1], x[..., 2]
        if self.floor <= 0:
            return np.full(np.shape(w), np.inf)
        examples = t / forward_gflops(w, d, m, self.num_patches,
                                      self.patch_size)
        params = param_count(w, d, m, self.num_patches, self.patch_size)
        return np.log(examples / (self.floor * params))

    def clip(self, u):
        """Clips log-shapes to the box."""
        return np.clip(u, self.lo, self.hi)

    def shrink_in(self, u, t):
        """Shrinks each row of `u` uniformly in log (all dimensions by the
        same factor) until it is trainable at t: an untrainable design
        point lands on the trainability boundary."""
        u = self.clip(np.atleast_2d(np.asarray(u, dtype=float)))
        out = u.copy()
        for i, row in enumerate(u):
            if self.margin(row, t) >= 0:
                continue
            lo, hi = 0.0, 10.0  # log factor
            for _ in range(40):
                mid = 0.5 * (lo + hi)
                lo, hi = (lo, mid) if self.margin(row - mid, t) >= 0 else (
                    mid, hi)
            out[i] = self.clip(row - hi)
        return out


# ---------------------------------------------------------------------------
# The search: phases with a plan / done / finish contract, driven by
# ask / tell.

# The paper's published procedure (§3, App. B.3, Fig. 5) is only a prior
# here (`PAPER_PRIOR`), used to centre the first isoFLOP design.


class Trial:
    """One training run the search asks for: `shape` trained with
    `compute` GFLOPs (examples = compute / shape.gflops)."""

    def __init__(self, trial_id, shape, compute, phase, level=None):
        self.trial_id = trial_id
        self.shape = shape
        self.compute = float(compute)
        self.phase = phase
        self.level = level
        self.value = None
        self.failed = False

    def __repr__(self):
        return (f"Trial({self.trial_id}, {self.shape.width}/"
                f"{self.shape.depth}/{self.shape.mlp_dim}, "
                f"{self.compute:.3g}, {self.phase!r})")


class LevelFit:
    """What one isoFLOP level found: its surface, optimum and spread."""

    def __init__(self, compute, surface, optimum, boot, box, predicted):
        self.compute = compute
        self.surface = surface
        self.optimum = optimum
        self.boot = boot  # (B, 3) bootstrap optima, by trial
        self.box = box  # (lo, hi) trust region of the last round
        self.predicted = predicted  # the centre its first round used
        spread = np.cov(boot.T) if len(boot) > 2 else np.eye(3)
        self.cov = spread + np.eye(3) * _COV_FLOOR**2
        if not self.bracketed:  # an optimum on its trust region's edge
            self.cov = self.cov * _UNBRACKETED
        self.surfaces = []  # bootstrap surfaces (for paired decisions)
        metric = positive_definite(surface.hessian)
        du = boot - optimum
        self.expected_regret = float(
            0.5 * np.mean(np.einsum("bi,ij,bj->b", du, metric, du))
        ) if len(boot) else np.inf

    @property
    def bracketed(self):
        lo, hi = self.box
        edge = np.minimum(self.optimum - lo, hi - self.optimum)
        return bool(np.all(edge > 1e-3 * (hi - lo)))


_COV_FLOOR = 0.02  # log units; no level is trusted beyond ±2%
_UNBRACKETED = 4.0  # variance inflation of a level whose optimum is unsure


class IsoFlopLevel:
    """Phase: isoFLOP rounds at one compute, T · `fraction`.

    Contract:
        plan(search) -> trials: a central composite design (corners, axial
            points, a replicated centre) in log-shape, centred at the path's
            prediction for this compute (the prior for the first level) and
            whitened by the curvature found so far, so that its corners sit
            about `rise` above the centre; after a round whose optimum is on
            its trust region's edge (or, on the first level, after its first
            round) another round centred at that optimum, up to
            `max_rounds`. With `borrowed=True` the design is the 8 corners
            plus the centre and the fit borrows the curvature's shape from
            the level below (5 coefficients instead of 10).
        done(search) -> bool: the last round is told and its optimum is
            bracketed (and `min_rounds` ran), or no round is left.
        finish(search): appends a `LevelFit` (surface over the rounds'
            trials inside the last trust region, optimum there, bootstrap by
            trial).
    """

    name = "isoflop"

    def __init__(self, fraction, max_rounds, min_rounds=1, borrowed=False):
        self.fraction = fraction
        self.max_rounds = max_rounds
        self.min_rounds = min_rounds
        self.borrowed = borrowed
        self.rounds = []  # (centre, spread, trial ids)
        self._fit = None

    def fit(self, search):
        if self._fit is None and self.rounds:
            self._fit = search.fit_level(self.rounds, self.borrowed)
        return self._fit

    def _more(self, search, fit):
        if len(self.rounds) >= self.max_rounds:
            return False
        if not fit.bracketed or len(self.rounds) < self.min_rounds:
            return True
        return fit.expected_regret > search.level_regret

    def plan(self, search):
        t = search.target_compute * self.fraction
        if not self.rounds:
            centre = search.predict(t)
            spread, curvature = search.spread()
        else:
            fit = self.fit(search)
            if not self._more(search, fit):
                return []
            centre = fit.optimum
            spread, curvature = search.spread(fit)
        trials = search.design(centre, spread, t, self.borrowed)
        if not trials:
            return []
        ids = [tr.trial_id for tr in trials]
        self.rounds.append((centre, spread, ids, curvature))
        self._fit = None
        return trials

    def done(self, search):
        return bool(self.rounds) and not self._more(search, self.fit(search))

    def finish(self, search):
        if self.rounds:
            search.levels.append(self.fit(search))


class Propose:
    """Phase: the path fit, the proposal at T, and the verification.

    Contract:
        plan(search) -> []: no trials of its own.
        done(search) -> True.
        finish(search): fits u*(t) = a + s log t through the levels (GLS,
            weighted by each level's bootstrap covariance), proposes the
            trainable lattice shape at T nearest the extrapolation in the
            top level's curvature, bootstraps the proposal (refitting every
            level with per-trial weights), and runs the paired decision of
            `IsoFlopSearch.verify` on the top level. If the proposal is not
            verified or its expected regret exceeds `target_regret`, and an
            extra level fits the budget, inserts that level and another
            `Propose` before the final run.
    """

    name = "propose"

    def plan(self, search):
        return []

    def done(self, search):
        return True

    def finish(self, search):
        search.propose()
        decision = search.report["decision"]
        ok = decision["verified"] and (
            search.report["expected_regret"] <= search.target_regret
        )
        extra = search.next_extra_level()
        if not ok and extra is not None:
            index = search.phase_index
            search.phases[index + 1:index + 1] = [extra, Propose()]


class Final:
    """Phase: the proposal trained at T.

    Contract:
        plan(search) -> [the proposal at T] once.
        done(search) -> its value is told.
        finish(search): records the final value in the report.
    """

    name = "final"

    def __init__(self):
        self.trial_id = None

    def plan(self, search):
        if self.trial_id is not None:
            return []
        trial = search.new_trial(search.proposal, search.target_compute,
                                 self.name)
        self.trial_id = trial.trial_id
        return [trial]

    def done(self, search):
        return self.trial_id is not None and (
            search.trials[self.trial_id].value is not None
        )

    def finish(self, search):
        search.report["final_value"] = search.trials[self.trial_id].value


# The box every shape stays in unless told otherwise: wide enough for any
# ViT, from the lattice's smallest step up.
_BOUNDS = {"width": (16, 16384), "depth": (1, 256), "mlp_dim": (16, 65536)}


@dataclasses.dataclass(frozen=True)
class IsoFlopSettings:
    """The settings of an `IsoFlopSearch` (all but target and template).

    Frozen and JSON-safe (`to_dict`), so a `ShapeOracle` can save them and
    compare them on resume. Every field is validated on construction; a
    `ValueError` names the field.

    Attributes:
        fractions: tuple of floats. Compute of the base levels as fractions
            of T, increasing. Defaults to `(1/4096, 1/1024, 1/256, 1/64)`.
        extra_fractions: tuple of floats. Levels bought when the proposal
            is not verified. Defaults to `(1/32,)`.
        rise_per_sigma: float. Target rise of a design's corners in noise
            standard deviations. Defaults to `3.0`.
        rise_bounds: (float, float). Bounds on that rise (log units).
            Defaults to `(0.05, 0.15)`.
        first_step: float. Half-side of the first, isotropic design in log
            units. Defaults to `0.4`.
        max_step: float. Largest design step along any direction (log
            units). Defaults to `0.5`.
        curvature_prior_sd: float. Relative standard deviation of the ridge
            prior on each round's curvature (0 turns it off). Defaults to
            `0.5`.
        slope_prior_sd: float. Standard deviation of a Gaussian prior on
            the path's exponents, centred on the prior's (0 turns it off).
            Defaults to `0.1`.
        max_rounds: tuple of ints. Rounds per base level (the last value
            repeats). Defaults to `(4, 4, 2, 2)`.
        borrowed_top: bool. Extra levels fit 5 coefficients on 10 points,
            borrowing the curvature's shape from the level below. Defaults
            to `False`.
        prior: `((width, depth, mlp_dim), compute, exponents)` centring the
            first level, or `None` for the paper's published procedure,
            `PAPER_PRIOR` (`ShapeOracle` scales it to its target with
            `keras_sovit.tuner.defaults.paper_prior`).
        min_examples_per_param: float. Trainability floor. Defaults to `1`.
        max_search_compute: float. Budget of the sweeps in units of T (the
            final run at T comes on top). Defaults to `1.5`.
        target_regret: float. Stop once the bootstrap expected regret is
            below this. Defaults to `0.005`.
        tolerance: float. The verification's allowed gap. Defaults to
            `0.005`.
        error_rate: float. The verification's error rate α, below 0.5.
            Defaults to `0.1`.
        n_bootstrap: int. Defaults to `100`.
        bounds: dict `{dim: (low, high)}` or `None`. Overrides of the
            default box (`_BOUNDS`).

    Example:

    ```python
    from keras_sovit.scaling.isoflop.search import IsoFlopSettings
    settings = IsoFlopSettings(max_search_compute=1.0)
    settings.to_dict()["fractions"]  # [0.000244..., ..., 0.015625]
    ```
    """

    fractions: tuple = (1 / 4096, 1 / 1024, 1 / 256, 1 / 64)
    extra_fractions: tuple = (1 / 32,)
    rise_per_sigma: float = 3.0
    rise_bounds: tuple = (0.05, 0.15)
    first_step: float = 0.4
    max_step: float = 0.5
    curvature_prior_sd: float = 0.5
    slope_prior_sd: float = 0.1
    max_rounds: tuple = (4, 4, 2, 2)
    borrowed_top: bool = False
    prior: tuple = None
    min_examples_per_param: float = 1.0
    max_search_compute: float = 1.5
    target_regret: float = 0.005
    tolerance: float = 0.005
    error_rate: float = 0.1
    n_bootstrap: int = 100
    bounds: dict = None

    def __post_init__(self):
        for name, value in _checked_settings(self).items():
            object.__setattr__(self, name, value)

    @classmethod
    def create(cls, settings=None, **overrides):
        """`settings` (an `IsoFlopSettings`, a dict or `None`) with
        `overrides` applied; a `ValueError` names a bad field."""
        if settings is None:
            settings = cls()
        elif isinstance(settings, dict):
            settings = cls(**_known_fields(cls, settings))
        elif not isinstance(settings, cls):
            raise ValueError(
                "`isoflop` must be an IsoFlopSettings, a dict of its fields "
                f"or None. Received: isoflop={settings!r}"
            )
        return dataclasses.replace(settings, **_known_fields(cls, overrides))

    def to_dict(self):
        """Every field, JSON-safe (tuples as lists)."""
        return {f.name: jsonable(getattr(self, f.name))
                for f in dataclasses.fields(self)}

    @property
    def box(self):
        """The bounds in force: `_BOUNDS` with `bounds` applied."""
        return dict(_BOUNDS, **(self.bounds or {}))


def _known_fields(cls, values):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(
            f"`isoflop` settings have no field {unknown}; known fields: "
            f"{sorted(names)}. Received: {dict(values)!r}"
        )
    return dict(values)


def _checked_settings(settings):
    """Normalised, validated field values (see `IsoFlopSettings`)."""
    s = settings
    error_rate = _positive("error_rate", s.error_rate)
    if not error_rate < 0.5:
        raise ValueError(
            f"`error_rate` must be below 0.5. Received: {s.error_rate!r}"
        )
    if isinstance(s.borrowed_top, bool) is False:
        raise ValueError(
            "`borrowed_top` must be a bool. Received: "
            f"borrowed_top={s.borrowed_top!r}"
        )
    return dict(
        fractions=_fractions("fractions", s.fractions, minimum=1),
        extra_fractions=_fractions("extra_fractions", s.extra_fractions),
        rise_per_sigma=_positive("rise_per_sigma", s.rise_per_sigma),
        rise_bounds=_pair("rise_bounds", s.rise_bounds),
        first_step=_positive("first_step", s.first_step),
        max_step=_positive("max_step", s.max_step),
        curvature_prior_sd=_positive("curvature_prior_sd",
                                     s.curvature_prior_sd, allow_zero=True),
        slope_prior_sd=_positive("slope_prior_sd", s.slope_prior_sd,
                                 allow_zero=True),
        max_rounds=_rounds(s.max_rounds),
        prior=None if s.prior is None else _check_prior(s.prior),
        min_examples_per_param=_positive(
            "min_examples_per_param", s.min_examples_per_param,
            allow_zero=True),
        max_search_compute=_positive("max_search_compute",
                                     s.max_search_compute),
        target_regret=_positive("target_regret", s.target_regret),
        tolerance=_positive("tolerance", s.tolerance),
        error_rate=error_rate,
        n_bootstrap=_count("n_bootstrap", s.n_bootstrap),
        bounds=None if s.bounds is None else _check_bounds(s.bounds),
    )


class IsoFlopSearch:
    """A model-agnostic compute-optimal shape search, driven by ask / tell.

    Chinchilla's IsoFLOP profiles (Hoffmann et al. 2022, approach 2) in
    three dimensions, as a trust-region response-surface method:

    1. `IsoFlopLevel` at T/4096, T/1024, T/256 and T/64 (by default): at
       each compute, rounds of a central composite design in log(width,
       depth, MLP) around the predicted optimum, whitened by the curvature
       seen so far so that its corners rise by about three noise standard
       deviations; a full quadratic (ridge prior on its curvature) fitted
       to the log-metrics of every trial (off-axis points included) gives
       the level's optimum in its trust region and, bootstrapped by trial,
       its spread. More rounds while the optimum is on the trust region's
       edge or its own expected regret exceeds `target_regret` / 5.
    2. `Propose`: the optimum's path u*(t) = a + s log t (robust GLS over
       the levels, the path model chosen by held-out levels' decisions)
       extrapolated to T and projected onto the trainable shapes; the
       proposal's expected regret from the bootstrap; and a paired decision
       on the top level (`verify`). An unverified or uncertain proposal
       buys a level closer to T (T/32 by default, up to two rounds) while
       the budget allows, and is proposed again.
    3. `Final` (with `final_run=True`): the proposal trained at T.

    Nothing here assumes a functional form for the loss: only one basin in
    log-shape at a fixed compute and a smooth optimum path. Every trial is
    trainable: at least `min_examples_per_param` examples per weight. The
    paper's published procedure serves only to centre the first design.
    `keras_sovit.tuner.ShapeOracle` runs this search as its default phases
    (its `"isoflop"` phase asks and tells this object).

    Args:
        target_compute: float. T in GFLOPs.
        template: ShapeSpec. Supplies `num_heads` and `patch_size`.
        image_size: int or (height, width). Defaults to `224`.
        settings: `IsoFlopSettings`, dict or `None` (the defaults).
        rounding: `keras_sovit.shapes.Rounding` or `None`. The lattice of
            shapes; defaults to widths and MLP sizes in multiples of 16
            (widths also of the template's heads).
        seed: int. Seeds the bootstrap. Defaults to `0`.
        final_run: bool. Whether the search ends with the proposal trained
            at T (`False`: it ends once the proposal is made).
        **overrides: fields of `IsoFlopSettings` (e.g. `n_bootstrap=20`).

    Example:

    ```python
    from keras_sovit.scaling.isoflop.search import IsoFlopSearch
    from keras_sovit.scaling.truths.suite import Observer, SATURATING_LAW
    search = IsoFlopSearch(8.8e12, keras_sovit.ShapeSpec(
        608, 10, 928, 16, 14), n_bootstrap=20)
    observe = Observer(SATURATING_LAW, noise=0.01, seed=0)
    while not search.done:
        for trial in search.ask():
            search.tell(trial.trial_id, observe(trial.shape, trial.compute))
    search.proposal, search.report["expected_regret"]
    ```
    """

    def __init__(self, target_compute, template, image_size=224,
                 settings=None, rounding=None, seed=0, final_run=True,
                 **overrides):
        self.target_compute = _positive("target_compute", target_compute)
        if not isinstance(template, ShapeSpec):
            raise ValueError(
                "`template` must be a ShapeSpec. Received: "
                f"template={template!r}"
            )
        self.template = template
        self.settings = IsoFlopSettings.create(settings, **overrides)
        for field in dataclasses.fields(self.settings):
            setattr(self, field.name, getattr(self.settings, field.name))
        self.prior = self.settings.prior or PAPER_PRIOR
        self.trainable = Trainability(
            template.patch_size, image_size,
            self.settings.min_examples_per_param, self.settings.box,
        )
        if rounding is not None and not isinstance(rounding, Rounding):
            raise ValueError(
                "`rounding` must be a Rounding or None. Received: "
                f"rounding={rounding!r}"
            )
        self.rounding = rounding or Rounding(num_heads=template.num_heads)
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise ValueError(f"`seed` must be an int. Received: seed={seed!r}")
        self.seed = int(seed)
        self.trials = {}
        self.levels = []
        self.report = {}
        self.proposal = None
        self._queue = []
        self.level_regret = self.target_regret / 5
        rounds = self.max_rounds + self.max_rounds[-1:] * len(self.fractions)
        self.phases = [
            IsoFlopLevel(f, rounds[i], min_rounds=2 if i == 0 else 1)
            for i, f in enumerate(self.fractions)
        ] + [Propose()] + ([Final()] if final_run else [])
        self.phase_index = 0

    @classmethod
    def from_observations(cls, rows, target_compute, template, **kwargs):
        """The proposal rule alone, on finished runs of any design.

        Runs are grouped by compute (within 1%); every group with at least
        10 distinct shapes is one level, its surface expanded around its
        best run in coordinates whitened by the group's spread of
        log-shapes, and `Propose` runs on those levels. No trial is asked.

        Args:
            rows: iterable of `(ShapeSpec, compute_gflops, metric)`.
            target_compute: float. T in GFLOPs.
            template: ShapeSpec.
            **kwargs: as in `IsoFlopSearch`.

        Returns:
            The search, with `proposal` and `report` filled.
        """
        search = cls(target_compute, template, **kwargs)
        groups = {}
        for shape, compute, value in rows:
            key = round(float(np.log(compute)) / 0.01)
            groups.setdefault(key, []).append((shape, compute, value))
        for key in sorted(groups):
            group = groups[key]
            if len({g[0] for g in group}) < _N_COEF:
                continue
            ids = []
            for shape, compute, value in group:
                trial = search.new_trial(shape, group[0][1], "observed")
                search.tell(trial.trial_id, value)
                ids.append(trial.trial_id)
            u = np.array([search.log_shape(g[0]) for g in group])
            best = u[int(np.argmin([g[2] for g in group]))]
            spread = np.linalg.cholesky(np.cov(u.T) + np.eye(3) * 1e-6)
            search.levels.append(
                search.fit_level([(best, spread, ids, None)])
            )
        if not search.levels:
            raise ValueError(
                "`rows` must hold at least one compute with 10 distinct "
                "shapes."
            )
        search.propose()
        search.phases, search.phase_index = [], 0
        return search

    # --- ask / tell ------------------------------------------------------

    @property
    def done(self):
        """True once the final run is told."""
        return self.phase_index >= len(self.phases)

    @property
    def pending(self):
        """Trials asked for and not told yet."""
        return [t for t in self.trials.values()
                if t.value is None and not t.failed and t not in self._queue]

    def ask(self, n=None):
        """Up to `n` trials to run now (all available if `None`).

        An empty list while trials are pending means: wait for them (the
        next step depends on their values); parallel workers never get the
        same trial twice.
        """
        self._advance()
        count = len(self._queue) if n is None else n
        out, self._queue = self._queue[:count], self._queue[count:]
        return out

    def tell(self, trial_id, value):
        """Records the metric (lower is better) of a finished trial."""
        if trial_id not in self.trials:
            raise ValueError(
                f"`trial_id` is unknown. Received: trial_id={trial_id!r}"
            )
        self.trials[trial_id].value = _positive("value", value)

    def fail(self, trial_id):
        """Records that a trial gave no value (it crashed, or reported
        NaN): the fits leave it out."""
        if trial_id not in self.trials:
            raise ValueError(
                f"`trial_id` is unknown. Received: trial_id={trial_id!r}"
            )
        self.trials[trial_id].failed = True

    def _advance(self):
        while not self._queue and not self.pending and not self.done:
            phase = self.phases[self.phase_index]
            if phase.done(self):
                phase.finish(self)
                self.phase_index += 1
                continue
            batch = phase.plan(self)
            if not batch:
                phase.finish(self)
                self.phase_index += 1
                continue
            self._queue.extend(batch)

    # --- bookkeeping -----------------------------------------------------

    def new_trial(self, shape, compute, phase, level=None):
        """Registers a trial (used by phases)."""
        trial = Trial(len(self.trials), shape, compute, phase, level)
        self.trials[trial.trial_id] = trial
        return trial

    def spent(self, phase=None):
        """Compute of every trial planned so far (in GFLOPs)."""
        return sum(t.compute for t in self.trials.values()
                   if phase is None or t.phase == phase)

    def search_budget_left(self):
        budget = self.max_search_compute * self.target_compute
        return budget - self.spent() + self.spent("final")

    # --- designs and fits ------------------------------------------------

    def log_shape(self, shape):
        return np.log([shape.width, shape.depth, shape.mlp_dim])

    def snap(self, u, t):
        """The lattice shape nearest e^u, trainable at t."""
        x = np.exp(u)
        for _ in range(50):
            shape = self._on_lattice(*x)
            if self.trainable.margin(self.log_shape(shape), t) >= 0:
                return shape
            x = x * 0.99
        return shape

    def _on_lattice(self, width, depth, mlp_dim):
        return self.rounding.snap(
            width, depth, mlp_dim, patch_size=self.template.patch_size,
            default_heads=self.template.num_heads,
        )

    def noise(self, fit=None):
        """Pooled residual standard deviation of the log-metric so far."""
        fits = self.levels + ([fit] if fit and fit not in self.levels else [])
        if not fits:
            return None
        dof = np.array([f.surface.dof for f in fits], float)
        var = np.array([f.surface.sigma**2 for f in fits])
        return float(np.sqrt(np.sum(dof * var) / np.sum(dof)))

    def spread(self, fit=None):
        """Design steps, and the curvature they were whitened by with the
        noise estimate (`None` for the first round): isotropic
        on the very first round, else whitened by `fit` (default: the top
        level so far) so that the corners rise by a multiple of the noise.
        """
        if fit is None and not self.levels:
            return np.eye(3) * self.first_step, None
        fit = fit or self.levels[-1]
        sigma = self.noise(fit)
        rise = np.clip(self.rise_per_sigma * sigma, *self.rise_bounds)
        hessian = positive_definite(fit.surface.hessian)
        return whitened_spread(hessian, rise, self.max_step), (hessian, sigma)

    def design(self, centre, spread, t, borrowed=False):
        """Trials of one central composite design at compute t."""
        centre = self.trainable.shrink_in(centre, t)[0]
        points = self.trainable.shrink_in(
            ccd_design(centre, spread, corners_only=borrowed), t
        )
        if len(points) * t > self.search_budget_left() * (1 + 1e-9):
            return []
        level = len(self.levels)
        return [self.new_trial(self.snap(u, t), t, "isoflop", level)
                for u in points]

    def fit_level(self, rounds, borrowed=False):
        """A `LevelFit` from the told trials of a level's rounds.

        The fit uses the last round's trials and any earlier trial inside
        its trust region (the design's bounding box, enlarged by a quarter).
        """
        centre, spread, ids, curvature = rounds[-1]
        trials = [self.trials[i] for i in ids]
        t = trials[0].compute
        u_last = np.array([self.log_shape(tr.shape) for tr in trials])
        half = np.max(np.abs(u_last - centre), axis=0) * 1.25
        lo = np.maximum(self.trainable.lo, centre - half)
        hi = np.minimum(self.trainable.hi, centre + half)
        for _, _, earlier, _ in rounds[:-1]:
            for i in earlier:
                u_i = self.log_shape(self.trials[i].shape)
                if np.all((u_i >= lo) & (u_i <= hi)):
                    trials.append(self.trials[i])
        trials = [tr for tr in trials if not tr.failed]
        u = np.array([self.log_shape(tr.shape) for tr in trials])
        y = np.log([tr.value for tr in trials])
        basis = np.linalg.inv(spread.T)
        borrowed_h = self.levels[-1].surface.hessian if (
            borrowed and self.levels) else None
        prior = self._curvature_prior(curvature, spread)
        feasible = lambda v: self.trainable.margin(v, t)  # noqa: E731

        def fit_and_argmin(weights=None):
            s = fit_surface(u, y, centre, basis, weights, borrowed_h, prior)
            return s, minimise_quadratic(s.gradient, s.hessian, centre, lo,
                                         hi, feasible)

        surface, optimum = fit_and_argmin()
        # One generator per fit, keyed by where the fit stands: replaying
        # the same trials (a resumed search) gives the same draws.
        rng = np.random.default_rng([self.seed, len(self.levels),
                                     len(rounds), len(y)])
        draws = [fit_and_argmin(rng.dirichlet(np.ones(len(y))) * len(y))
                 for _ in range(self.n_bootstrap)]
        fit = LevelFit(t, surface, optimum, np.array([d[1] for d in draws]),
                       (lo, hi), np.asarray(rounds[0][0], float))
        fit.surfaces = [d[0] for d in draws]
        noise = self.noise()
        if noise:  # lack of fit beyond the noise widens the level's spread
            fit.cov = fit.cov * max(1.0, (surface.sigma / noise) ** 2)
        return fit

    def _curvature_prior(self, curvature, spread):
        """Ridge prior (a, weight) on a round's curvature: the curvature its
        design was whitened by, in design coordinates, with a standard
        deviation of `curvature_prior_sd` times its mean diagonal."""
        if curvature is None or not self.curvature_prior_sd:
            return None
        curvature, sigma = curvature
        a = spread.T @ curvature @ spread
        tau = self.curvature_prior_sd * np.mean(np.diag(a))
        return a, (sigma / tau) ** 2

    def predict(self, t):
        """Predicted optimal log-shape at compute t from the levels so far
        (the prior's exponents carry a single level)."""
        shape, t0, s = self.prior
        if not self.levels:
            return np.log(shape) + np.array(s) * np.log(t / t0)
        if len(self.levels) == 1:
            top = self.levels[0]
            return top.optimum + np.array(s) * np.log(t / top.compute)
        a, slope, _ = self._path(self.levels)
        return a + slope * np.log(t / self.target_compute)

    def _path(self, levels, optima=None):
        v = np.log([lv.compute / self.target_compute for lv in levels])
        optima = [lv.optimum for lv in levels] if optima is None else optima
        prior = None if not self.slope_prior_sd else (
            np.array(self.prior[2]), self.slope_prior_sd)
        return fit_path(v, optima, [lv.cov for lv in levels],
                        slope_prior=prior)

    # --- proposal and verification ---------------------------------------

    def _project(self, u, metric):
        """Nearest trainable log-shape at T in the metric `metric`."""
        t = self.target_compute
        return minimise_quadratic(
            np.zeros(3), metric, u, self.trainable.lo, self.trainable.hi,
            lambda v: self.trainable.margin(v, t),
        )

    def _lattice(self, u, metric):
        """Best trainable lattice neighbour of e^u under the metric."""
        t = self.target_compute
        best, best_cost = None, np.inf
        x = np.exp(u)
        steps = self.rounding.steps(x[0], self.template.num_heads)
        steps = [steps[d] for d in DIMS]
        options = [
            sorted({max(step, np.floor(v / step) * step),
                    max(step, np.ceil(v / step) * step)})
            for v, step in zip(x, steps)
        ]
        for w, d, m in itertools.product(*options):
            cand = np.log([w, d, m])
            if self.trainable.margin(cand, t) < 0:
                continue
            cost = (cand - u) @ metric @ (cand - u)
            if cost < best_cost:
                best, best_cost = (int(w), int(d), int(m)), cost
        if best is None:
            return self.snap(u, t)
        return self._on_lattice(*best)

    def propose(self):
        """Fits the path, proposes the shape at T and fills `report`."""
        levels = self.levels
        model, scores = self._select_path_model()
        chosen = _PATH_MODELS[model](levels)
        metric = self._metric()
        a, slope, cov = self._path(chosen)
        u = self._project(a, metric)
        self.proposal = self._lattice(u, metric)
        boot = []
        for b in range(self.n_bootstrap):
            ab, _, _ = self._path(chosen, [lv.boot[b] for lv in chosen])
            boot.append(self._project(ab, metric))
        boot = np.array(boot)
        du = boot - u
        expected = 0.5 * np.mean(np.einsum("bi,ij,bj->b", du, metric, du))
        self.report.update(
            path_model=model,
            path_scores=scores,
            exponents=dict(zip(DIMS, slope.tolist())),
            log_shape=u.tolist(),
            spread=dict(zip(DIMS, np.std(boot, axis=0).tolist())),
            expected_regret=float(expected),
            decision=self.verify(),
            levels=[_level_summary(lv) for lv in levels],
        )

    def _metric(self):
        """Curvature used at T: the levels' positive-definite curvatures,
        each normalised to unit trace and averaged with their degrees of
        freedom as weights (the shape of the bowl), scaled to the top
        level's trace (its size, the nearest to T)."""
        shapes, weights = [], []
        for level in self.levels:
            h = positive_definite(level.surface.hessian)
            shapes.append(h / np.trace(h))
            weights.append(level.surface.dof)
        shape = np.average(shapes, axis=0, weights=weights)
        top = np.trace(positive_definite(self.levels[-1].surface.hessian))
        return shape * top

    def _select_path_model(self):
        """Chooses the path model by the decisions it makes on held-out
        levels: each level k ≥ 2 is predicted from the levels below it
        (forward chaining, so no level's trials ever score a fit that used
        them), and the prediction is scored by that level's own paired
        bootstrap gap. The default "all" stands unless another model has
        the smaller total gap in at least 1 − α of the draws."""
        totals = {name: 0.0 for name in _PATH_MODELS}
        for k in range(2, len(self.levels)):
            lower, held = self.levels[:k], self.levels[k]
            for name, pick in _PATH_MODELS.items():
                a, slope, _ = self._path(pick(lower))
                u = a + slope * np.log(held.compute / self.target_compute)
                totals[name] = totals[name] + _gaps(held, u)
        if len(self.levels) < 3:
            return "all", {}
        scores = {name: float(np.mean(g)) for name, g in totals.items()}
        best = "all"
        for name, g in totals.items():
            wins = np.mean(g < totals["all"])
            if wins >= 1 - self.error_rate and scores[name] < scores[best]:
                best = name
        return best, scores

    def verify(self):
        """Paired decision: is the lower levels' prediction for the top
        level within `tolerance` of that level's own optimum?

        For every bootstrap draw (per-trial weights on the top level's
        trials, replicated centre included), the gap is the surface's value
        at the prediction minus its minimum, both under the same draw
        (paired). Verified when the (1 − α) quantile of the gap is at most
        `tolerance`: if the prediction really is worse by more than the
        tolerance, it is verified with probability about α.
        """
        top = self.levels[-1]
        gaps = _gaps(top, top.predicted)
        upper = float(np.quantile(gaps, 1 - self.error_rate))
        return {
            "compute": top.compute,
            "gap": float(top.surface(top.predicted) - top.surface(
                top.optimum)),
            "gap_upper": upper,
            "verified": upper <= self.tolerance,
        }

    def next_extra_level(self):
        """The next extra level above the top one that the budget affords."""
        top = self.levels[-1].compute / self.target_compute
        for fraction in self.extra_fractions:
            points = 10 if self.borrowed_top else 16
            cost = points * fraction * self.target_compute
            if fraction > top * (1 + 1e-9) and cost <= (
                self.search_budget_left() * (1 + 1e-9)
            ):
                return IsoFlopLevel(fraction, 2, borrowed=self.borrowed_top)
        return None

    def result(self):
        """The proposal, its diagnostics, and the compute spent (units of
        T) by phase."""
        t = self.target_compute
        return dict(
            self.report,
            proposal=self.proposal,
            compute={p: self.spent(p) / t for p in ("isoflop", "final")},
            total_compute=self.spent() / t,
            n_trials=len(self.trials),
        )


# Path models: which levels the power-law path is fitted through. Dropping
# the lowest level guards against a path that bends at small compute.
_PATH_MODELS = {
    "all": lambda levels: list(levels),
    "drop-lowest": lambda levels: list(levels[1:]) if len(levels) > 2 else (
        list(levels)),
}


def _gaps(level, u):
    """Paired bootstrap gaps q_b(u) − q_b(optimum_b) on one level."""
    return np.array([
        s(u) - s(opt) for s, opt in zip(level.surfaces, level.boot)
    ])


def _level_summary(level):
    return {
        "compute": level.compute,
        "optimum": np.exp(level.optimum).round(1).tolist(),
        "predicted": np.exp(level.predicted).round(1).tolist(),
        "bracketed": level.bracketed,
        "sigma": level.surface.sigma,
    }


def _positive(name, value, allow_zero=False):
    return check_positive_number(name, value, allow_zero=allow_zero)


def _pair(name, value):
    return check_range_pair(name, value)


def _count(name, value):
    return check_positive_int(name, value)


def _rounds(values):
    values = tuple(values) if isinstance(values, (tuple, list)) else ()
    if not values:
        raise ValueError(
            "`max_rounds` must be a non-empty tuple of positive ints. "
            f"Received: max_rounds={values!r}"
        )
    return tuple(check_positive_int("max_rounds", v) for v in values)


def _check_bounds(bounds):
    box = check_bounds("bounds", bounds, _BOUNDS)
    return {d: box[d] for d in bounds}


def _fractions(name, values, minimum=0):
    values = tuple(values) if isinstance(values, (tuple, list)) else (
        values,)
    if len(values) < minimum or any(
        not 0 < _positive(name, v) < 1 for v in values
    ) or list(values) != sorted(values):
        raise ValueError(
            f"`{name}` must be increasing fractions of the target in (0, 1)"
            f". Received: {name}={values!r}"
        )
    return tuple(float(v) for v in values)


def _check_prior(prior):
    try:
        shape, t0, s = prior
        shape, s = tuple(shape), tuple(s)
        shape = tuple(float(_positive("prior", v)) for v in shape)
        s = tuple(float(v) for v in s)
        t0 = _positive("prior", t0)
        assert len(shape) == 3 and len(s) == 3
    except (TypeError, ValueError, AssertionError):
        raise ValueError(
            "`prior` must be ((width, depth, mlp_dim), compute, "
            f"(s_width, s_depth, s_mlp)). Received: prior={prior!r}"
        ) from None
    return shape, t0, s
