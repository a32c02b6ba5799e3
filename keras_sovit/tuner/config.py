"""`SearchConfig`: every argument that defines a shape search, frozen.

The oracle builds one from its constructor arguments, saves it with the
project, and on resume compares it with the saved one field by field:
every field, present or future, is covered without a hand-kept list.
Which search runs follows `phases`: by default the IsoFLOP search
(`ISOFLOP_PHASES`, configured by `template` and `isoflop`), or, when any
of the paper's sweep arguments is given, the paper's procedure
(`PAPER_PHASES`, its gaps filled from `default_plan`).
"""

import dataclasses
import functools
import math

import keras_tuner

from keras_sovit._json import jsonable
from keras_sovit._validation import check_bool
from keras_sovit._validation import check_choice
from keras_sovit._validation import check_grids
from keras_sovit._validation import check_non_negative_int
from keras_sovit._validation import check_number
from keras_sovit._validation import check_positive_int
from keras_sovit._validation import check_positive_number
from keras_sovit._validation import image_hw
from keras_sovit.scaling.isoflop.search import IsoFlopSettings
from keras_sovit.scaling.paper import plan as plan_lib
from keras_sovit.scaling.results import CHECKPOINT_SEPARATOR
from keras_sovit.shapes import SCALED_DIMS
from keras_sovit.shapes import Rounding
from keras_sovit.shapes import ShapeSpec
from keras_sovit.shapes import check_rounding
from keras_sovit.shapes import check_shape_spec
from keras_sovit.tuner import phases as phases_lib
from keras_sovit.tuner import proposals
from keras_sovit.tuner.defaults import default_plan
from keras_sovit.tuner.defaults import paper_prior
from keras_sovit.tuner.protocol import FINAL_TRIALS
from keras_sovit.tuner.protocol import GRID_FRACTIONS
from keras_sovit.tuner.protocol import PAPER_PHASES
from keras_sovit.tuner.protocol import PAPER_SWEEP_ARGUMENTS
from keras_sovit.tuner.protocol import PHASE_PLANS
from keras_sovit.tuner.protocol import TRIAL_HP_NAMES
from keras_sovit.tuner.protocol import PhaseName
from keras_sovit.tuner.protocol import default_phases


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """The settings that define a shape search (see `ShapeOracle`).

    Build it with `SearchConfig.create(...)`, which validates the
    arguments, chooses the phases and fills the paper's sweeps from
    `default_plan`. Settings of a sweep that does not run are `None` (with
    `exponents` given there is no star sweep; with `base_shape` given, no
    grid sweep; the IsoFLOP search has neither). `template` is the shape
    whose heads and patch size every trial keeps; `isoflop` holds the
    IsoFLOP search's settings (`None` for the paper's procedure).
    """

    objective: str
    target_compute: float
    image_size: tuple
    star_center: ShapeSpec
    star_grids: dict
    star_budgets: tuple
    grid: dict
    grid_budget: float
    exponents: dict
    base_shape: ShapeSpec
    base_compute: float
    rounding: Rounding
    final_trials: tuple
    proposal_method: str
    validation_trials: bool
    validation_compute: float
    validation_seeds: int
    validation_alpha: float
    n_bootstrap: int
    max_grid_extensions: int
    phases: tuple
    replicates: int
    final_seeds: int
    branch_budgets: object
    template: ShapeSpec
    isoflop: IsoFlopSettings

    @classmethod
    def create(
        cls, objective, target_compute, star_center=None, star_grids=None,
        star_budgets=None, grid=None, grid_budget=None, exponents=None,
        base_shape=None, base_compute=None, rounding=None,
        final_trials=("proposal",), proposal_method="auto",
        validation_trials=False, validation_compute=None,
        validation_seeds=3, validation_alpha=0.1, image_size=224,
        n_bootstrap=200, max_grid_extensions=8, phases=None,
        replicates=1, final_seeds=1, branch_budgets=None, template=None,
        isoflop=None,
    ):
        """Validates the arguments of `ShapeOracle`; returns the config."""
        target_compute = check_positive_number(
            "target_compute", target_compute
        )
        image_size = image_hw(image_size)
        rounding = check_rounding(rounding)
        given = {name: value for name, value in zip(PAPER_SWEEP_ARGUMENTS, (
            star_center, star_grids, star_budgets, grid, grid_budget,
            exponents, base_shape, base_compute)) if value is not None}
        phases = _phase_names(default_phases(given) if phases is None
                              else phases)
        search = (_isoflop_search if PhaseName.ISOFLOP.value in phases
                  else _paper_search)
        config = cls(
            objective=check_objective(objective).name,
            target_compute=target_compute,
            image_size=image_size,
            rounding=rounding,
            final_trials=_final_trials(final_trials),
            proposal_method=check_choice(
                "proposal_method", proposal_method, proposals.rule_names()
            ),
            validation_trials=check_bool(
                "validation_trials", bool(validation_trials)
            ),
            validation_compute=None,
            validation_seeds=check_positive_int(
                "validation_seeds", validation_seeds
            ),
            validation_alpha=check_number(
                "validation_alpha", validation_alpha, low=0.0, high=1.0,
                low_open=True, high_open=True,
            ),
            n_bootstrap=check_non_negative_int("n_bootstrap", n_bootstrap),
            max_grid_extensions=check_non_negative_int(
                "max_grid_extensions", max_grid_extensions
            ),
            phases=phases,
            replicates=check_positive_int("replicates", replicates),
            final_seeds=check_positive_int("final_seeds", final_seeds),
            branch_budgets=check_bool("branch_budgets", branch_budgets,
                                      allow_none=True),
            **search(target_compute, image_size, rounding, phases,
                     template, isoflop, given),
        )
        if config.validation_trials:
            config = dataclasses.replace(
                config, validation_compute=check_positive_number(
                    "validation_compute",
                    validation_compute or config.default_validation_compute,
                ),
            )
        config.check()
        return config

    # ------------------------------------------------------------------
    # Derived settings.

    @property
    def run_star(self):
        return self.isoflop is None and self.exponents is None

    @property
    def run_grid(self):
        return self.isoflop is None and self.base_shape is None

    @property
    def dims(self):
        """The scaled dimensions: those swept, or given exponents for."""
        if self.isoflop is not None:
            return SCALED_DIMS
        given = self.star_grids if self.run_star else self.exponents
        return tuple(d for d in SCALED_DIMS if d in given)

    @property
    def sweep_budgets(self):
        """Every compute a sweep trial may train (not the final runs)."""
        if self.isoflop is not None:
            return [self.target_compute * f for f in
                    self.isoflop.fractions + self.isoflop.extra_fractions]
        budgets = list(self.star_budgets or ())
        if self.run_grid:
            budgets.append(self.grid_budget)
        return budgets

    @property
    def default_validation_compute(self):
        """The geometric mean of the largest sweep budget and the target."""
        largest = max(self.sweep_budgets or [self.target_compute / 10])
        return math.sqrt(largest * self.target_compute)

    def star_plan(self):
        """`(shape, compute)` pairs of the star sweep."""
        return plan_lib.star_sweep_plan(
            self.star_center, self.star_grids, self.star_budgets
        )

    def grid_plan(self, grid=None):
        """`(shape, compute)` pairs of the grid sweep (or of `grid`)."""
        return plan_lib.grid_sweep_plan(
            grid or self.grid, self.grid_budget, self.template
        )

    def star_fractions(self):
        """Budgets of a branched star trial, as fractions of the largest."""
        top = max(self.star_budgets)
        return tuple(b / top for b in self.star_budgets)

    def budget_ladders(self):
        """Every `budget_fractions` value a trial of this search may get."""
        ladders = [(1.0,), GRID_FRACTIONS]
        if self.run_star:
            ladders.append(self.star_fractions())
        return ladders

    def sweep_shapes(self):
        shapes = [self.template]
        if self.run_star:
            shapes += [s for s, _ in self.star_plan()]
        if self.run_grid:
            shapes += [s for s, _ in self.grid_plan()]
        if self.base_shape is not None:
            shapes.append(self.base_shape)
        return shapes

    @functools.cached_property
    def grid_steps(self):
        """Steps of the declared Int grids: every planned value fits."""
        steps = {
            "width": self.rounding.width_multiple,
            "depth": self.rounding.depth_multiple,
            "mlp_dim": self.rounding.mlp_multiple,
        }
        for shape in self.sweep_shapes():
            for dim in SCALED_DIMS:
                steps[dim] = math.gcd(steps[dim], getattr(shape, dim))
        return steps

    # ------------------------------------------------------------------
    # Checks and serialisation.

    def check(self):
        """Cross-argument checks; a `ValueError` names what is wrong."""
        if self.run_star:
            _check_star_sweep(self.star_center, self.star_grids,
                              self.star_budgets)
        if self.isoflop is not None and self.validation_trials:
            raise ValueError(
                "`validation_trials` checks the paper's proposal; the "
                "IsoFLOP search verifies its own (a paired decision at its "
                "top level, or one more level). Received: "
                "validation_trials=True"
            )
        if self.isoflop is not None and self.replicates != 1:
            raise ValueError(
                "`replicates` repeats the paper's sweep trials; the IsoFLOP "
                "search designs its own replicates (its centre points). "
                f"Received: replicates={self.replicates}"
            )
        if (self.isoflop is None and not self.run_star
                and self.proposal_method == "joint"):
            raise ValueError(
                "`proposal_method='joint'` needs the star sweep; it is "
                "skipped because `exponents` is given. Received: "
                "proposal_method='joint'"
            )
        budgets = self.sweep_budgets + [
            b for b in (self.validation_compute, self.base_compute) if b
        ]
        if budgets and self.target_compute <= max(budgets):
            raise ValueError(
                "`target_compute` must exceed every sweep and validation "
                f"budget (largest {max(budgets)}). Received: "
                f"target_compute={self.target_compute}"
            )
        for shape in self.sweep_shapes():
            shape.gflops(self.image_size)  # Raises on a bad patch size.

    def to_dict(self):
        """Every field, JSON-safe."""
        return {f.name: jsonable(getattr(self, f.name))
                for f in dataclasses.fields(self)}

    def check_resume(self, saved):
        """Raises unless every field equals the saved project's."""
        current = self.to_dict()
        changed = [k for k in current if saved.get(k) != current[k]]
        if not changed:
            return
        details = ", ".join(
            f"{k}: saved {saved.get(k)!r}, now {current[k]!r}"
            for k in changed
        )
        raise ValueError(
            "The ShapeOracle arguments that define the search differ "
            f"from the saved project ({details}). Pass overwrite=True "
            "or use a new project_name to start a new search. "
            f"Received: changed={changed}"
        )


