"""`python -m edgeq` runs the command line."""

import sys

from edgeq.entry import main

sys.exit(main())
