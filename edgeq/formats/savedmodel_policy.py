"""What a SavedModel may do before edgeq loads it: its files and its graph, read as data.

`tf.saved_model.load` runs no Python from the file, but it does run the file's graph: resource
initializers and `__saved_model_init_op` while loading, the saver's restore op for TF1-style
models, and edgeq then traces and calls the serving signature for calibration and reference
outputs. TensorFlow ops can touch the world outside the graph, so a crafted SavedModel could
write or read files (`WriteFile`, `ReadFile`, `tf.print(..., output_stream="file://...")`, a
summary writer, `CacheDataset`), run Python (`PyFunc`), reach the network (`RpcClient`,
data-service datasets) or end the process (`Abort`) the moment edgeq touches it.

So before TensorFlow loads anything, `check_savedmodel`:

1. Walks the directory without following links: a symbolic link is refused (it could point the
   loader's variable reads at any file, whose bytes would end up in the converted model), as is
   anything that is not a regular file or directory (a FIFO would stall the loader).
   `saved_model.pb` must be under 1 GiB (protobuf cannot parse past 2 GiB; an edge model's
   graph is kilobytes to megabytes) and the variables under 2 GiB (the most a TFLite flatbuffer
   holds).
2. Parses `saved_model.pb` with TensorFlow's own protobuf classes (this imports TensorFlow, as
   loading would next) and lists the op of every node of every graph and of every function in
   its library, with the function or node it sits in.
3. Refuses, with exit 2 naming the function (or graph node) and the op, any op of `DENIED`
   unless `--allow-unsafe`. The one legitimate use of such ops is TF's checkpoint machinery:
   the saver's restore op (`saver_def.restore_op_name`, run by the TF1 loader) may read
   checkpoints (`RestoreV2`), and the save function, which no loader runs, may also write them
   (`SaveV2`, `MergeV2Checkpoints`). Everything else - the serving signatures, the init ops,
   the functions the object graph names, functions nothing calls - may use neither.
4. Refuses, with exit 3, an op that allocates a tensor past the memory limit from a shape
   the graph fixes as constants (`tf.fill([30000, 30000], 1.0)`: edgeq.formats.savedmodel_alloc),
   with or without `--allow-unsafe` (it is a size, not code).

Why a deny-list and not an allow-list: the compute ops a model may use number in the hundreds
and grow with each TF release (an allow-list would refuse good models after every upgrade),
while ops with effects outside the graph are few and named for what they do. The list below
was built from TF's op registrations (tensorflow/core/ops/io_ops.cc, logging_ops.cc,
summary_ops.cc, script_ops.cc, debug_ops.cc, lookup_ops.cc, dataset_ops.cc,
experimental_dataset_ops.cc, rpc_ops.cc, checkpoint_ops.cc) by reading the 555 ops the installed
TF 2.21 registers as stateful (`SetIsStateful`) plus the I/O ops that are not marked stateful
(`ReadFile`, `MatchingFiles`, `DebugIdentity`); tests/integration/test_savedmodel_policy.py
checks that every name is a registered op and that every registered op whose name says file,
reader, writer, save, restore, summary, debug, print, Python or RPC is either listed here or
reviewed as harmless there, so a TF upgrade that adds one fails a test instead of passing
silently. Ops that only waste time (`SleepDataset`) are left to the stage time limits.

`keras_metadata.pb` (written by tf.keras next to the graph) is not read: only tf_keras's own
loader uses it, and edgeq loads SavedModel directories with `tf.saved_model.load` alone.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from edgeq.errors import ModelFileError, UnsafeModelError

MAX_GRAPH_BYTES = 1 << 30
MAX_VARIABLES_BYTES = 2 << 30
MAX_ENTRIES = 10_000  # files and directories in the SavedModel directory

_FILES = "reads or writes files"
_CHECKPOINT = "reads or writes checkpoint files"
_SUMMARY = "writes summary or debug files"
_PYTHON = "runs Python code"
_NETWORK = "opens network connections"

DENIED: dict[str, str] = {
    # io_ops.cc, checkpoint_ops.cc and friends: the file system.
    **dict.fromkeys(
        ("ReadFile", "WriteFile", "MatchingFiles", "ImmutableConst", "FileSystemSetConfiguration",
         "WholeFileReader", "WholeFileReaderV2", "TextLineReader", "TextLineReaderV2",
         "FixedLengthRecordReader", "FixedLengthRecordReaderV2", "TFRecordReader",
         "TFRecordReaderV2", "LMDBReader", "InitializeTableFromTextFile",
         "InitializeTableFromTextFileV2", "LoadAndRemapMatrix", "GenerateVocabRemapping",
         "DumpTensor", "CalibrationStatisticsSaver", "DecodeProtoV2", "EncodeProto",
         "RecordInput",
         # tf.data sources and sinks that name files
         "TFRecordDataset", "TFRecordDatasetV2", "TextLineDataset", "FixedLengthRecordDataset",
         "FixedLengthRecordDatasetV2", "CSVDataset", "CSVDatasetV2", "ExperimentalCSVDataset",
         "LMDBDataset", "ExperimentalLMDBDataset", "SqlDataset", "ExperimentalSqlDataset",
         "MatchingFilesDataset", "ExperimentalMatchingFilesDataset", "CacheDataset",
         "CacheDatasetV2", "SaveDataset", "SaveDatasetV2", "LoadDataset", "SnapshotDataset",
         "SnapshotDatasetV2", "SnapshotDatasetReader", "SnapshotNestedDatasetReader",
         "SnapshotChunkDataset", "ListSnapshotChunksDataset", "DistributedSave",
         "DatasetToTFRecord", "ExperimentalDatasetToTFRecord"), _FILES),
    **dict.fromkeys(("Save", "SaveV2", "SaveSlices", "Restore", "RestoreV2", "RestoreSlice",
                     "MergeV2Checkpoints", "DTensorRestoreV2"), _CHECKPOINT),
    # summary_ops.cc, debug_ops.cc: event files and tensor dumps (debug_urls "file://...").
    **dict.fromkeys(
        ("CreateSummaryFileWriter", "CreateSummaryDbWriter", "WriteSummary",
         "WriteScalarSummary", "WriteHistogramSummary", "WriteImageSummary", "WriteAudioSummary",
         "WriteGraphSummary", "WriteRawProtoSummary", "ImportEvent", "FlushSummaryWriter",
         "StatsAggregatorSetSummaryWriter", "DebugIdentity", "DebugIdentityV2",
         "DebugIdentityV3", "DebugNanCount", "DebugNumericSummary", "DebugNumericSummaryV2"),
        _SUMMARY),
    **dict.fromkeys(("PyFunc", "PyFuncStateless", "EagerPyFunc"), _PYTHON),
    **dict.fromkeys(("RpcClient", "RpcCall", "RpcServer", "RpcServerRegister", "RpcServerStart",
                     "DataServiceDataset", "DataServiceDatasetV2", "DataServiceDatasetV3",
                     "DataServiceDatasetV4", "RegisterDataset", "RegisterDatasetV2"),
                    _NETWORK),
    "Abort": "ends the process",
    # Graphs built at run time from a string escape this inspection.
    "DatasetFromGraph": "builds a graph from a string at run time, which edgeq cannot inspect",
    "XlaCallModule": "runs a serialized StableHLO module, which edgeq cannot inspect",
}
CHECKPOINT_READS = frozenset({"RestoreV2", "Restore", "RestoreSlice"})
CHECKPOINT_WRITES = frozenset({"SaveV2", "Save", "SaveSlices", "MergeV2Checkpoints"})
# tf.print's streams other than these are file paths ("file://...").
_PRINT_STREAMS = frozenset({"stderr", "stdout", "log(info)", "log(warning)", "log(error)"})


@dataclass(frozen=True)
class UnsafeOp:
    op: str
    where: str  # "function '__inference_f_12'" or "graph node 'x'"
    node: str  # the node's name inside it
    reason: str

    def describe(self) -> str:
        node = "" if self.where.startswith("graph node") else f"node '{self.node}': "
        return f"{self.where} runs op {self.op} ({node}{self.reason})"


def check_savedmodel(path: str | Path, *, allow_unsafe: bool = False) -> None:
    """Refuse a SavedModel directory whose files or graph could act outside the model.

    Raises:
        ModelFileError: saved_model.pb or the variables over the size limits, a FIFO or device
            inside, or a graph protobuf that does not parse.
        TensorSizeError: an op allocating past the limit from a constant shape
            (edgeq.formats.savedmodel_alloc), with or without ``allow_unsafe``.
        UnsafeModelError: a symbolic link inside, or an op of `DENIED` where TensorFlow would
            run it, and ``allow_unsafe`` is not set.
    """
    from edgeq.adapters.native import import_tensorflow_quietly
    from edgeq.formats.keras_sizes import activation_limit
    from edgeq.formats.savedmodel_alloc import check_allocations

    p = Path(path)
    graph_file = _check_files(p, allow_unsafe)
    import_tensorflow_quietly()
    saved = _parse(p, graph_file)
    check_allocations(p, saved, activation_limit())
    if allow_unsafe:
        return
    found = unsafe_ops(saved)
    if found:
        more = f" (and {len(found) - 1} more such op(s))" if len(found) > 1 else ""
        raise UnsafeModelError(
            p, f"{found[0].describe()}{more}; TensorFlow would run it when edgeq loads or calls "
            "the model",
            hint="a model for conversion needs no such op: re-export it without them, or pass "
            "--allow-unsafe only if you trust where this SavedModel came from")


def _check_files(p: Path, allow_unsafe: bool) -> Path:
    variables = 0
    entries = 0
    for root, dirs, files in os.walk(p, followlinks=False):
        for name in (*dirs, *files):
            entries += 1
            if entries > MAX_ENTRIES:
                raise ModelFileError(p, f"holds more than {MAX_ENTRIES:,} files",
                                     hint="pass a SavedModel directory as model.export() writes it")
            full = Path(root, name)
            rel = full.relative_to(p).as_posix()
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                if not allow_unsafe:
                    raise UnsafeModelError(
                        p, f"'{rel}' is a symbolic link; the loader would read whatever it points "
                        "at into the model",
                        hint="copy the real files into the directory, or pass --allow-unsafe only "
                        "if you trust where this SavedModel came from")
                continue
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                raise ModelFileError(p, f"'{rel}' is not a regular file")
            if rel.startswith("variables/") and stat.S_ISREG(st.st_mode):
                variables += st.st_size
    if variables > MAX_VARIABLES_BYTES:
        raise ModelFileError(
            p, f"its variables hold {_gib(variables)}; a TFLite model holds at most "
            f"{_gib(MAX_VARIABLES_BYTES)}", hint="use a smaller model")
    graph_file = p / "saved_model.pb"
    if not graph_file.is_file():
        graph_file = p / "saved_model.pbtxt"
    size = graph_file.stat().st_size
    if size > MAX_GRAPH_BYTES:
        raise ModelFileError(
            p, f"{graph_file.name} is {_gib(size)}, over edgeq's {_gib(MAX_GRAPH_BYTES)} limit "
            "for a model graph", hint="an edge model's graph is megabytes; re-export the model "
            "with its weights in variables/, not as constants")
    return graph_file


def _parse(p: Path, graph_file: Path) -> Any:
    from google.protobuf import message, text_format
    from tensorflow.core.protobuf import saved_model_pb2

    from edgeq.formats.input_files import open_file

    # Bounded, and checked again as opened: the file may have changed since it was walked.
    fh, _ = open_file(graph_file, "model", MAX_GRAPH_BYTES, error=ModelFileError)
    with fh:
        data = fh.read(MAX_GRAPH_BYTES + 1)
    if len(data) > MAX_GRAPH_BYTES:
        raise ModelFileError(p, f"{graph_file.name} grew past {_gib(MAX_GRAPH_BYTES)} while read")
    saved = saved_model_pb2.SavedModel()
    try:
        if graph_file.suffix == ".pbtxt":
            text_format.Parse(data.decode("utf-8"), saved)
        else:
            saved.ParseFromString(data)
    except (message.DecodeError, text_format.ParseError, UnicodeDecodeError, RecursionError) as exc:
        raise ModelFileError(p, f"{graph_file.name} is not a valid SavedModel "
                             f"({type(exc).__name__})") from exc
    return saved


def unsafe_ops(saved: Any) -> list[UnsafeOp]:
    """Every op of `DENIED` in a parsed SavedModel (saved_model_pb2.SavedModel) where TF would
    run it, checkpoint ops of the saver's own restore and save paths excepted."""
    found: list[UnsafeOp] = []
    for meta in saved.meta_graphs:
        found += _meta_graph(meta)
    return found


