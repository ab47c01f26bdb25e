module {
  func.func @main(%arg0: tensor<2x3x4xf32>) -> (tensor<4x2x3xf32>, tensor<24xf32>) {
    %0 = "graph.transpose"(%arg0) {perm = array<i64: 1, 2, 0>} : (tensor<2x3x4xf32>) -> tensor<3x4x2xf32> loc("T_a")
    %1 = "graph.transpose"(%0) {perm = array<i64: 1, 2, 0>} : (tensor<3x4x2xf32>) -> tensor<4x2x3xf32> loc("T_b")
    %2 = "graph.reshape"(%arg0) : (tensor<2x3x4xf32>) -> tensor<6x4xf32> loc("R_a")
    %3 = "graph.reshape"(%2) : (tensor<6x4xf32>) -> tensor<24xf32> loc("R_b")
    func.return %1, %3 : tensor<4x2x3xf32>, tensor<24xf32> loc(unknown)
  } loc("main")
}
