module {
  func.func @main() -> (tensor<2x0x4xf32>, tensor<0xi64>) {
    %0 = "graph.constant"() {value = dense<> : tensor<2x0x4xf32>} : () -> tensor<2x0x4xf32> loc("a")
    %1 = "graph.constant"() {value = dense<> : tensor<0xi64>} : () -> tensor<0xi64> loc("b")
    func.return %0, %1 : tensor<2x0x4xf32>, tensor<0xi64> loc(unknown)
  } loc("main")
}
