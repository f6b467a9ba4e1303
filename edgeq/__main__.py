"""`python -m edgeq` runs the command line."""

import os
import sys

# `python -m` put the working directory first on the import path, so a json.py or random.py
# lying there would run inside edgeq. Nothing has been imported from it yet (Python 3.11+
# starts from frozen modules; edgeq/__init__.py imports nothing), so take it off before anything
# is. The `edgeq` command never had it there (its first entry is the script's folder); under
# -I or -P there is none. On Python 3.10, `python -m` reads runpy from that path itself: use
# `edgeq` or `python -I -m edgeq` there.
if not (sys.flags.isolated or getattr(sys.flags, "safe_path", False)) and sys.path \
        and os.path.realpath(sys.path[0] or ".") == os.path.realpath(os.getcwd()):
    del sys.path[0]

from edgeq.entry import main  # noqa: E402 - after the path is safe, on purpose

sys.exit(main())