def check_objective(objective):
    """A single, minimised `keras_tuner.Objective` (str means "min")."""
    if isinstance(objective, str):
        objective = keras_tuner.Objective(objective, "min")
    if not isinstance(objective, keras_tuner.Objective):
        raise ValueError(
            "`objective` must be a single keras_tuner.Objective or a str "
            "naming the loss-like metric to minimise, e.g. "
            "keras_tuner.Objective('fewshot_10shot_error', 'min'). "
            f"Received: objective={objective!r}"
        )
    if objective.direction != "min":
        raise ValueError(
            "`objective` must be minimised: the scaling law models a "
            "loss-like metric (report an error such as 1 - accuracy). "
            f"Received: objective={objective!r}"
        )
    if (CHECKPOINT_SEPARATOR in objective.name
            or objective.name in TRIAL_HP_NAMES):
        raise ValueError(
            "`objective` must name a metric, not a reserved name. "
            f"Received: objective={objective.name!r}"
        )
    return objective


def _paper_search(target_compute, image_size, rounding, phases, template,
                  isoflop, given):
    """The fields of the paper's procedure: its sweeps, filled from
    `default_plan`; the template is x0 if given, else the star centre."""
    for name, value in (("template", template), ("isoflop", isoflop)):
        if value is not None:
            raise ValueError(
                f"`{name}` configures the IsoFLOP search, but phases="
                f"{list(phases)} run the paper's procedure, whose shapes "
                "keep the star centre's (or base_shape's) heads and patch "
                f"size. Leave it out. Received: {name}={value!r}"
            )
    star_center = given.get("star_center")
    if star_center is not None:
        star_center = check_shape_spec("star_center", star_center,
                                       allow_dict=True)
    defaults = default_plan(target_compute, image_size, rounding,
                            star_center)
    sweeps = _sweeps(defaults, **{k: v for k, v in given.items()
                                  if k != "star_center"})
    return dict(sweeps, star_center=defaults["star_center"],
                template=sweeps["base_shape"] or defaults["star_center"],
                isoflop=None)


