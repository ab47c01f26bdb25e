module {
  func.func @main(%arg0: tensor<16x64xf32>, %arg1: tensor<32x8xf32>) -> tensor<16x8xf32> {
    %0 = "graph.matmul"(%arg0, %arg1) : (tensor<16x64xf32>, tensor<32x8xf32>) -> tensor<16x8xf32> loc("MatMul_3")
    func.return %0 : tensor<16x8xf32> loc(unknown)
  } loc("main")
}
