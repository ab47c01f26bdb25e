module {
  func.func @main(%arg0: tensor<2x3xf32>) -> (tensor<1x2x3xf32>, tensor<2xf32>, tensor<3x2xf32>) {
    %0 = "graph.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64> loc("axes0")
    %1 = "graph.unsqueeze"(%arg0, %0) : (tensor<2x3xf32>, tensor<1xi64>) -> tensor<1x2x3xf32> loc("Unsqueeze_0")
    %2 = "graph.constant"() {value = dense<[-1]> : tensor<1xi64>} : () -> tensor<1xi64> loc("axes1")
    %3 = "graph.reduce_sum"(%arg0, %2) {keepdims = 0 : i64} : (tensor<2x3xf32>, tensor<1xi64>) -> tensor<2xf32> loc("ReduceSum_0")
    %4 = "graph.constant"() {value = dense<[3, -1]> : tensor<2xi64>} : () -> tensor<2xi64> loc("shape")
    %5 = "graph.reshape"(%arg0, %4) : (tensor<2x3xf32>, tensor<2xi64>) -> tensor<3x2xf32> loc("Reshape_0")
    %6 = "graph.cast"(%5) : (tensor<3x2xf32>) -> tensor<3x2xf32> loc("Cast_noop")
    %7 = "graph.identity"(%6) : (tensor<3x2xf32>) -> tensor<3x2xf32> loc("Identity_0")
    func.return %1, %3, %7 : tensor<1x2x3xf32>, tensor<2xf32>, tensor<3x2xf32> loc("return")
  } loc("main")
}
