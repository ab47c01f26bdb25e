module {
  func.func @main(%arg0: tensor<4xf32>) -> tensor<4xf32> {
    %0 = "graph.relu"(%arg7) : (tensor<4xf32>) -> tensor<4xf32> loc("Relu")
    func.return %0 : tensor<4xf32> loc(unknown)
  } loc("main")
}
