"""Edge TPU constraint functions and partitioning on small hand-built graphs."""

from __future__ import annotations

from edgeq.edgetpu import placement, rules
from edgeq.formats.tflite import ModelInfo, OpInfo, TensorInfo
from edgeq.targets import load_target

CORAL = load_target("coral")
ALLOWED, CAPS = CORAL.ops.allowed, dict(CORAL.ops.max_versions)


def t(i, shape, dtype="int8", const=0, name=None, fill=None):
    return TensorInfo(i, name or f"t{i}", tuple(shape), tuple(shape), dtype, (0.1,), (0,), 0,
                      const, fill)


def model(tensors, ops, values=None, inputs=(0,), outputs=None):
    return ModelInfo(tuple(ops), tuple(tensors), tuple(inputs),
                     tuple(outputs or (ops[-1].outputs[0],)), 1, 1000, values or {})


def op(i, name, inputs, outputs, version=1, **options):
    return OpInfo(i, name, version, tuple(inputs), tuple(outputs), tuple(sorted(options.items())))


def findings(info, k=0):
    return rules.op_findings(info.ops[k], info, ALLOWED, CAPS)


def test_rank_rule_allows_batch_one_only():
    ok = model([t(0, (1, 8, 8, 3)), t(1, (1, 8, 8, 3))], [op(0, "RELU", [0], [1])])
    bad = model([t(0, (2, 8, 8, 3)), t(1, (2, 8, 8, 3))], [op(0, "RELU", [0], [1])])
    assert findings(ok) == []
    (f,) = findings(bad)
    assert f.status == rules.RANK and "[2, 8, 8, 3]" in f.message


def test_weights_are_exempt_from_the_rank_rule():
    info = model([t(0, (1, 8, 8, 3)), t(1, (16, 3, 3, 3), const=432), t(2, (16,), "int32", 64),
                  t(3, (1, 6, 6, 16))], [op(0, "CONV_2D", [0, 1, 2], [3], 3)])
    assert findings(info) == []


def test_softmax_axis_must_be_small():
    # Compiler 16 maps an N-D softmax (YOLOv8's DFL [1, 4, 525, 16], all-mapped logs).
    dfl = model([t(0, (1, 4, 525, 16)), t(1, (1, 4, 525, 16))], [op(0, "SOFTMAX", [0], [1])])
    big = model([t(0, (1, 20000)), t(1, (1, 20000))], [op(0, "SOFTMAX", [0], [1])])
    small = model([t(0, (1, 10)), t(1, (1, 10))], [op(0, "SOFTMAX", [0], [1], 2)])
    assert findings(dfl) == []
    assert "20000 elements" in findings(big)[0].message
    assert findings(small) == []


def test_strided_slice_needs_unit_strides():
    tensors = [t(0, (1, 8, 8, 4)), t(1, (4,), "int32", 16), t(2, (4,), "int32", 16),
               t(3, (4,), "int32", 16), t(4, (1, 4, 4, 4))]
    info = model(tensors, [op(0, "STRIDED_SLICE", [0, 1, 2, 3], [4])],
                 values={1: (0, 0, 0, 0), 2: (1, 8, 8, 4), 3: (1, 2, 2, 1)})
    (f,) = findings(info)
    assert f.status == rules.STRIDES and "[1, 2, 2, 1]" in f.message


def test_fc_keep_num_dims_and_version():
    tensors = [t(0, (1, 10, 12)), t(1, (16, 12), const=192), t(2, (16,), "int32", 64),
               t(3, (1, 10, 16))]
    info = model(tensors, [op(0, "FULLY_CONNECTED", [0, 1, 2], [3], 5, keepNumDims=True)])
    statuses = {f.status for f in findings(info)}
    assert rules.VERSION in statuses
    assert any("Flatten" in f.fix for f in findings(info))


def test_resize_needs_a_whole_factor():
    def resize(n_in, n_out, corners, depth=4):
        tensors = [t(0, (1, n_in, n_in, depth)), t(1, (2,), "int32", 8),
                   t(2, (1, n_out, n_out, depth))]
        return model(tensors, [op(0, "RESIZE_BILINEAR", [0, 1], [2], alignCorners=corners,
                                  halfPixelCenters=False)], values={1: (n_out, n_out)})

    assert findings(resize(8, 16, False)) == []
    assert findings(resize(33, 513, True)) == []  # (513 - 1) / (33 - 1) = 16
    assert "1 -> 33" in findings(resize(1, 33, True))[0].message
    assert findings(resize(8, 12, False))
    # A whole factor, but an output too large to map (the deeplab slim pair's 33 -> 513 x 19).
    (f,) = findings(resize(33, 513, True, depth=19))
    assert f.constraint == "resize_output_size" and "[1, 513, 513, 19]" in f.message


