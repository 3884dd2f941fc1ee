"""Leslie Smith's LR range test (fastai `lr_find`, pytorch-lr-finder), done right for Keras.

`sweep` and `suggest` are pure functions of arrays; `runner` drives a Keras model (imports
TensorFlow, so it is not imported here).
"""

from lrsearch.range_test.suggest import Suggestions, combine, family_bounds, suggest
from lrsearch.range_test.sweep import SweepSettings, SweepTracker, ladder, smooth

__all__ = [
    "Suggestions",
    "SweepSettings",
    "SweepTracker",
    "combine",
    "family_bounds",
    "ladder",
    "smooth",
    "suggest",
]
