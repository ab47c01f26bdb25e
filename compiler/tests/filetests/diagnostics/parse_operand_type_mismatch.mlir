module {
  func.func @main(%arg0: tensor<4xf32>) -> tensor<4xf32> {
    %0 = "graph.relu"(%arg0) : (tensor<4xbf16>) -> tensor<4xf32>
    func.return %0 : tensor<4xf32>
  }
}
