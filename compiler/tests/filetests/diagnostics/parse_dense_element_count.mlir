module {
  func.func @main() -> tensor<3xf32> {
    %0 = "graph.constant"() {value = dense<[1.0, 2.0]> : tensor<3xf32>} : () -> tensor<3xf32>
    func.return %0 : tensor<3xf32>
  }
}
