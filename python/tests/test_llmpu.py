"""The `llmpu` Python package end to end: compile (path and onnx.ModelProto), run with numpy
inputs against onnxruntime under the CLI's tolerances, the per-op DataFrame, the roofline PNG,
IR after a pass, target dicts, and errors as exceptions.

The corpus is found through LLMPU_CORPUS (default ../shared/corpus beside the repository)."""

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import llmpu

REPO = Path(__file__).resolve().parents[2]
CORPUS = Path(os.environ.get("LLMPU_CORPUS", REPO.parent / "shared" / "corpus"))
GPT2 = CORPUS / "models" / "gpt2-tiny-prefill"


def need_corpus():
    if not (GPT2 / "model.onnx").is_file():
        pytest.skip(f"corpus model not found at {GPT2} (set LLMPU_CORPUS)")


def gpt2_ids():
    t = onnx.TensorProto()
    t.ParseFromString((GPT2 / "test_data_set_0" / "input_0.pb").read_bytes())
    return numpy_helper.to_array(t)


def onnxruntime_outputs(model_bytes, inputs):
    sess = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, inputs)))


def mlp_model():
    """y = relu(x @ W + b) @ W2, built with onnx.helper."""
    rng = np.random.default_rng(7)
    w = rng.standard_normal((32, 64)).astype(np.float32) * 0.2
    b = rng.standard_normal(64).astype(np.float32) * 0.1
    w2 = rng.standard_normal((64, 16)).astype(np.float32) * 0.2
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"], name="fc1"),
            helper.make_node("Add", ["h", "b"], ["hb"], name="bias1"),
            helper.make_node("Relu", ["hb"], ["r"], name="relu1"),
            helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2"),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 16])],
        initializer=[
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(b, "b"),
            numpy_helper.from_array(w2, "w2"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_corpus_gpt2_matches_onnxruntime_within_the_precision_tolerance(precision):
    need_corpus()
    path = GPT2 / "model.onnx"
    ids = gpt2_ids()
    binary = llmpu.compile(str(path), target="edge", precision=precision)
    outputs, report = binary.run({"input_ids": ids})
    want = onnxruntime_outputs(path.read_bytes(), {"input_ids": ids})
    assert set(outputs) == {"logits"}
    c = llmpu.compare("logits", outputs["logits"], want["logits"], precision)
    assert c["pass"], c["text"]
    assert report.cycles > 0 and report.seconds > 0


def test_model_proto_from_onnx_helper_compiles_and_matches_onnxruntime():
    model = mlp_model()
    x = np.random.default_rng(1).standard_normal((8, 32)).astype(np.float32)
    binary = llmpu.compile(model, precision="fp32")
    assert binary.inputs == [("x", "float32", (8, 32))]
    outputs, _ = binary.run({"x": x})
    want = onnxruntime_outputs(model.SerializeToString(), {"x": x})
    c = llmpu.compare("y", outputs["y"], want["y"], "fp32")
    assert c["pass"], c["text"]
    assert outputs["y"].dtype == np.float32 and outputs["y"].shape == (8, 16)


def test_report_ops_is_a_dataframe_with_one_row_per_op():
    model = mlp_model()
    _, report = llmpu.compile(model).run({"x": np.ones((8, 32), np.float32)})
    ops = report.ops
    for col in ["op", "cycles", "dma_cycles", "mxu_cycles", "vpu_cycles", "scalar_cycles",
                "hbm_bytes", "flops", "intensity", "bottleneck", "bound", "roofline_fraction"]:
        assert col in ops.columns, col
    assert len(ops) == len(report.to_dict()["locations"]) > 0
    assert ops["flops"].sum() >= 2 * (8 * 32 * 64 + 8 * 64 * 16)
    assert set(ops["bottleneck"]) <= {"scalar", "dma", "mxu", "vpu"}
    assert set(ops["bound"]) <= {"memory", "compute", "control"}
    assert (ops["roofline_fraction"] >= 0).all()
    units = report.units
    assert set(units["unit"]) == {"scalar", "dma", "mxu", "vpu"}
    assert units["instructions"].sum() == sum(report.to_dict()["instructions"].values())
    assert units["busy_fraction"].between(0, 1).all()


def test_timing_only_run_has_no_outputs_and_the_same_cycles():
    need_corpus()
    binary = llmpu.compile(GPT2 / "model.onnx")
    _, functional = binary.run({"input_ids": gpt2_ids()})
    outputs, timing = binary.run({}, timing_only=True)
    assert outputs == {}
    assert timing.cycles == functional.cycles


def test_plot_roofline_writes_a_png(tmp_path):
    need_corpus()
    _, report = llmpu.compile(GPT2 / "model.onnx").run({"input_ids": gpt2_ids()})
    out = tmp_path / "roofline.png"
    fig = report.plot_roofline(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert "intensity" in ax.get_xlabel() and "FLOP/s" in ax.get_ylabel()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(s.startswith("roofline") for s in labels), labels


def test_an_input_of_the_wrong_shape_raises_naming_it():
    binary = llmpu.compile(mlp_model())
    with pytest.raises(llmpu.LlmpuError, match=r"x.*f32\[8, 32\]"):
        binary.run({"x": np.ones((4, 32), np.float32)})


def test_an_input_of_an_unsupported_dtype_raises_naming_the_dtype():
    binary = llmpu.compile(mlp_model())
    with pytest.raises(llmpu.LlmpuError, match="complex64"):
        binary.run({"x": np.ones((8, 32), np.complex64)})


def test_an_input_of_another_storage_type_raises_naming_both_types():
    binary = llmpu.compile(mlp_model())
    with pytest.raises(llmpu.LlmpuError, match=r"expected f32\[8, 32\], got f64\[8, 32\]"):
        binary.run({"x": np.ones((8, 32), np.float64)})


def test_a_missing_or_unknown_input_raises():
    binary = llmpu.compile(mlp_model())
    with pytest.raises(llmpu.LlmpuError, match="x"):
        binary.run({})
    with pytest.raises(llmpu.LlmpuError, match="nope"):
        binary.run({"x": np.ones((8, 32), np.float32), "nope": np.ones(1, np.float32)})


def test_a_model_that_does_not_parse_raises_with_the_import_error():
    with pytest.raises(llmpu.LlmpuError, match="ModelProto"):
        llmpu.compile(b"definitely not onnx")
    with pytest.raises(llmpu.LlmpuError, match="missing.onnx"):
        llmpu.compile("/nonexistent/missing.onnx")


def test_ir_after_a_pass_returns_that_stage_and_an_unknown_pass_raises():
    model = mlp_model()
    passes = llmpu.passes()
    assert passes[0] == "import" and "fuse-matmul-epilogue" in passes
    before = llmpu.ir_after(model, "import")
    after = llmpu.ir_after(model, "fuse-matmul-epilogue")
    assert '"graph.matmul"' in before and "relu1" in before
    assert before != after
    with pytest.raises(llmpu.LlmpuError, match="fuse-attention"):
        llmpu.ir_after(model, "no-such-pass")


def test_targets_are_dicts_that_can_be_edited_and_passed_back():
    presets = llmpu.targets()
    assert {"edge", "datacenter"} <= set(presets)
    t = llmpu.target("edge")
    assert t == presets["edge"]
    t["name"] = "edge-2x-hbm"
    t["hbm"]["bandwidth_gb_s"] *= 2
    binary = llmpu.compile(mlp_model(), target=t)
    assert binary.target["hbm"]["bandwidth_gb_s"] == t["hbm"]["bandwidth_gb_s"]
    x = {"x": np.ones((8, 32), np.float32)}
    _, edge = llmpu.compile(mlp_model(), target="edge").run(x)
    _, faster = binary.run(x)
    assert faster.cycles < edge.cycles
    bad = dict(t, corez=3)
    with pytest.raises(llmpu.LlmpuError, match="corez"):
        llmpu.compile(mlp_model(), target=bad)


def test_a_saved_binary_loads_and_runs_the_same(tmp_path):
    model = mlp_model()
    x = np.ones((8, 32), np.float32)
    binary = llmpu.compile(model)
    binary.save(tmp_path / "mlp.llmpu")
    again = llmpu.load(tmp_path / "mlp.llmpu")
    (a, ra), (b, rb) = binary.run({"x": x}), again.run({"x": x})
    np.testing.assert_array_equal(a["y"], b["y"])
    assert ra.cycles == rb.cycles


def test_dims_bind_symbolic_dims_and_an_unbound_dim_raises_naming_it():
    dyn = CORPUS / "models" / "gpt2-tiny-dyn-prefill" / "model.onnx"
    if not dyn.is_file():
        pytest.skip(f"corpus model not found at {dyn} (set LLMPU_CORPUS)")
    binary = llmpu.compile(dyn, dims={"batch_size": 1, "sequence_length": 8})
    shapes = {name: shape for name, _, shape in binary.inputs}
    assert shapes["input_ids"] == (1, 8)
    with pytest.raises(llmpu.LlmpuError, match="sequence_length"):
        llmpu.compile(dyn, dims={"batch_size": 1})
