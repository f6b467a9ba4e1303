"""Float-model constructs that TensorFlow's full-integer calibrator crashes or fails on.

Full-integer conversion hands the converter's float TFLite model to TF's calibrator
(tensorflow/lite/python/optimize/calibrator.py, C++ CalibrationWrapper), which runs it in an
interpreter that logs every op's output. Two kinds of graph get no useful error there:

- A WHILE loop whose body passes a loop value through unchanged (body output i is body input
  i). This is what a Keras SimpleRNN, LSTM or GRU that is not unrolled becomes: the body keeps
  the input sequence as a loop value it only reads. The calibrator then reads a tensor the WHILE
  kernel has already released and the process dies of SIGSEGV, with no message
  (tensorflow/tensorflow#75140, open; reproduced with TF 2.21 and the plain converter on a
  batch-1 concrete function). Loops whose values all change (a counter and an accumulator)
  calibrate fine, so only the pass-through case is refused. With ``unroll=True`` the layers
  become straight-line ops (UNPACK, FULLY_CONNECTED, TANH, ...) and convert.
- Resource-variable ops (VAR_HANDLE, READ_VARIABLE, ASSIGN_VARIABLE): state kept between
  calls, as a stateful RNN does. The calibrator's interpreter has no variables to read and fails
  with "read_variable.cc: variable != nullptr was not true ... (READ_VARIABLE) failed to invoke",
  and the edge runtimes edgeq targets have no such state either.

`calibration_problem` finds them in the float model so that edgeq stops with the op, the layer
and the fix before the calibrator runs, instead of a native crash.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeq.formats.tflite_schema import enum_names as _enum_names
from edgeq.formats.tflite_schema import schema as _schema

VARIABLE_OPS = ("VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE")
ISSUE = "tensorflow/tensorflow#75140"


@dataclass(frozen=True)
class CalibrationProblem:
    op: str  # the TFLite builtin name
    where: str  # the loop or layer it comes from, as the converter named it
    detail: str  # why the calibrator cannot take it
    fix: str


def calibration_problem(float_model: bytes) -> CalibrationProblem | None:
    """The first construct in ``float_model`` (a float TFLite flatbuffer the converter just
    made) that TF's calibrator crashes or fails on; None when there is none.

    Reads the flatbuffer lazily (no weights are copied): this runs on every full-integer
    conversion, just before calibration.
    """
    schema = _schema()
    names = _enum_names("BuiltinOperator")
    model = schema.Model.GetRootAs(float_model, 0)
    codes = [_builtin_code(model.OperatorCodes(i)) for i in range(model.OperatorCodesLength())]
    subgraphs = [model.Subgraphs(i) for i in range(model.SubgraphsLength())]
    for sg in subgraphs:
        for k in range(sg.OperatorsLength()):
            op = sg.Operators(k)
            name = names.get(codes[op.OpcodeIndex()], "?") if op.OpcodeIndex() < len(codes) \
                else "?"
            if name in VARIABLE_OPS:
                tensor = sg.Tensors(op.Outputs(0)) if op.OutputsLength() else None
                return variable_problem(name, f"tensor '{_text(tensor.Name())}'" if tensor else "")
            if name == "WHILE":
                body = _while_body(schema, op, subgraphs)
                if body is not None and _passes_through(body):
                    return _loop_problem(_text(body.Name()))
    return None


def _builtin_code(code) -> int:
    # Codes past 127 live in BuiltinCode; DeprecatedBuiltinCode holds the small ones only.
    return max(code.BuiltinCode(), code.DeprecatedBuiltinCode())


def _while_body(schema, op, subgraphs):
    table = op.BuiltinOptions()
    if table is None:
        return None
    options = schema.WhileOptions()
    options.Init(table.Bytes, table.Pos)
    index = options.BodySubgraphIndex()
    return subgraphs[index] if 0 <= index < len(subgraphs) else None


def _passes_through(body) -> bool:
    inputs = [body.Inputs(i) for i in range(body.InputsLength())]
    outputs = [body.Outputs(i) for i in range(body.OutputsLength())]
    return any(i == o for i, o in zip(inputs, outputs))


def _loop_problem(body_name: str) -> CalibrationProblem:
    # The converter names a Keras RNN's loop body "<model>/<layer>/while_body" (Keras 3) or
    # "while;<model>/<layer>/PartitionedCall/while_body" (tf_keras: fused names, call wrappers).
    scope, _, _ = body_name.rpartition("/while_body")
    scope = "/".join(part for part in scope.rpartition(";")[2].split("/")
                     if part not in ("PartitionedCall", "StatefulPartitionedCall"))
    # The scope is the traced one (Keras 3 adds "_1" to both names), so it is quoted as is.
    where = f"the loop in '{scope}', a recurrent layer that is not unrolled" if scope \
        else f"the loop '{body_name}'"
    return CalibrationProblem(
        "WHILE", where,
        "TensorFlow's full-integer calibrator crashes (SIGSEGV) on loops that pass a value "
        f"through unchanged ({ISSUE}), so edgeq stops before it",
        "build the SimpleRNN/LSTM/GRU layer with unroll=True (its time steps become plain ops; "
        "the sequence length must be fixed) and convert again")


def variable_problem(op: str, at: str = "") -> CalibrationProblem:
    """Resource-variable state; ``at`` says where ("layer 'rnn'", "tensor 'x'")."""
    return CalibrationProblem(
        op, f"stateful RNN or resource-variable ops{f', {at}' if at else ''}",
        "the model keeps state in variables between calls, which TensorFlow's full-integer "
        "calibrator cannot run and the edge runtimes do not keep",
        "build recurrent layers with stateful=False and unroll=True, and pass any state in "
        "and out as model inputs and outputs")


def _text(value) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value or "")
