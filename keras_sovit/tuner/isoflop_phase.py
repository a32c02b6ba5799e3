"""The IsoFLOP search as a phase of `ShapeOracle`: its default search.

`keras_sovit.scaling.isoflop.search.IsoFlopSearch` is the model-agnostic search
as ask / tell math. `IsoFlop`, the `"isoflop"` phase, runs it on the
oracle's trials: each `plan` is the search's next round (one central
composite design at one compute, handed out to any number of workers),
each `finish` tells the search the round's finished values and returns
`False` while the search wants another round (more rounds at a level,
the next level, or the extra level its verification buys). When the
search has made and checked its proposal, `finish` writes the proposal
and the final trials' baselines into the state and returns `True`; the
`"final"` phase trains them.

State and resume: the search object is never saved. What determines it
is the configuration (target, template, rounding, `config.isoflop`, the
oracle's seed) and the finished trials; the state keeps only how many
rounds were told (`state.phase_data["isoflop"]["rounds"]`). A resumed
oracle rebuilds the search by replaying those rounds in order, telling
each its trials' values (a trial is matched to the search's trial by its
`seed` hyperparameter, the search's trial index; a trial without a
finished value is told as failed), so it continues with the same search.
The rebuilt object is cached on the phase between calls.
"""

from keras_sovit.scaling.isoflop.search import IsoFlopSearch
from keras_sovit.scaling.results import largest_compute_rows
from keras_sovit.shapes import ShapeSpec
from keras_sovit.tuner.phases import Phase
from keras_sovit.tuner.phases import register_phase
from keras_sovit.tuner.phases import set_proposals
from keras_sovit.tuner.protocol import PhaseName
from keras_sovit.tuner.state import plain


@register_phase
class IsoFlop(Phase):
    """IsoFLOP levels, the optimum's path to the target, its verification.

    Trials: the rounds of `IsoFlopSearch` (by default central composite
    designs of 16 trials at T/4096, T/1024, T/256 and T/64, and T/32 when
    the proposal is not verified), each trial's `seed` its index in the
    search (the design's replicated centre points are distinct runs).
    Results: `state.proposals_` (the proposal, and the baselines the final
    trials ask for), `state.base_shape_` / `base_compute_` (the top level's
    optimum and its compute, the "x0" of the final comparison) and
    `state.proposal_info_` (method `"isoflop"`, the path's exponents, the
    levels, the expected regret, the verification and the compute the
    search planned, in units of the target).
    """

    name = PhaseName.ISOFLOP.value

    def __init__(self):
        self._cache = None  # (rounds told, search); see the module doc.

    def plan(self, context):
        return [context.trial(self.name, trial.shape, trial.compute,
                              seed=trial.trial_id)
                for trial in _round(self._search(context))]

    def finish(self, context):
        search = self._search(context)
        asked = _round(search)
        if asked:
            _tell(search, asked, _values(context, self.name))
            data = context.state.phase_data.setdefault(self.name, {})
            data["rounds"] = data.get("rounds", 0) + 1
            self._cache = (data["rounds"], search)
        if _round(search):  # The search wants another round: re-plan.
            return False
        _record(context, search)
        return True

    def _search(self, context):
        """The search after the rounds told so far (from the cache, or
        rebuilt by replay)."""
        rounds = context.state.phase_data.get(self.name, {}).get("rounds", 0)
        if self._cache is None or self._cache[0] != rounds:
            search = _new_search(context)
            values = _values(context, self.name)
            for _ in range(rounds):
                _tell(search, search.ask(), values)
            self._cache = (rounds, search)
        return self._cache[1]


def _new_search(context):
    config = context.config
    return IsoFlopSearch(
        config.target_compute, config.template,
        image_size=config.image_size, settings=config.isoflop,
        rounding=config.rounding, seed=context.seed, final_run=False,
    )


def _round(search):
    """The search's current round: asked (asking is idempotent while a
    round is out) and not told yet, in trial order."""
    search.ask()
    return [t for t in search.trials.values()
            if t.value is None and not t.failed]


def _values(context, phase):
    """Search trial index -> the finished value at the trial's budget
    (its largest-compute finished row)."""
    rows = largest_compute_rows(context.results(phase),
                                key=lambda row: int(row["seed"]))  # fmt: skip
    return {int(row["seed"]): float(row["metric_value"]) for row in rows}


def _tell(search, trials, values):
    for trial in trials:
        if trial.trial_id in values and values[trial.trial_id] > 0:
            search.tell(trial.trial_id, values[trial.trial_id])
        else:
            search.fail(trial.trial_id)


def _record(context, search):
    """The proposal, x0 and the diagnostics, into the state."""
    state = context.state
    grid = context.shape_grid
    top = search.levels[-1]
    base = search.snap(top.optimum, top.compute)
    state.base_shape_ = grid.snap_shape(base).to_dict()
    state.base_compute_ = float(top.compute)
    target = grid.snap_shape(search.proposal)
    set_proposals(context, target, ShapeSpec.from_dict(state.base_shape_),
                  state.base_compute_)
    result = search.result()
    result.pop("proposal")
    result["exponents"] = result.pop("exponents", None)  # d log x*/d log t
    state.proposal_info_ = plain(dict(result, method="isoflop"))
