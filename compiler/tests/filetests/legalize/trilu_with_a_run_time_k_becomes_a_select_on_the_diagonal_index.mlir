module {
  func.func @main(%x: tensor<2x3x4xf32>, %k: tensor<i64>) -> (tensor<2x3x4xf32>) {
    %r = "graph.trilu"(%x, %k) {upper = 0 : i64} : (tensor<2x3x4xf32>, tensor<i64>) -> tensor<2x3x4xf32> loc("Trilu")
    func.return %r : tensor<2x3x4xf32> loc(unknown)
  } loc("main")
}
