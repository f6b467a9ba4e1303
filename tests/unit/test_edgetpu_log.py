"""The edgetpu_compiler log parser on real published logs (tests/data/edgetpu/SOURCES.md names
the thread or file each one comes from)."""

from __future__ import annotations

from pathlib import Path

from edgeq.edgetpu.compiler import compiled_placement, parse_log
from edgeq.formats.tflite import read_model_file

LOGS = Path(__file__).resolve().parent.parent / "data" / "edgetpu"
MIB, KIB = 1024 ** 2, 1024


def log(name: str):
    return parse_log((LOGS / name).read_text())


def test_every_log_has_its_source_noted():
    sources = (LOGS / "SOURCES.md").read_text()
    logs = sorted(p.name for p in LOGS.glob("*.log"))
    assert len(logs) >= 8
    for name in logs:
        assert f"`{name}`" in sources, name


def test_partly_mapped_v16_with_table_and_memory():
    g = log("repo_edgetpu-yolo_yolov5s224_v16_two_subgraphs.log")
    assert g.version == "16.0.384591198" and g.succeeded and g.error is None
    assert (g.ops_total, g.ops_on_tpu, g.ops_on_cpu, g.subgraphs) == (294, 289, 5, 2)
    assert g.on_chip_used_bytes == round(6.08 * MIB) and g.on_chip_remaining_bytes == 0
    assert g.off_chip_bytes == round(1.70 * MIB)
    assert g.input_bytes == round(7.37 * MIB)
    assert len(g.rows) == 17
    assert sum(n for _, n, _ in g.rows) == 294
    assert sum(n for _, n, s in g.rows if s == "Mapped to Edge TPU") == 289
    assert ("TRANSPOSE", 1, "Operation is otherwise supported, but not mapped due to some "
            "unspecified limitation") in g.rows


def test_partly_mapped_v15_with_leaky_relu():
    g = log("repo_tetutaro_yolov3tiny_v15_leaky_relu.log")
    assert (g.ops_total, g.ops_on_tpu, g.ops_on_cpu) == (36, 2, 34)
    assert ("LEAKY_RELU", 11, "Operation not supported") in g.rows
    assert ("RESIZE_NEAREST_NEIGHBOR", 1, "Operation version not supported") in g.rows
    assert g.on_chip_used_bytes == 3 * KIB and g.off_chip_bytes == 0
    s = log("repo_tetutaro_yolov5s_v15_strided_slice.log")
    assert ("STRIDED_SLICE", 4, "Only Strided-Slice with unitary strides supported") in s.rows
    assert sum(n for _, n, _ in s.rows) == s.ops_total == 294


def test_fully_mapped_log_has_no_count_lines():
    g = log("issue572_quantized_model_v16_fully_mapped.log")
    assert g.succeeded and g.ops_total == 50
    assert (g.ops_on_tpu, g.ops_on_cpu) == (50, 0)  # absent lines mean every op mapped
    assert g.off_chip_bytes == round(3.45 * MIB) and g.on_chip_used_bytes == round(604.5 * KIB)
    assert g.rows == ()


def test_summary_without_table_and_fragments():
    g = log("issue393_model_v15_partly_mapped_summary.log")
    assert (g.ops_total, g.ops_on_tpu, g.ops_on_cpu) == (165, 117, 48) and g.rows == ()
    frag = log("issue342_table_fragment_no_header.log")
    assert frag.version is None and (frag.ops_on_tpu, frag.ops_on_cpu) == (2, 153)
    assert len(frag.rows) == 10 and sum(n for _, n, _ in frag.rows) == 155
    zero = log("issue219_mul_split_v14_fragment_zero_tpu.log")
    assert zero.ops_on_tpu == 0 and [r[0] for r in zero.rows] == ["MUL", "SPLIT"]
    elided = log("issue420_resize_nn_v15_oplog_elided.log")
    assert elided.rows == (("RESIZE_NEAREST_NEIGHBOR", 4, "Operation version not supported"),)


def test_failures_keep_the_compilers_words():
    assert "Model not quantized" in log("issue168_mnist_v14_not_quantized.log").error
    dyn = log("issue829_efficientnet_v16_failed_dynamic_tensors.log")
    assert not dyn.succeeded and "static-sized tensors" in dyn.error
    big = log("issue512_yolov5s_img352_v16_failed_large_activations.log")
    assert "large activation tensors" in big.error and not big.succeeded
    assert "Internal compiler error" in log(
        "issue358_internal_err_v15_internal_compiler_error.log").error


def test_compiled_model_maps_back_to_source_ops(fixtures):
    coral = fixtures / "models" / "coral"
    src = read_model_file(coral / "deeplabv3_mnv2_dm05_pascal_quant.tflite")
    compiled = read_model_file(coral / "deeplabv3_mnv2_dm05_pascal_quant_edgetpu.tflite")
    table = parse_log("Operator  Count  Status\n"
                      "RESIZE_BILINEAR  3  More than one subgraph is not supported\n")
    placed = compiled_placement(src, compiled, table)
    cpu = [(i, s) for i, where, s in placed if where == "cpu"]
    assert [i for i, _ in cpu] == list(range(64, 72))
    assert cpu[0][1] == "More than one subgraph is not supported"
    assert dict(cpu)[71] == "runs on the CPU"  # ARG_MAX: no row for it in this table
