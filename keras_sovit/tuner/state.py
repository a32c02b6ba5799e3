"""`SearchState`: what a shape search has done and found so far.

The configuration (`SearchConfig`) never changes during a search; the
state does, and is saved with the project after every trial. Fitted
results end in `_` (the scikit-learn convention), so a given setting
(`config.exponents`) and a fitted one (`state.exponents_`) never share a
name. Everything here is plain JSON-safe data.
"""

import dataclasses

from keras_sovit._json import jsonable


@dataclasses.dataclass
class SearchState:
    """The mutable part of a shape search.

    Attributes:
        phase: str. The phase running now (a `PhaseName` value or the name
            of a registered custom phase).
        plans: dict. Phase name -> list of planned trial values; a phase's
            plan is made when the phase starts and saved, so a resumed
            search runs the same trials.
        phase_data: dict. Phase name -> any JSON-safe data a phase keeps.
        grid_: dict or `None`. The grid-sweep grid after its extensions.
        grid_extensions_: int. How often the grid was extended.
        star_fit_: dict or `None`. The star-sweep fit
            (`StarSweepFit.to_dict()`).
        exponents_: dict or `None`. The exponents the proposal used:
            fitted by the star sweep, or the given ones.
        base_shape_: dict or `None`. The small compute-optimal shape x0:
            found by the grid sweep, or the given one.
        base_compute_: float or `None`. The compute x0 is optimal for.
        proposals_: dict. Role ("target", "control", "validation") ->
            shape dict.
        proposal_info_: dict. Diagnostics of the proposal rule (the
            method used, held-out errors, ...).
        validation_: dict or `None`. The local-optimality check.
        excluded_trials_: dict. Trial id -> why it is not in the fits.
        space_checked: bool. Whether the hypermodel's hyperparameters
            were checked.
        branch_budgets_: bool. Whether the hypermodel declared
            `budget_fractions` (it trains several budgets in one run).
        signal_: dict or `None`. The signal gate's checks.
        final_: list. The final comparison, one entry per role.
        verdict_: dict or `None`. The proposal against the baselines.
        stopped_: str or `None`. Why the search stopped early.
    """

    phase: str
    plans: dict = dataclasses.field(default_factory=dict)
    phase_data: dict = dataclasses.field(default_factory=dict)
    grid_: dict = None
    grid_extensions_: int = 0
    star_fit_: dict = None
    exponents_: dict = None
    base_shape_: dict = None
    base_compute_: float = None
    proposals_: dict = dataclasses.field(default_factory=dict)
    proposal_info_: dict = dataclasses.field(default_factory=dict)
    validation_: dict = None
    excluded_trials_: dict = dataclasses.field(default_factory=dict)
    space_checked: bool = False
    branch_budgets_: bool = False
    signal_: dict = None
    final_: list = dataclasses.field(default_factory=list)
    verdict_: dict = None
    stopped_: str = None

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, state):
        return cls(**state)


# The tuner's name for the one converter (`keras_sovit._json.jsonable`).
plain = jsonable
