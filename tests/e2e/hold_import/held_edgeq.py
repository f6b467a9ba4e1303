"""Test helper: the supervised child of `edgeq convert` with the hold of sitecustomize.py in
place, then edgeq run as the real child runs it. edgeq starts its children isolated (-I), which
ignores PYTHONPATH and so this folder's sitecustomize; a test that holds the child passes its
own child command to the supervisor (`supervise.run(argv, command=spawn.python_command(
"held_edgeq", *argv))`), which finds this module on the parent's import path."""

import runpy
from pathlib import Path

runpy.run_path(str(Path(__file__).with_name("sitecustomize.py")))  # the hold, by file
runpy.run_module("edgeq", run_name="__main__", alter_sys=True)
