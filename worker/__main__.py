"""`python -m worker` is `lrsearch worker`."""

import sys

from service.cli import main

sys.exit(main(["worker", *sys.argv[1:]]))
