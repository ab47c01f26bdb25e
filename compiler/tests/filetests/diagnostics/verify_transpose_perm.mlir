module {
  func.func @main(%arg0: tensor<4x8xf32>) -> tensor<8x4xf32> {
    %0 = "graph.transpose"(%arg0) {perm = array<i64: 1, 1>} : (tensor<4x8xf32>) -> tensor<8x4xf32> loc("Transpose_0")
    func.return %0 : tensor<8x4xf32> loc(unknown)
  } loc("main")
}
