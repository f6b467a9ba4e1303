"""Issue 22, item 3: SavedModel ops that allocate from shapes the graph fixes as constants are
refused before TensorFlow loads the model (edgeq.formats.savedmodel_alloc), also when the
shape is assembled from constants (Pack, Mul) rather than written as one; shapes that depend
on the input, and real models, pass."""

from __future__ import annotations

import pytest

from tests.conftest import FIXTURES


def _save(tmp_path, name, body):
    import tensorflow as tf

    class M(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def serve(self, x):
            return {"y": body(tf, x)}

    m = M()
    path = tmp_path / name
    tf.saved_model.save(m, str(path), signatures={"serving_default": m.serve})
    return path


CASES = {
    "fill of a folded shape": (
        lambda tf, x: x + tf.reduce_sum(tf.fill(tf.stack([tf.constant(3) * 10000, 30000]), 1.0)
                                        [:1, :4]), "Fill"),
    "broadcast_to": (
        lambda tf, x: x + tf.reduce_sum(tf.broadcast_to(1.0, [20000, 20000])), "BroadcastTo"),
    "zeros": (lambda tf, x: x + tf.reduce_sum(tf.zeros([70000, 70000])), "Fill"),
    "range": (lambda tf, x: x + tf.cast(tf.reduce_sum(tf.range(3 * 10**9, dtype=tf.int64)),
                                        tf.float32), "Range"),
    "tile": (lambda tf, x: x + tf.reduce_sum(tf.tile(x, [10**5, 10**4])), "Tile"),
    "random normal": (
        lambda tf, x: x + tf.reduce_sum(tf.random.normal([40000, 40000])), "RandomStandardNormal"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_constant_shape_allocation_is_refused(tmp_path, name):
    from edgeq.errors import TensorSizeError
    from edgeq.formats.savedmodel_policy import check_savedmodel

    body, op = CASES[name]
    path = _save(tmp_path, "m", body)
    with pytest.raises(TensorSizeError, match=f"runs {op}"):
        check_savedmodel(path)
    with pytest.raises(TensorSizeError):  # a size, not code: --allow-unsafe does not lift it
        check_savedmodel(path, allow_unsafe=True)


def test_shapes_from_the_input_and_real_models_pass(tmp_path):
    from edgeq.formats.savedmodel_policy import check_savedmodel

    path = _save(tmp_path, "dynamic",
                 lambda tf, x: x + tf.fill(tf.shape(x), 2.0) + tf.zeros([64, 4])[:1])
    check_savedmodel(path)
    check_savedmodel(FIXTURES / "models" / "mlperf_tiny" / "kws_dscnn_savedmodel")
