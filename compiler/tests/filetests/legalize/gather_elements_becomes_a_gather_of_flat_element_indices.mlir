module {
  func.func @main(%data: tensor<3x4xf32>, %idx: tensor<2x4xi64>) -> (tensor<2x4xf32>) {
    %r = "graph.gather_elements"(%data, %idx) {axis = 0 : i64} : (tensor<3x4xf32>, tensor<2x4xi64>) -> tensor<2x4xf32> loc("GatherElements")
    func.return %r : tensor<2x4xf32> loc(unknown)
  } loc("main")
}
