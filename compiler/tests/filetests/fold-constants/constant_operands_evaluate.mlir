module {
  func.func @main(%arg0: tensor<4xf32>) -> (tensor<4xf32>, tensor<?xi32>) {
    %0 = "graph.constant"() {value = dense<[1.0, 2.0, 3.0, 4.0]> : tensor<4xf32>} : () -> tensor<4xf32> loc("a")
    %1 = "graph.constant"() {value = dense<2.0> : tensor<f32>} : () -> tensor<f32> loc("b")
    %2 = "graph.mul"(%0, %1) : (tensor<4xf32>, tensor<f32>) -> tensor<4xf32> loc("Mul_const")
    %3 = "graph.add"(%arg0, %2) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32> loc("Add_runtime")
    %4 = "graph.constant"() {value = dense<0> : tensor<i32>} : () -> tensor<i32> loc("start")
    %5 = "graph.constant"() {value = dense<6> : tensor<i32>} : () -> tensor<i32> loc("limit")
    %6 = "graph.constant"() {value = dense<2> : tensor<i32>} : () -> tensor<i32> loc("delta")
    %7 = "graph.range"(%4, %5, %6) : (tensor<i32>, tensor<i32>, tensor<i32>) -> tensor<?xi32> loc("Range_0")
    func.return %3, %7 : tensor<4xf32>, tensor<?xi32> loc("return")
  } loc("main")
}
