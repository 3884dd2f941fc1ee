"""`python -m lrsearch.cli ARGS` is `lrsearch ARGS` (how `lrsearch serve` starts its workers)."""

import sys

from lrsearch.cli import main

sys.exit(main())
