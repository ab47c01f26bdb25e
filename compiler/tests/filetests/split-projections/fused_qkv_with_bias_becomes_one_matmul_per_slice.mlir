module {
  func.func @main(%x: tensor<2x4xf32>) -> (tensor<2x2xf32>, tensor<2x4xf32>) {
    %w = "graph.constant"() {value = dense<[[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [7.0, 8.0, 9.0, 10.0, 11.0, 12.0], [13.0, 14.0, 15.0, 16.0, 17.0, 18.0], [19.0, 20.0, 21.0, 22.0, 23.0, 24.0]]> : tensor<4x6xf32>} : () -> tensor<4x6xf32> loc("W")
    %b = "graph.constant"() {value = dense<[0.5, 1.5, 2.5, 3.5, 4.5, 5.5]> : tensor<6xf32>} : () -> tensor<6xf32> loc("B")
    %s0 = "graph.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64> loc("c0")
    %s2 = "graph.constant"() {value = dense<[2]> : tensor<1xi64>} : () -> tensor<1xi64> loc("c2")
    %s6 = "graph.constant"() {value = dense<[6]> : tensor<1xi64>} : () -> tensor<1xi64> loc("c6")
    %ax = "graph.constant"() {value = dense<[-1]> : tensor<1xi64>} : () -> tensor<1xi64> loc("cax")
    %m = "graph.matmul"(%x, %w) : (tensor<2x4xf32>, tensor<4x6xf32>) -> tensor<2x6xf32> loc("qkv_proj/MatMul")
    %mb = "graph.add"(%m, %b) : (tensor<2x6xf32>, tensor<6xf32>) -> tensor<2x6xf32> loc("qkv_proj/Add")
    %q = "graph.slice"(%mb, %s0, %s2, %ax) : (tensor<2x6xf32>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<2x2xf32> loc("SliceQ")
    %kv = "graph.slice"(%mb, %s2, %s6, %ax) : (tensor<2x6xf32>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<2x4xf32> loc("SliceKV")
    func.return %q, %kv : tensor<2x2xf32>, tensor<2x4xf32> loc(unknown)
  } loc("main")
}
