module {
  func.func @main(%x: tensor<3x4xf32>) -> (tensor<3x4xf32>) {
    %k = "graph.constant"() {value = dense<1> : tensor<i64>} : () -> tensor<i64> loc("k")
    %r = "graph.trilu"(%x, %k) : (tensor<3x4xf32>, tensor<i64>) -> tensor<3x4xf32> loc("Trilu")
    func.return %r : tensor<3x4xf32> loc(unknown)
  } loc("main")
}
