"""Scaling-law engine: sweep results, Eq. (2) fits, simulation and plans.

Pure numpy/scipy: importing this package never imports keras, tensorflow
or keras_tuner.
"""

from keras_sovit.scaling.joint import JointLaw
from keras_sovit.scaling.joint import on_search_bound
from keras_sovit.scaling.joint import optimal_shape
from keras_sovit.scaling.law import ShapeLaw
from keras_sovit.scaling.law import StarSweepFit
from keras_sovit.scaling.law import fit_star_sweep
from keras_sovit.scaling.plan import PAPER_EXPONENTS
from keras_sovit.scaling.plan import PAPER_GRID_OPTIMUM
from keras_sovit.scaling.plan import PAPER_GRID_SWEEP
from keras_sovit.scaling.plan import PAPER_STAR_CENTER
from keras_sovit.scaling.plan import PAPER_STAR_GRIDS
from keras_sovit.scaling.plan import GridBoundaryError
from keras_sovit.scaling.plan import Rounding
from keras_sovit.scaling.plan import grid_sweep_plan
from keras_sovit.scaling.plan import scale_shape
from keras_sovit.scaling.plan import select_grid_optimum
from keras_sovit.scaling.plan import star_sweep_plan
from keras_sovit.scaling.plots import plot_scaling
from keras_sovit.scaling.plots import plot_star_sweep
from keras_sovit.scaling.results import SweepResults
from keras_sovit.scaling.simulate import EQ2_STAR_TRUTH
from keras_sovit.scaling.simulate import PAPER_LIKE_LAW
from keras_sovit.scaling.simulate import DataLimitedLaw
from keras_sovit.scaling.simulate import DecomposableLaw
from keras_sovit.scaling.simulate import eq2_loss
from keras_sovit.scaling.simulate import gflops_array
from keras_sovit.scaling.simulate import simulate
from keras_sovit.scaling.simulate import simulate_star
