module {
  func.func @main(%arg0: tensor<4x8xf32>) -> tensor<4x4xf32> {
    %0:2 = "graph.split"(%arg0) {axis = 1 : i64} : (tensor<4x8xf32>) -> (tensor<4x4xf32>, tensor<4x4xf32>) loc("Split")
    %1:2 = "graph.split"(%arg0) {axis = 1 : i64} : (tensor<4x8xf32>) -> (tensor<4x4xf32>, tensor<4x4xf32>) loc("Split_dead")
    func.return %0#1 : tensor<4x4xf32> loc(unknown)
  } loc("main")
}
