"""KerasTuner integration: the shape oracle and the SoViT hypermodel.

`ShapeOracle` walks registered phases (`phases.py`; the default IsoFLOP
search in `isoflop_phase.py`) under a frozen
`SearchConfig` (`config.py`), keeps what it found in a `SearchState`
(`state.py`) and proposes with a registered `ProposalRule`
(`proposals.py`); `protocol.py` names what a trial carries.
"""

from keras_sovit.tuner import isoflop_phase  # noqa: F401 (registers it)
from keras_sovit.tuner.config import SearchConfig
from keras_sovit.tuner.defaults import default_plan
from keras_sovit.tuner.hypermodel import SoViTHyperModel
from keras_sovit.tuner.phases import Phase
from keras_sovit.tuner.phases import SearchContext
from keras_sovit.tuner.phases import register_phase
from keras_sovit.tuner.proposals import Observations
from keras_sovit.tuner.proposals import ProposalRule
from keras_sovit.tuner.proposals import register_proposal_rule
from keras_sovit.tuner.protocol import ISOFLOP_PHASES
from keras_sovit.tuner.protocol import PAPER_PHASES
from keras_sovit.tuner.protocol import PhaseName
from keras_sovit.tuner.protocol import checkpoint_metric_name
from keras_sovit.tuner.shape_oracle import ShapeOracle
from keras_sovit.tuner.shape_search import ShapeSearch
from keras_sovit.tuner.state import SearchState

__all__ = [
    "ISOFLOP_PHASES",
    "PAPER_PHASES",
    "Observations",
    "Phase",
    "PhaseName",
    "ProposalRule",
    "SearchConfig",
    "SearchContext",
    "SearchState",
    "ShapeOracle",
    "ShapeSearch",
    "SoViTHyperModel",
    "checkpoint_metric_name",
    "default_plan",
    "register_phase",
    "register_proposal_rule",
]
