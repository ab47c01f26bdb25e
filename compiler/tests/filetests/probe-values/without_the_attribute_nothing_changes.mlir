module {
  func.func @main(%x: tensor<2x4xf32> {onnx.name = "x"}, %w: tensor<4x4xf32> {onnx.name = "w"}) -> (tensor<2x4xf32> {onnx.name = "y"}) {
    %m = "graph.matmul"(%x, %w) : (tensor<2x4xf32>, tensor<4x4xf32>) -> tensor<2x4xf32> loc("MatMul")
    %t = "graph.transpose"(%m) {perm = array<i64: 1, 0>} : (tensor<2x4xf32>) -> tensor<4x2xf32> loc("Transpose")
    %r = "graph.reshape"(%t) : (tensor<4x2xf32>) -> tensor<2x4xf32> loc("Reshape")
    %a = "graph.add"(%r, %x) : (tensor<2x4xf32>, tensor<2x4xf32>) -> tensor<2x4xf32> loc(fused["Add", "Mul"])
    %b = "graph.relu"(%a) : (tensor<2x4xf32>) -> tensor<2x4xf32> loc("Relu")
    func.return %b : tensor<2x4xf32> loc(unknown)
  } loc("main")
}
