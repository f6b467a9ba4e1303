"""What every loader needs: the model's input spec, where the data came from and what it must
fit (role, sample and memory limits), and the one way to phrase a data error."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from edgeq.errors import DataError

MAX_BYTES = 4 * 1024**3  # data is held in memory; past this a subset serves calibration better



OPTION_FOR_ROLE = {
    "calibration": "--data", "evaluation": "--eval-data", "training": "--train-data"
}



@dataclass(frozen=True)
class InputSpec:
    """What the model expects of one sample, built by the caller from the model signature."""

    shape: tuple[int, ...]  # per sample, without the batch axis, e.g. (28, 28, 1)
    dtype: str = "float32"  # numpy name of the model's float input dtype
    name: str = "input"



@dataclass(frozen=True)
class LoadContext:
    """What every loader needs: where the data came from and what it must fit."""

    source: str
    role: str
    spec: InputSpec
    max_samples: int | None
    max_bytes: int
    require_labels: bool
    classes: int | None = None  # labels must lie in [0, classes) when known

    @property
    def option(self) -> str:
        return OPTION_FOR_ROLE.get(self.role, "the data option")

    def error(self, message: str, hint: str | None = None) -> DataError:
        return DataError(self.source, f"({self.role}) {message}", hint=hint)

    def check_path(self, path: str | Path, *, directory_ok: bool = True) -> os.stat_result:
        """The stat of a data path (the option's own, or a file inside an image folder) when
        it names a regular file (or a directory, where one is due), through links; a FIFO,
        device or socket is refused naming the option (edgeq.formats.input_files)."""
        from edgeq.formats.input_files import check_file, check_file_or_dir

        check = check_file_or_dir if directory_ok else check_file
        return check(path, self.option, error=self._path_error,
                     hint=f"check the path given to {self.option}")

    def _path_error(self, path: str | Path, message: str, *, hint: str | None = None
                    ) -> DataError:
        where = "" if str(path) == self.source else f"'{path}' "
        return self.error(where + message, hint)

    def rows(self, n: int) -> int:
        return n if self.max_samples is None else min(n, self.max_samples)

    def check_labels(self, has_labels: bool, hint: str) -> None:
        # Checked before reading any samples, so a large file fails fast.
        if self.require_labels and not has_labels:
            raise self.error(f"{self.role} data needs labels `y`, and this data has none", hint)

    def check_size(self, nbytes: int, what: str) -> None:
        if nbytes > self.max_bytes:
            raise self.error(
                f"{what} needs {nbytes / 1024**3:.1f} GiB in memory, over the "
                f"{self.max_bytes / 1024**3:.1f} GiB limit",
                hint="use a subset: a few hundred samples calibrate a model and a few thousand "
                "evaluate it",
            )
