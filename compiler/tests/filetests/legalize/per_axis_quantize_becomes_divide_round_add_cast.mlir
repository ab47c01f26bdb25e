module {
  func.func @main(%x: tensor<3x4xf32>) -> (tensor<3x4xi8>) {
    %s = "graph.constant"() {value = dense<[0.5, 1.0, 2.0, 4.0]> : tensor<4xf32>} : () -> tensor<4xf32> loc("scale")
    %z = "graph.constant"() {value = dense<[0, 1, -1, 2]> : tensor<4xi8>} : () -> tensor<4xi8> loc("zp")
    %y = "graph.quantize_linear"(%x, %s, %z) {axis = 1 : i64} : (tensor<3x4xf32>, tensor<4xf32>, tensor<4xi8>) -> tensor<3x4xi8> loc("Q")
    func.return %y : tensor<3x4xi8> loc(unknown)
  } loc("main")
}
