module {
  func.func @main(%arg0: tensor<2x8x64xf32>, %arg1: tensor<64x16xf32>) -> tensor<?x?x?xf32> {
    %0 = "graph.matmul"(%arg0, %arg1) : (tensor<2x8x64xf32>, tensor<64x16xf32>) -> tensor<?x?x?xf32> loc("MatMul_0")
    %1 = "graph.constant"() {value = dense<[0, 4, 2, -1]> : tensor<4xi64>} : () -> tensor<4xi64> loc("shape")
    %2 = "graph.reshape"(%0, %1) : (tensor<?x?x?xf32>, tensor<4xi64>) -> tensor<?x?x?x?xf32> loc("Reshape_0")
    %3 = "graph.transpose"(%2) {perm = array<i64: 0, 2, 1, 3>} : (tensor<?x?x?x?xf32>) -> tensor<?x?x?x?xf32> loc("Transpose_0")
    %4 = "graph.reduce_mean"(%3) {axes = array<i64: -1>, keepdims = 0 : i64} : (tensor<?x?x?x?xf32>) -> tensor<?x?x?xf32> loc("ReduceMean_0")
    func.return %4 : tensor<?x?x?xf32> loc("return")
  } loc("main")
}