def test_size_limits_bracket_the_real_compiles():
    """Each size limit sits between a shape that mapped and one that did not (rules.py)."""
    def reshape(shape_in, shape_out):
        tensors = [t(0, shape_in), t(1, (len(shape_out),), "int32", 4 * len(shape_out)),
                   t(2, shape_out)]
        return findings(model(tensors, [op(0, "RESHAPE", [0, 1], [2])],
                              values={1: tuple(shape_out)}))

    def transpose(shape_in, perm):
        shape_out = tuple(shape_in[p] for p in perm)
        tensors = [t(0, shape_in), t(1, (4,), "int32", 16), t(2, shape_out)]
        return findings(model(tensors, [op(0, "TRANSPOSE", [0, 1], [2])], values={1: perm}))

    assert reshape((1, 400, 3, 85), (1, 1200, 85)) == []  # yolov5n: mapped
    assert reshape((1, 2034, 1, 91), (1, 2034, 91)) == []  # SSDLite-MobileDet scores: mapped
    assert reshape((1, 784, 3, 85), (1, 2352, 85))  # yolov5s-224 log: not mapped
    assert reshape((1, 40, 40, 255), (1, 1600, 3, 85)) == []  # yolov5n: mapped
    (f,) = reshape((1, 1600, 3, 85), (1, 4800, 85))  # yolov5n: CPU
    assert f.constraint == "row_size" and "[1, 4800, 85]" in f.message
    (f,) = reshape((1, 80, 80, 255), (1, 6400, 3, 85))  # yolov5n: CPU
    assert f.constraint == "reshape_size"
    assert transpose((1, 24, 24, 144), (0, 3, 1, 2)) == []  # yolov8 192: mapped
    (f,) = transpose((1, 40, 40, 144), (0, 3, 1, 2))  # yolov8n 640: CPU
    assert f.constraint == "transpose_size" and f.status == rules.UNSPECIFIED


def test_dilation_on_a_one_wide_kernel_axis_does_not_count():
    def conv(kernel_hw, dilation):
        kh, kw = kernel_hw
        tensors = [t(0, (1, 32, 8, 4)), t(1, (4, kh, kw, 4), const=16 * kh * kw),
                   t(2, (4,), "int32", 16), t(3, (1, 32, 8, 4))]
        return findings(model(tensors, [op(0, "CONV_2D", [0, 1, 2], [3],
                                           dilationHFactor=dilation[0],
                                           dilationWFactor=dilation[1])]))

    assert conv((3, 1), (4, 1)) == []  # a temporal conv (the TCN pair): mapped
    assert "dilation 2x1" in conv((3, 3), (2, 1))[0].message


def test_op_version_caps_come_from_the_profile():
    tensors = [t(0, (1, 8, 8, 8)), t(1, (2,), "int32", 8), t(2, (1, 16, 16, 8))]
    info = model(tensors, [op(0, "RESIZE_BILINEAR", [0, 1], [2], 3, alignCorners=False,
                              halfPixelCenters=True)], values={1: (16, 16)})
    assert findings(info) == []  # compiler 16 maps the half-pixel (v3) resizes
    (f,) = rules.op_findings(info.ops[0], info, ALLOWED, {"RESIZE_BILINEAR": 2})
    assert f.status == rules.VERSION and "half_pixel_centers" in f.fix


def test_concat_constant_must_be_zero_padding():
    zero = [t(0, (1, 4, 4, 2)), t(1, (1, 4, 4, 2), const=32, fill=0), t(2, (1, 4, 4, 4))]
    ones = [t(0, (1, 4, 4, 2)), t(1, (1, 4, 4, 2), const=32, fill=None), t(2, (1, 4, 4, 4))]
    assert findings(model(zero, [op(0, "CONCATENATION", [0, 1], [2], axis=3)])) == []
    bad = findings(model(ones, [op(0, "CONCATENATION", [0, 1], [2])]))
    assert "not all zeros" in bad[0].message


