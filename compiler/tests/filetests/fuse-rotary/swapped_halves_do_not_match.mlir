module {
  func.func @main(%x: tensor<1x4x8x16xf32>, %cos: tensor<1x1x8x16xf32>, %sin: tensor<1x1x8x16xf32>) -> tensor<1x4x8x16xf32> {
    %zero = "graph.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64> loc("c0")
    %half = "graph.constant"() {value = dense<[8]> : tensor<1xi64>} : () -> tensor<1xi64> loc("c8")
    %big = "graph.constant"() {value = dense<[9223372036854775807]> : tensor<1xi64>} : () -> tensor<1xi64> loc("cmax")
    %ax = "graph.constant"() {value = dense<[3]> : tensor<1xi64>} : () -> tensor<1xi64> loc("c3")
    %one = "graph.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64> loc("c1")
    %xc = "graph.mul"(%x, %cos) : (tensor<1x4x8x16xf32>, tensor<1x1x8x16xf32>) -> tensor<1x4x8x16xf32> loc("Mul")
    %x1 = "graph.slice"(%x, %half, %big, %ax, %one) : (tensor<1x4x8x16xf32>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1x4x8x8xf32> loc("Slice")
    %x2 = "graph.slice"(%x, %zero, %half, %ax, %one) : (tensor<1x4x8x16xf32>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1x4x8x8xf32> loc("Slice_1")
    %n = "graph.neg"(%x2) : (tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32> loc("Neg")
    %rot = "graph.concat"(%n, %x1) {axis = -1 : i64} : (tensor<1x4x8x8xf32>, tensor<1x4x8x8xf32>) -> tensor<1x4x8x16xf32> loc("Concat")
    %rs = "graph.mul"(%sin, %rot) : (tensor<1x1x8x16xf32>, tensor<1x4x8x16xf32>) -> tensor<1x4x8x16xf32> loc("Mul_1")
    %y = "graph.add"(%xc, %rs) : (tensor<1x4x8x16xf32>, tensor<1x4x8x16xf32>) -> tensor<1x4x8x16xf32> loc("Add")
    func.return %y : tensor<1x4x8x16xf32> loc(unknown)
  } loc("main")
}
