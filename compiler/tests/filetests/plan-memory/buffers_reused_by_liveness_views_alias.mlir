module attributes {llmpu.precision = "bf16", llmpu.target = "edge"} {
  func.func @main(%arg0: tensor<16x64xf32> {graph.name = "x"}) -> (tensor<64x16xf32> {graph.name = "y"}) {
    %0 = "graph.exp"(%arg0) : (tensor<16x64xf32>) -> tensor<16x64xf32> loc("Exp_0")
    %1 = "graph.tanh"(%0) : (tensor<16x64xf32>) -> tensor<16x64xf32> loc("Tanh_0")
    %2 = "graph.sigmoid"(%1) : (tensor<16x64xf32>) -> tensor<16x64xf32> loc("Sigmoid_0")
    %3 = "graph.reshape"(%2) : (tensor<16x64xf32>) -> tensor<4x4x64xf32> loc("Reshape_0")
    %4 = "graph.neg"(%3) : (tensor<4x4x64xf32>) -> tensor<4x4x64xf32> loc("Neg_0")
    %5 = "graph.reshape"(%4) : (tensor<4x4x64xf32>) -> tensor<16x64xf32> loc("Reshape_1")
    %6 = "graph.transpose"(%5) {perm = array<i64: 1, 0>} : (tensor<16x64xf32>) -> tensor<64x16xf32> loc("Transpose_0")
    %7 = "graph.relu"(%6) : (tensor<64x16xf32>) -> tensor<64x16xf32> loc("Relu_0")
    func.return %7 : tensor<64x16xf32> loc(unknown)
  } loc("main")
}
