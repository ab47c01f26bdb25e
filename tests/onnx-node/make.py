"""Writes the repository's own ONNX node tests (ops the shared corpus does not select), in the
layout of ONNX's backend node tests: <name>/model.onnx and <name>/test_data_set_0/{input,output}_N.pb.

Run by hand from the repository root (`python tests/onnx-node/make.py`, needs `onnx` and `numpy`);
the outputs are committed. Expected values are computed here in float64 from each op's ONNX
definition, then rounded to the tensor's type.
"""

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))


def softplus(x):
    x = x.astype(np.float64)
    # log(1 + exp(x)), written so large |x| neither overflows nor loses the linear part.
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


def write(name, op, inputs, expected, opset, attrs=None):
    d = os.path.join(HERE, name)
    os.makedirs(os.path.join(d, "test_data_set_0"), exist_ok=True)
    ins = [helper.make_tensor_value_info(f"x{i}", TensorProto.FLOAT, a.shape) for i, a in enumerate(inputs)]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, expected.shape)
    node = helper.make_node(op, [f"x{i}" for i in range(len(inputs))], ["y"], **(attrs or {}))
    graph = helper.make_graph([node], name, ins, [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(d, "model.onnx"))
    for i, a in enumerate(inputs):
        t = numpy_helper.from_array(a.astype(np.float32), f"x{i}")
        open(os.path.join(d, "test_data_set_0", f"input_{i}.pb"), "wb").write(t.SerializeToString())
    t = numpy_helper.from_array(expected.astype(np.float32), "y")
    open(os.path.join(d, "test_data_set_0", "output_0.pb"), "wb").write(t.SerializeToString())


def main():
    rng = np.random.default_rng(20261207)
    small = np.array([-1.0, 0.0, 1.0], dtype=np.float32)
    write("softplus_small", "Softplus", [small], softplus(small), 18)
    x = rng.standard_normal((3, 4, 5)).astype(np.float32) * 4
    write("softplus_3d", "Softplus", [x], softplus(x), 18)
    # Tails: exp overflows f32 past 88.7; the result must stay x there and exp(x) far below 0.
    tails = np.array([[-100.0, -20.0, -5.0, 5.0, 20.0, 80.0, 100.0, 1000.0]], dtype=np.float32)
    write("softplus_tails", "Softplus", [tails], softplus(tails), 13)


if __name__ == "__main__":
    main()
