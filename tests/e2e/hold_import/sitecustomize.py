"""Test helper, loaded by Python at start-up when this folder is on PYTHONPATH: the first
import of the module named by $HOLD_IMPORT (in any process of the run) writes $HOLD_MARKER
and then waits there, so a test can send Ctrl-C at exactly that point instead of after a
guessed delay. The KeyboardInterrupt comes out of the import statement as a real one would."""

import os
import sys
import time

_NAME = os.environ.get("HOLD_IMPORT")
_MARKER = os.environ.get("HOLD_MARKER")


class _Hold:
    def find_spec(self, name, path=None, target=None):
        if name == _NAME and not os.path.exists(_MARKER):
            with open(_MARKER + ".tmp", "w") as fh:
                fh.write(str(os.getpid()))
            os.replace(_MARKER + ".tmp", _MARKER)
            while True:  # until the signal arrives
                time.sleep(0.01)
        return None


if _NAME and _MARKER:
    sys.meta_path.insert(0, _Hold())
