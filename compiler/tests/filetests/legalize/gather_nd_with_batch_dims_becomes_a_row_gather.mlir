module {
  func.func @main(%data: tensor<2x3x4x5xf32>, %idx: tensor<2x6x2xi64>) -> (tensor<2x6x5xf32>) {
    %r = "graph.gather_nd"(%data, %idx) {batch_dims = 1 : i64} : (tensor<2x3x4x5xf32>, tensor<2x6x2xi64>) -> tensor<2x6x5xf32> loc("GatherND")
    func.return %r : tensor<2x6x5xf32> loc(unknown)
  } loc("main")
}
