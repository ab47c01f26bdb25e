module {
  func.func @main(%arg0: tensor<4x4xf32>) -> tensor<4x4xf32> {
    %0 = "graph.exp"(%arg0) : (tensor<4x4xf32>) -> tensor<4x4xf32> loc("dead_a")
    %1 = "graph.tanh"(%0) : (tensor<4x4xf32>) -> tensor<4x4xf32> loc("dead_b")
    %2 = "graph.matmul"(%1, %1) : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32> loc("dead_c")
    %3 = "graph.relu"(%arg0) : (tensor<4x4xf32>) -> tensor<4x4xf32> loc("live")
    %4 = "graph.constant"() {value = dense<0.0> : tensor<4x4xf32>} : () -> tensor<4x4xf32> loc("dead_const")
    "test.effect"(%arg0) : (tensor<4x4xf32>) -> () loc("kept_effect")
    %5 = "test.unknown"() : () -> tensor<4x4xf32> loc("kept_unknown")
    func.return %3 : tensor<4x4xf32> loc(unknown)
  } loc("main")
}
