module {
  func.func @main(%arg0: tensor<1x16x64xf32>) -> tensor<?x?x?x?xf32> {
    %0 = "graph.shape"(%arg0) : (tensor<1x16x64xf32>) -> tensor<3xi64> loc("Shape_0")
    %1 = "graph.constant"() {value = dense<1> : tensor<i64>} : () -> tensor<i64> loc("c1")
    %2 = "graph.gather"(%0, %1) {axis = 0 : i64} : (tensor<3xi64>, tensor<i64>) -> tensor<i64> loc("Gather_0")
    %3 = "graph.constant"() {value = dense<0> : tensor<1xi64>} : () -> tensor<1xi64> loc("axes")
    %4 = "graph.unsqueeze"(%2, %3) : (tensor<i64>, tensor<1xi64>) -> tensor<1xi64> loc("Unsqueeze_0")
    %5 = "graph.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64> loc("one")
    %6 = "graph.constant"() {value = dense<[4, 16]> : tensor<2xi64>} : () -> tensor<2xi64> loc("heads")
    %7 = "graph.concat"(%5, %4, %6) {axis = 0 : i64} : (tensor<1xi64>, tensor<1xi64>, tensor<2xi64>) -> tensor<4xi64> loc("Concat_0")
    %8 = "graph.reshape"(%arg0, %7) : (tensor<1x16x64xf32>, tensor<4xi64>) -> tensor<?x?x?x?xf32> loc("Reshape_0")
    func.return %8 : tensor<?x?x?x?xf32> loc("return")
  } loc("main")
}
