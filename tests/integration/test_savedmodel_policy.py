"""edgeq.formats.savedmodel_policy: SavedModel files and graphs read as data (issue 14, item 1)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from edgeq.errors import ModelFileError, UnsafeModelError
from edgeq.formats import savedmodel_policy
from edgeq.formats.savedmodel_policy import DENIED, check_savedmodel
from tests.conftest import FIXTURES

# Registered ops whose names sound like I/O but that were read and found to act only inside
# the graph (string and proto ops, queue-fed readers, in-memory caches, summaries as strings).
# PrintV2 is checked by its output_stream attribute instead.
REVIEWED_HARMLESS = frozenset("""
AnonymousMemoryCache AudioSummary AudioSummaryV2 BoostedTreesExampleDebugOutputs
BoostedTreesMakeStatsSummary CheckNumericsV2 CloseSummaryWriter Copy CopyHost CopyOp CopyToMesh
CopyToMeshGrad DatasetFingerprint DebugGradientIdentity DebugGradientRefIdentity DecodeCSV
DeepCopy DeleteMemoryCache DeleteRpcFutureResource DisableCopyOnRead DummyMemoryCache
ExperimentalStatsAggregatorSummary Fingerprint HistogramSummary IdentityReader IdentityReaderV2
ImageSummary IteratorGetModelProto MergeSummary PreventGradient Print PrintV2
ReaderNumRecordsProduced ReaderNumRecordsProducedV2 ReaderNumWorkUnitsCompleted
ReaderNumWorkUnitsCompletedV2 ReaderRead ReaderReadUpTo ReaderReadUpToV2 ReaderReadV2 ReaderReset
ReaderResetV2 ReaderRestoreState ReaderRestoreStateV2 ReaderSerializeState ReaderSerializeStateV2
RemoteCall RpcCheckStatus RpcGetValue ScalarSummary SdcaFprint ShardedFilename ShardedFilespec
Snapshot SoftmaxCrossEntropyWithLogits SparseSoftmaxCrossEntropyWithLogits StatsAggregatorSummary
SummaryWriter TPUCopyWithDynamicShape TensorSummary TensorSummaryV2 TpuHandleToProtoKey Xlog1py
_CopyFromGpuToHost _CopyFromHostToGpu
""".split())
IO_WORDS = re.compile(r"File|Reader|Writer|Save|Restore|Summary|Debug|Print|Py|Rpc|Dump|Snapshot|"
                      r"Checkpoint|Record|LMDB|Sql|CSV|Matching|Cache|Remote|DataService|Abort|"
                      r"Immutable|Proto|Vocab|Event|Copy", re.IGNORECASE)


def _registered_ops() -> set[str]:
    from tensorflow.core.framework import op_def_pb2
    from tensorflow.python.client import pywrap_tf_session as c_api

    ops = op_def_pb2.OpList()
    ops.ParseFromString(bytes(c_api.TF_GetBuffer(c_api.TF_GetAllOpList())))
    return {o.name for o in ops.op}


def test_every_denied_op_is_a_registered_op():
    assert not set(DENIED) - _registered_ops()


def test_every_io_sounding_op_is_denied_or_reviewed():
    unreviewed = {op for op in _registered_ops() if IO_WORDS.search(op)} - set(DENIED) \
        - REVIEWED_HARMLESS
    assert not unreviewed, f"new TF ops to review for savedmodel_policy.DENIED: {unreviewed}"


def _fixture_savedmodels() -> list[Path]:
    return sorted({p.parent for p in FIXTURES.rglob("saved_model.pb*")})


def test_the_fixture_savedmodels_pass():
    found = _fixture_savedmodels()
    assert found  # mlperf_tiny/kws_dscnn_savedmodel at least: TF2 saver functions included
    for path in found:
        check_savedmodel(path)


def _export(tmp_path: Path) -> Path:
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.export(str(tmp_path / "sm"), verbose=False)
    return tmp_path / "sm"


def _tf1(tmp_path: Path, name: str, main_op=None) -> Path:
    import tensorflow as tf

    tf1 = tf.compat.v1
    g = tf.Graph()
    with g.as_default(), tf1.Session(graph=g) as s:
        x = tf1.placeholder(tf.float32, (None, 4), name="x")
        y = tf.matmul(x, tf1.get_variable("w", (4, 2)), name="y")
        s.run(tf1.global_variables_initializer())
        op = main_op(tmp_path) if main_op else None
        b = tf1.saved_model.Builder(str(tmp_path / name))
        b.add_meta_graph_and_variables(
            s, ["serve"], main_op=op,
            signature_def_map={"serving_default": tf1.saved_model.predict_signature_def(
                {"x": x}, {"y": y})})
        b.save()
    return tmp_path / name


def test_a_tf1_savedmodel_with_its_saver_graph_passes(tmp_path):
    check_savedmodel(_tf1(tmp_path, "ok"))  # save/SaveV2, save/RestoreV2 are graph nodes here


def test_a_tf1_init_op_writing_a_file_is_refused_by_node(tmp_path):
    import tensorflow as tf

    path = _tf1(tmp_path, "bad", lambda d: tf.io.write_file(str(d / "MARKER"), "x"))
    with pytest.raises(UnsafeModelError, match=r"graph node 'WriteFile' runs op WriteFile"):
        check_savedmodel(path)


def test_checkpoint_ops_outside_the_saver_are_refused(tmp_path):
    import tensorflow as tf

    class M(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((None, 4), tf.float32)])
        def serve(self, x):
            tf.raw_ops.SaveV2(prefix=str(tmp_path / "ckpt"), tensor_names=["x"],
                              shape_and_slices=[""], tensors=[x])
            return {"y": x * 2.0}

    m = M()
    tf.saved_model.save(m, str(tmp_path / "sm"), signatures={"serving_default": m.serve})
    with pytest.raises(UnsafeModelError, match=r"function '__inference_serve_\d+' runs op SaveV2"):
        check_savedmodel(tmp_path / "sm")


def test_a_symbolic_link_is_refused_unless_allowed(tmp_path):
    path = _export(tmp_path)
    data = next((path / "variables").glob("variables.data-*"))
    real = tmp_path / "elsewhere.bin"
    shutil.move(data, real)
    data.symlink_to(real)
    with pytest.raises(UnsafeModelError, match="is a symbolic link"):
        check_savedmodel(path)
    check_savedmodel(path, allow_unsafe=True)


def test_a_fifo_is_refused(tmp_path):
    path = _export(tmp_path)
    os.mkfifo(path / "fifo")  # a loader reading it would wait forever
    with pytest.raises(ModelFileError, match="is not a regular file"):
        check_savedmodel(path, allow_unsafe=True)


def test_size_limits_are_checked_before_parsing(tmp_path, monkeypatch):
    path = _export(tmp_path)
    monkeypatch.setattr(savedmodel_policy, "MAX_GRAPH_BYTES", 1000)
    with pytest.raises(ModelFileError, match=r"saved_model.pb is .* over edgeq's"):
        check_savedmodel(path, allow_unsafe=True)
    monkeypatch.setattr(savedmodel_policy, "MAX_GRAPH_BYTES", 1 << 30)
    monkeypatch.setattr(savedmodel_policy, "MAX_VARIABLES_BYTES", 10)
    with pytest.raises(ModelFileError, match="its variables hold"):
        check_savedmodel(path)


def test_a_corrupt_graph_is_a_model_file_error(tmp_path):
    path = _export(tmp_path)
    (path / "saved_model.pb").write_bytes(b"\xff" * 64)
    with pytest.raises(ModelFileError, match="not a valid SavedModel"):
        check_savedmodel(path)


def test_the_loader_ignores_keras_metadata(tmp_path):
    # tf.saved_model.load never reads keras_metadata.pb (only tf_keras's loader does), so the
    # policy need not inspect it: garbage there changes nothing.
    from edgeq.pipeline.load import load_model

    path = _export(tmp_path)
    (path / "keras_metadata.pb").write_bytes(b"\x00garbage" * 8)
    loaded = load_model(path)
    assert loaded.format == "savedmodel" and loaded.output_shapes == ((2,),)
