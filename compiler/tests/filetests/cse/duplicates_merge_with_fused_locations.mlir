module {
  func.func @main(%arg0: tensor<16x64xf32>, %arg1: tensor<64x32xf32>) -> (tensor<16x32xf32>, tensor<16x32xf32>, tensor<16x64xf32>, tensor<16x64xf32>) {
    %0 = "graph.matmul"(%arg0, %arg1) : (tensor<16x64xf32>, tensor<64x32xf32>) -> tensor<16x32xf32> loc("MatMul_q")
    %1 = "graph.matmul"(%arg0, %arg1) : (tensor<16x64xf32>, tensor<64x32xf32>) -> tensor<16x32xf32> loc("MatMul_k")
    %2 = "graph.relu"(%0) : (tensor<16x32xf32>) -> tensor<16x32xf32> loc("Relu_a")
    %3 = "graph.relu"(%1) : (tensor<16x32xf32>) -> tensor<16x32xf32> loc("Relu_b")
    %4 = "graph.softmax"(%arg0) {axis = -1 : i64} : (tensor<16x64xf32>) -> tensor<16x64xf32> loc("Softmax_last")
    %5 = "graph.softmax"(%arg0) {axis = 0 : i64} : (tensor<16x64xf32>) -> tensor<16x64xf32> loc("Softmax_first")
    func.return %2, %3, %4, %5 : tensor<16x32xf32>, tensor<16x32xf32>, tensor<16x64xf32>, tensor<16x64xf32> loc(unknown)
  } loc("main")
}
