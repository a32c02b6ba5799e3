"""Scaling-law engine: sweep results, Eq. (2) fits, simulation and plans.

Pure numpy/scipy: importing this package never imports keras, tensorflow
or keras_tuner.
"""

from keras_sovit.scaling.results import SweepResults
from keras_sovit.scaling.simulate import PAPER_LIKE_LAW
from keras_sovit.scaling.simulate import DataLimitedLaw
from keras_sovit.scaling.simulate import DecomposableLaw
from keras_sovit.scaling.simulate import gflops_array
from keras_sovit.scaling.simulate import simulate

try:
    from keras_sovit.scaling.law import ShapeLaw
    from keras_sovit.scaling.law import StarSweepFit
    from keras_sovit.scaling.law import fit_star_sweep
except ImportError:  # law.py not written yet on this branch.
    pass
