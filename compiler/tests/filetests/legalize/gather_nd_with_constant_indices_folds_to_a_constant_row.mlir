module {
  func.func @main(%data: tensor<4x2x16xf32>) -> (tensor<1x2x16xf32>) {
    %idx = "graph.constant"() {value = dense<[[-2]]> : tensor<1x1xi64>} : () -> tensor<1x1xi64> loc("idx")
    %r = "graph.gather_nd"(%data, %idx) : (tensor<4x2x16xf32>, tensor<1x1xi64>) -> tensor<1x2x16xf32> loc("GatherND")
    func.return %r : tensor<1x2x16xf32> loc(unknown)
  } loc("main")
}
