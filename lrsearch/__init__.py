"""lrsearch: learning-rate schedule search for Keras models.

Importing this package is cheap: it never imports TensorFlow. The Keras parts live in leaf
modules (`lrsearch.schedules.keras`, `lrsearch.range_test.runner`, `lrsearch.models`,
`lrsearch.training`) that are imported only by code that trains.
"""

from lrsearch.errors import LRSearchError

__version__ = "0.1.0"
__all__ = ["LRSearchError", "__version__"]