def _isoflop_search(target_compute, image_size, rounding, phases, template,
                    isoflop, given):
    """The fields of the IsoFLOP search: no sweeps, a template (default:
    `default_plan`'s star centre, for its heads and patch size) and the
    settings, whose prior defaults to `paper_prior`."""
    for name, value in given.items():
        raise ValueError(
            f"`{name}` configures the paper's sweeps, which phases="
            f"{list(phases)} do not run (the IsoFLOP search designs its own "
            "trials). Leave it out, or pass phases=keras_sovit.tuner."
            f"PAPER_PHASES. Received: {name}={value!r}"
        )
    mixed = [p for p in phases if p in PAPER_PHASES
             and p != PhaseName.FINAL.value]
    if mixed:
        raise ValueError(
            "`phases` must not mix the IsoFLOP search with the paper's "
            f"phases {mixed}. Received: phases={list(phases)}"
        )
    if template is None:
        template = default_plan(target_compute, image_size,
                                rounding)["star_center"]
    settings = IsoFlopSettings.create(isoflop)
    if settings.prior is None:
        settings = dataclasses.replace(
            settings, prior=paper_prior(target_compute, image_size))
    return dict(
        star_center=None, star_grids=None, star_budgets=None, grid=None,
        grid_budget=None, exponents=None, base_shape=None,
        base_compute=None,
        template=check_shape_spec("template", template, allow_dict=True),
        isoflop=settings,
    )