def _meta_graph(meta: Any) -> list[UnsafeOp]:
    graph = {n.name: n for n in meta.graph_def.node}
    library = {f.signature.name: f for f in meta.graph_def.library.function}
    gradients = {g.function_name: g.gradient_func for g in meta.graph_def.library.gradient}
    saver = meta.saver_def

    # Graph nodes: what the signatures, init ops and collections need is checked in full;
    # what only the saver's restore op or save tensor needs may touch checkpoints.
    used = [t.name for s in meta.signature_def.values()
            for t in (*s.inputs.values(), *s.outputs.values())]
    used += [v for c in meta.collection_def.values() for v in c.node_list.value]
    serving = _ancestors(graph, used)
    restore = _ancestors(graph, [saver.restore_op_name]) - serving if saver.restore_op_name \
        else set()
    save = _ancestors(graph, [saver.save_tensor_name]) - serving - restore \
        if saver.save_tensor_name else set()
    strict_nodes = [n for name, n in graph.items() if name not in restore and name not in save]

    # Functions: those the saver's paths call (and nothing else) are the checkpoint code; the
    # rest - serving, object-graph functions (resource initializers), unreached ones - are not.
    def called(nodes: Iterable[Any]) -> set[str]:
        return _closure(nodes, library, gradients)

    object_fns = set(meta.object_graph_def.concrete_functions) & set(library)
    strict_fns = called(strict_nodes) | _closure_of(object_fns, library, gradients)
    restore_fns = called(graph[n] for n in restore) - strict_fns
    save_fns = called(graph[n] for n in save) - strict_fns - restore_fns
    orphans = set(library) - strict_fns - restore_fns - save_fns
    strict_fns |= _closure_of(orphans, library, gradients)

    found = []
    checks = ((strict_nodes, frozenset()), ([graph[n] for n in restore], CHECKPOINT_READS),
              ([graph[n] for n in save], CHECKPOINT_READS | CHECKPOINT_WRITES))
    for nodes, allowed in checks:
        found += [UnsafeOp(n.op, f"graph node '{n.name}'", n.name, reason)
                  for n, reason in _denied(nodes, allowed)]
    for names, allowed in ((strict_fns, frozenset()), (restore_fns, CHECKPOINT_READS),
                           (save_fns, CHECKPOINT_READS | CHECKPOINT_WRITES)):
        for name in sorted(names):
            found += [UnsafeOp(n.op, f"function '{name}'", n.name, reason)
                      for n, reason in _denied(library[name].node_def, allowed)]
    return found


