module {
  func.func @main(%a: tensor<2x3x4xf32>, %b: tensor<2x5x4xf32>) -> (tensor<3x5x2xf32>) {
    %y = "graph.einsum"(%a, %b) {equation = "bij,bkj->ikb"} : (tensor<2x3x4xf32>, tensor<2x5x4xf32>) -> tensor<3x5x2xf32> loc("Einsum")
    func.return %y : tensor<3x5x2xf32> loc(unknown)
  } loc("main")
}