def test_int16_activations_and_float_do_not_map():
    info = model([t(0, (1, 8), "int16"), t(1, (1, 8), "int16")], [op(0, "RELU", [0], [1])])
    assert findings(info)[0].status == rules.DATA_TYPE


def _chain(kinds):
    """ops in a row: op k reads tensor k and writes tensor k + 1."""
    tensors = [t(i, (1, 8, 8, 4)) for i in range(len(kinds) + 1)]
    return model(tensors, [op(k, name, [k], [k + 1]) for k, name in enumerate(kinds)])


def test_single_subgraph_cuts_everything_after_the_first_unmappable_op():
    info = _chain(["RELU", "LEAKY_RELU", "RELU", "RELU"])
    plan = placement.plan(info, ALLOWED, CAPS)
    assert [r.placement for r in plan.ops] == ["tpu", "cpu", "cpu", "cpu"]
    assert plan.split.op == "LEAKY_RELU"
    assert plan.ops[2].status == rules.SUBGRAPH and "LEAKY_RELU (op 1)" in plan.ops[2].reason


def test_an_independent_branch_stays_in_the_tpu_subgraph():
    # 0: RELU t0->t1; 1: LEAKY_RELU t1->t2; 2: RELU t1->t3 (does not need op 1); 3: ADD t2,t3
    tensors = [t(i, (1, 8, 8, 4)) for i in range(5)]
    ops = [op(0, "RELU", [0], [1]), op(1, "LEAKY_RELU", [1], [2]), op(2, "RELU", [1], [3]),
           op(3, "ADD", [2, 3], [4])]
    plan = placement.plan(model(tensors, ops), ALLOWED, CAPS)
    assert [r.placement for r in plan.ops] == ["tpu", "cpu", "tpu", "cpu"]


def test_a_leading_float_quantize_stays_on_the_cpu_without_splitting():
    tensors = [t(0, (1, 8, 8, 4), "float32"), *(t(i, (1, 8, 8, 4)) for i in range(1, 4))]
    ops = [op(0, "QUANTIZE", [0], [1]), op(1, "RELU", [1], [2]), op(2, "RELU", [2], [3])]
    info = model(tensors, ops)
    placement.check_compilable(info)  # float only at the boundary: the compiler takes it
    plan = placement.plan(info, ALLOWED, CAPS)
    assert [r.placement for r in plan.ops] == ["cpu", "tpu", "tpu"]
    assert plan.split is None
    # the status real logs show for it (edgetpu-yolo v16, tetutaro v15 in tests/data/edgetpu)
    assert plan.ops[0].status == rules.UNSPECIFIED


def test_keras_layer_names_from_tensor_names():
    def named(name):
        return model([t(0, (1, 4)), t(1, (1, 4), name=name)], [op(0, "RELU", [0], [1])])

    keras3 = named("digits_cnn_1/conv2d_1/Relu;digits_cnn_1/conv2d_1/BiasAdd")
    assert placement.keras_layer(keras3.ops[0], keras3, ("conv2d", "conv2d_1"),
                                 "digits_cnn") == "conv2d"
    tf_keras = named("sequential/leaky_re_lu/LeakyRelu")
    assert placement.keras_layer(tf_keras.ops[0], tf_keras) == "leaky_re_lu"
    tf1 = named("MobilenetV2/Conv/Relu6")
    assert placement.keras_layer(tf1.ops[0], tf1) is None


def test_a_dynamic_batch_alone_compiles_but_a_computed_shape_does_not():
    import pytest

    from edgeq.errors import TargetConstraintError

    def with_signature(ops, extra=()):
        tensors = [TensorInfo(0, "in", (1, 8), (-1, 8), "int8", (0.1,), (0,), 0, 0),
                   t(1, (1, 8)), *extra]
        return model(tensors, ops)

    placement.check_compilable(with_signature([op(0, "RELU", [0], [1])]))
    computed = with_signature([op(0, "SHAPE", [0], [2]), op(1, "RESHAPE", [0, 2], [1])],
                              (t(2, (2,), "int32"),))
    with pytest.raises(TargetConstraintError, match="computes a shape at run time"):
        placement.check_compilable(computed)