def _denied(nodes: Iterable[Any], allowed: frozenset[str]) -> Iterator[tuple[Any, str]]:
    for n in nodes:
        if n.op in DENIED and n.op not in allowed:
            yield n, DENIED[n.op]
        elif n.op == "PrintV2":
            stream = n.attr["output_stream"].s.decode("utf-8", "replace") \
                if "output_stream" in n.attr else "stderr"
            if stream not in _PRINT_STREAMS:
                yield n, f"prints to '{stream[:100]}'"


def _ancestors(graph: dict[str, Any], tensors: Iterable[str]) -> set[str]:
    """Names of the graph nodes the given tensors or ops depend on (data and control inputs)."""
    return _reachable((_node_name(t) for t in tensors if t),
                      lambda name: [_node_name(i) for i in graph[name].input]
                      if name in graph else None)


def _node_name(tensor: str) -> str:
    return tensor.lstrip("^").split(":")[0]


def _closure(nodes: Iterable[Any], library: dict[str, Any], gradients: dict[str, str]) -> set[str]:
    """The library functions these nodes call, directly or through other functions."""
    return _closure_of({f for n in nodes for f in _callees(n, library)}, library, gradients)


def _closure_of(names: Iterable[str], library: dict[str, Any],
                gradients: dict[str, str]) -> set[str]:
    def callees(name: str) -> list[str] | None:
        if name not in library:
            return None
        found = [f for n in library[name].node_def for f in _callees(n, library)]
        return found + [gradients[name]] if name in gradients else found

    return _reachable(names, callees)


def _reachable(start: Iterable[str], next_of: Callable[[str], Iterable[str] | None]) -> set[str]:
    """The names reached from `start` by following `next_of` (None: not a name of this graph,
    left out), each visited once."""
    todo = list(start)
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        following = next_of(name)
        if following is None:
            continue
        seen.add(name)
        todo += following
    return seen


def _callees(node: Any, library: dict[str, Any]) -> set[str]:
    # A node calls a function by naming it as its op, or in a function-valued attribute
    # (PartitionedCall's f, While's cond/body, If's branches, tf.data's map functions ...).
    out = {node.op} if node.op in library else set()
    todo = list(node.attr.values())
    while todo:
        value = todo.pop()
        kind = value.WhichOneof("value")
        if kind == "func":
            out.add(value.func.name)
            todo += list(value.func.attr.values())
        elif kind == "list":
            for f in value.list.func:
                out.add(f.name)
                todo += list(f.attr.values())
    return out


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.0f} MiB"
