module {
  func.func @main(%x: tensor<2x4xf32>) -> (tensor<2x2xf32>, tensor<2x6xf32>) {
    %w = "graph.constant"() {value = dense<1.0> : tensor<4x6xf32>} : () -> tensor<4x6xf32> loc("W")
    %s0 = "graph.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64> loc("c0")
    %s2 = "graph.constant"() {value = dense<[2]> : tensor<1xi64>} : () -> tensor<1xi64> loc("c2")
    %ax = "graph.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64> loc("cax")
    %m = "graph.matmul"(%x, %w) : (tensor<2x4xf32>, tensor<4x6xf32>) -> tensor<2x6xf32> loc("MatMul")
    %q = "graph.slice"(%m, %s0, %s2, %ax) : (tensor<2x6xf32>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<2x2xf32> loc("Slice")
    %r = "graph.relu"(%m) : (tensor<2x6xf32>) -> tensor<2x6xf32> loc("Relu")
    func.return %q, %r : tensor<2x2xf32>, tensor<2x6xf32> loc(unknown)
  } loc("main")
}
