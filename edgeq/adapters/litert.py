"""LiteRT (ai-edge-litert) interpreter: runs integer models on the host and times them.

The deprecated `tf.lite.Interpreter` is not used. LiteRT applies XNNPACK as its default
delegate on CPU (`OpResolverType.AUTO`), which is what an Android/Linux ARM app gets.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from edgeq.adapters.io_quant import dequantize, quantize
from edgeq.adapters.native import capture_fds
from edgeq.errors import ConversionError, MissingDependencyError
from edgeq.formats.tflite import ModelInfo, read_model


def _interpreter_module() -> Any:
    try:
        from ai_edge_litert import interpreter
    except ImportError as exc:
        raise MissingDependencyError("ai-edge-litert", "pip install ai-edge-litert") from exc
    return interpreter


def version() -> str:
    try:
        import ai_edge_litert
    except ImportError:
        return "not installed"
    return getattr(ai_edge_litert, "__version__", "unknown")


class LiteRTRunner:
    """One interpreter per model; `run` takes float samples and returns float outputs."""

    runtime = "litert"

    def __init__(self, model: bytes, *, threads: int = 1, xnnpack: bool = True,
                 source: str = "model") -> None:
        from edgeq.formats.kernel_limits import check_scales

        mod = _interpreter_module()
        check_scales(read_model(model, source), source, "litert")  # LiteRT aborts on these
        resolver = (
            mod.OpResolverType.AUTO if xnnpack else mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
        try:
            with capture_fds() as captured:
                self._interp = mod.Interpreter(
                    model_content=model, num_threads=threads, experimental_op_resolver_type=resolver
                )
                self._interp.allocate_tensors()
        except (RuntimeError, ValueError) as exc:
            raise ConversionError("verify (LiteRT)", str(exc).strip().splitlines()[0]) from exc
        self.log = captured.text
        self.threads = threads
        self.xnnpack = xnnpack
        self._in = self._interp.get_input_details()[0]
        self._outs = self._interp.get_output_details()

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """Runs every sample of `x` (N, ...) one at a time (batch 1); one array per output."""
        outputs: list[list[np.ndarray]] = [[] for _ in self._outs]
        for sample in x:
            self._interp.set_tensor(self._in["index"], quantize(sample[None], self._in))
            self._interp.invoke()
            for k, det in enumerate(self._outs):
                outputs[k].append(dequantize(self._interp.get_tensor(det["index"]), det)[0])
        return [np.stack(o) for o in outputs]

    def latency_ms(self, sample: np.ndarray, *, warmup: int = 20, runs: int = 50,
                   rounds: int = 5, budget_s: float = 3.0) -> tuple[float, int]:
        """Host latency of `invoke` on one sample: the lowest of ``rounds`` medians of up to
        ``runs`` timed invokes each, after ``warmup`` untimed ones; and the number of timed
        runs. The rounds share ``budget_s`` seconds (at least 5 runs each).

        Load from other processes only ever adds time, so the quietest round is the figure
        that repeats; a regression gate compares it (edgeq.commands.verify).
        """
        self._interp.set_tensor(self._in["index"], quantize(sample[None], self._in))
        for _ in range(warmup):
            self._interp.invoke()
        medians, total = [], 0
        for _ in range(rounds):
            times = []
            deadline = time.perf_counter() + budget_s / rounds
            while len(times) < runs and (len(times) < 5 or time.perf_counter() < deadline):
                t0 = time.perf_counter()
                self._interp.invoke()
                times.append((time.perf_counter() - t0) * 1000.0)
            medians.append(statistics.median(times))
            total += len(times)
        return min(medians), total


class TensorProbe:
    """Runs a model one sample at a time and hands back its intermediate activations as float
    (integer tensors dequantized), by tensor name.

    XNNPACK fuses ops and hides intermediates, so this uses the builtin kernels without
    delegates and asks LiteRT to keep every tensor.
    """

    _KINDS = (np.float32, np.int8, np.uint8, np.int16)

    def __init__(self, model: bytes, info: ModelInfo | None = None) -> None:
        mod = _interpreter_module()
        with capture_fds():
            self._interp = mod.Interpreter(
                model_content=model, num_threads=1,
                experimental_op_resolver_type=mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                experimental_preserve_all_tensors=True,
            )
            self._interp.allocate_tensors()
        self._in = self._interp.get_input_details()[0]
        info = info if info is not None else read_model(model)
        constants = {t.index for t in info.tensors if t.constant_bytes > 0}
        self._details = {
            d["name"]: d
            for d in self._interp.get_tensor_details()
            if d["index"] not in constants and d["name"]
            and any(np.dtype(d["dtype"]) == k for k in self._KINDS)
            and (np.dtype(d["dtype"]) == np.float32 or _params_present(d))
        }
        self.names = tuple(self._details)

    def run(self, sample: np.ndarray) -> dict[str, np.ndarray]:
        self._interp.set_tensor(self._in["index"], quantize(sample[None], self._in))
        self._interp.invoke()
        return {name: dequantize(self._interp.get_tensor(d["index"]), d)
                for name, d in self._details.items()}


def _params_present(detail: dict) -> bool:
    scales = detail.get("quantization_parameters", {}).get("scales", ())
    return len(scales) == 1

