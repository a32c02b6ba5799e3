"""Scaling-law engine: sweep results, Eq. (2) fits, simulation and plans.

Pure numpy/scipy: importing this package never imports keras, tensorflow
or keras_tuner.
"""

from keras_sovit.scaling.paper.joint import JointLaw
from keras_sovit.scaling.paper.joint import on_search_bound
from keras_sovit.scaling.paper.joint import optimal_shape
from keras_sovit.scaling.paper.law import ShapeLaw
from keras_sovit.scaling.paper.plan import PAPER_EXPONENTS
from keras_sovit.scaling.paper.plan import PAPER_GRID_OPTIMUM
from keras_sovit.scaling.paper.plan import PAPER_GRID_SWEEP
from keras_sovit.scaling.paper.plan import PAPER_STAR_CENTER
from keras_sovit.scaling.paper.plan import PAPER_STAR_GRIDS
from keras_sovit.scaling.paper.plan import GridBoundaryError
from keras_sovit.scaling.paper.plan import Rounding
from keras_sovit.scaling.paper.plan import grid_sweep_plan
from keras_sovit.scaling.paper.plan import scale_shape
from keras_sovit.scaling.paper.plan import select_grid_optimum
from keras_sovit.scaling.paper.plan import star_sweep_plan
from keras_sovit.scaling.paper.star_sweep import StarSweepFit
from keras_sovit.scaling.paper.star_sweep import fit_star_sweep
from keras_sovit.scaling.plots import plot_scaling
from keras_sovit.scaling.plots import plot_star_sweep
from keras_sovit.scaling.results import SweepResults
from keras_sovit.scaling.truths.laws import EQ2_STAR_TRUTH
from keras_sovit.scaling.truths.laws import PAPER_LIKE_LAW
from keras_sovit.scaling.truths.laws import DataLimitedLaw
from keras_sovit.scaling.truths.laws import DecomposableLaw
from keras_sovit.scaling.truths.laws import eq2_loss
from keras_sovit.scaling.truths.laws import gflops_array
from keras_sovit.scaling.truths.laws import simulate
from keras_sovit.scaling.truths.laws import simulate_star
