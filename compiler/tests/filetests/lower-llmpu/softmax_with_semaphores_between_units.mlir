// passes: tile,plan-memory,lower-llmpu
module attributes {llmpu.precision = "fp32", llmpu.target = "edge"} {
  func.func @main(%arg0: tensor<4x8xf32> {graph.name = "x"}) -> (tensor<4x8xf32> {graph.name = "y"}) {
    %0 = "graph.constant"() {value = dense<2.0> : tensor<f32>} : () -> tensor<f32> loc("c")
    %1 = "graph.mul"(%arg0, %0) : (tensor<4x8xf32>, tensor<f32>) -> tensor<4x8xf32> loc("Mul_0")
    %2 = "graph.softmax"(%1) {axis = -1 : i64} : (tensor<4x8xf32>) -> tensor<4x8xf32> loc("Softmax_0")
    func.return %2 : tensor<4x8xf32> loc(unknown)
  } loc("main")
}
