"""Writes a run's outputs all at once, or not at all.

Files are staged in a temporary directory and moved into place only when every one of them is
written: a failed or interrupted run leaves no half-written file behind. A new output
directory appears in one rename; in an existing one, files are replaced one by one with
os.replace (each replacement is atomic).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from edgeq.errors import OutputExistsError


def check_free(out_dir: Path, names: list[str], overwrite: bool) -> None:
    """Fail before any work is done when an output would replace a file without --overwrite."""
    if overwrite:
        return
    for name in names:
        if (out_dir / name).exists():
            raise OutputExistsError(out_dir / name)


def write_outputs(out_dir: Path, files: dict[str, bytes], *, overwrite: bool) -> dict[str, Path]:
    out_dir = Path(out_dir)
    check_free(out_dir, list(files), overwrite)
    fresh = not out_dir.exists()
    stage_parent = out_dir.parent if fresh else out_dir
    stage_parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.edgeq-tmp-", dir=stage_parent))
    try:
        for name, data in files.items():
            with open(stage / name, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        if fresh:
            os.rename(stage, out_dir)
        else:
            for name in files:
                os.replace(stage / name, out_dir / name)
            stage.rmdir()
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return {name: out_dir / name for name in files}
