module {
  func.func @main(%arg0: tensor<4x3xf32>, %arg1: tensor<4xf32>) -> tensor<4x3xf32> {
    %0 = "graph.add"(%arg0, %arg1) : (tensor<4x3xf32>, tensor<4xf32>) -> tensor<4x3xf32> loc("Add_1")
    func.return %0 : tensor<4x3xf32> loc(unknown)
  } loc("main")
}
