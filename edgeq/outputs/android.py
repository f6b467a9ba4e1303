"""Android export: the files an app's `assets/` folder takes for a LiteRT model.

`model.tflite` (the converted model), `model.json` (what the app must know to feed it and read
it: input/output names, shapes, dtypes, scale and zero-point, and the normalisation the model
was calibrated with) and `labels.txt` (one class name per line, index = output position) when
labels are known. The JSON is written with sorted keys so that the same model gives the same
bytes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from edgeq.data import Preprocess
from edgeq.errors import DataError
from edgeq.formats.tflite import ModelInfo, TensorInfo
from edgeq.outputs.text import check_one_line, terminal

MODEL = "model.tflite"
DESCRIPTION = "model.json"
LABELS = "labels.txt"


def android_names(with_labels: bool) -> list[str]:
    return [MODEL, DESCRIPTION, *([LABELS] if with_labels else [])]


def read_labels(path: str | Path) -> tuple[str, ...]:
    """One label per line ('\n' or '\r\n'; blank lines at the end ignored).

    Raises:
        DataError: missing, empty, not UTF-8 text, or a label holding a control character
            (a lone CR, a form feed, a Unicode line separator: a reader would split it) (exit 2).
    """
    from edgeq.formats.input_files import LABELS_MAX, read_file

    p = Path(path)
    data = read_file(p, "--labels", LABELS_MAX,
                     hint="pass a text file, one class per line")
    try:
        # Split on '\n' alone, from bytes: splitlines() and read_text's universal newlines
        # also break at a lone CR, VT, FF, NEL or U+2028, which an app reading labels.txt by
        # lines may not; such a label is refused below instead of becoming two.
        lines = [line.removesuffix("\r") for line in data.decode("utf-8").split("\n")]
    except UnicodeDecodeError as exc:
        raise DataError(p, "labels file is not UTF-8 text",
                        hint="save it as UTF-8, one class per line") from exc
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise DataError(p, "labels file is empty", hint="one class name per line")
    labels = tuple(line.strip() for line in lines)
    _check_labels(labels, p)
    return labels


def _check_labels(labels: tuple[str, ...], source: str | Path) -> None:
    for i, label in enumerate(labels):
        why = check_one_line(label)
        if why is not None:
            raise DataError(source, f"label {i} '{terminal(label)}' {why}",
                            hint="one class name per line, without control characters")


def android_files(model: bytes, info: ModelInfo, preprocess: Preprocess,
                  labels: tuple[str, ...] | None, *, source: str, target: str,
                  threads: int) -> dict[str, bytes]:
    """The app's assets, by file name.

    Raises:
        DataError: the number of labels does not match the model's output classes (exit 2).
    """
    classes = info.output_tensors[0].shape[-1] if info.output_tensors[0].shape else 1
    if labels is not None:
        _check_labels(labels, "--labels")  # class folder names too: one line per label
    if labels is not None and len(labels) != classes:
        raise DataError("--labels", f"{len(labels)} labels for a model with {classes} output "
                        "classes", hint="give one label per output class, in output order")
    description: dict[str, Any] = {
        "format": "edgeq-android/1",
        "model": MODEL,
        "model_sha256": hashlib.sha256(model).hexdigest(),
        "source": source,
        "target": target,
        "runtime": {"name": "LiteRT", "delegate": "xnnpack", "threads": threads},
        "inputs": [_tensor(t) | {"normalization": _normalization(preprocess)}
                   for t in info.input_tensors],
        "outputs": [_tensor(t) for t in info.output_tensors],
        "labels": LABELS if labels is not None else None,
    }
    files = {MODEL: model,
             DESCRIPTION: (json.dumps(description, indent=2, sort_keys=True) + "\n").encode()}
    if labels is not None:
        files[LABELS] = ("\n".join(labels) + "\n").encode()
    return files


def _tensor(t: TensorInfo) -> dict[str, Any]:
    quant = None
    if t.scales and t.dtype in ("int8", "uint8", "int16"):
        quant = {"scale": t.scales[0], "zero_point": t.zero_points[0]} if len(t.scales) == 1 \
            else {"scales": list(t.scales), "zero_points": list(t.zero_points)}
    return {"name": t.name, "shape": list(t.shape), "dtype": t.dtype, "quantization": quant}


def _normalization(p: Preprocess) -> dict[str, Any]:
    return {"formula": "x = (raw * scale - mean) / std, per channel on the last axis",
            "scale": p.scale, "mean": list(p.mean), "std": list(p.std)}
