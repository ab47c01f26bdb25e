module {
  func.func @main(%arg0: tensor<4xf32>) -> tensor<4xf32> {
    %0 = "graph.frobnicate"(%arg0) : (tensor<4xf32>) -> tensor<4xf32> loc("Frob")
    func.return %0 : tensor<4xf32> loc(unknown)
  } loc("main")
}