def _sweeps(defaults, star_grids=None, star_budgets=None, grid=None,
            grid_budget=None, exponents=None, base_shape=None,
            base_compute=None):
    """The sweep fields: the arguments, else the defaults, else `None`."""
    if (base_shape is None) != (base_compute is None):
        raise ValueError(
            "`base_shape` and `base_compute` must be given together. "
            f"Received: base_shape={base_shape!r}, "
            f"base_compute={base_compute!r}"
        )
    out = dict.fromkeys(("star_grids", "star_budgets", "grid",
                         "grid_budget", "exponents", "base_shape",
                         "base_compute"))
    if exponents is None:
        out["star_grids"] = check_grids(
            "star_grids", star_grids or defaults["star_grids"], SCALED_DIMS
        )
        out["star_budgets"] = tuple(sorted(
            check_positive_number("star_budgets", b)
            for b in (star_budgets or defaults["star_budgets"])
        ))
    else:
        out["exponents"] = plan_lib.check_exponents("exponents", exponents)
    if base_shape is None:
        out["grid"] = check_grids("grid", grid or defaults["grid"],
                                  SCALED_DIMS)
        out["grid_budget"] = check_positive_number(
            "grid_budget", grid_budget or defaults["grid_budget"]
        )
    else:
        out["base_shape"] = check_shape_spec("base_shape", base_shape,
                                             allow_dict=True)
        out["base_compute"] = check_positive_number("base_compute",
                                                    base_compute)
    return out


def _final_trials(final_trials):
    final_trials = tuple(final_trials)
    for name in final_trials:
        check_choice("final_trials", name, FINAL_TRIALS)
    return final_trials


def _phase_names(phases):
    if isinstance(phases, str):
        phases = PHASE_PLANS[check_choice("phases", phases,
                                          tuple(PHASE_PLANS))]
    names = tuple(str(p) for p in phases)
    for name in names:
        check_choice("phases", name, phases_lib.phase_names())
    if len(set(names)) != len(names):
        raise ValueError(
            f"`phases` must not repeat a phase. Received: phases={names}"
        )
    return names


def _check_star_sweep(star_center, star_grids, star_budgets):
    """Each star grid lies below the centre, with 3+ values; 2+ budgets."""
    for dim, values in star_grids.items():
        limit = getattr(star_center, dim)
        if any(v >= limit for v in values):
            raise ValueError(
                f"`star_grids['{dim}']` must lie below the star "
                f"centre's {dim}={limit}. Received: "
                f"star_grids['{dim}']={list(values)}"
            )
        if len(values) < 3:
            raise ValueError(
                f"`star_grids['{dim}']` needs at least 3 distinct "
                f"values. Received: star_grids['{dim}']={list(values)}"
            )
    if len(star_budgets) < 2 or len(set(star_budgets)) < 2:
        raise ValueError(
            "`star_budgets` needs at least 2 distinct budgets. "
            f"Received: star_budgets={list(star_budgets)}"
        )
