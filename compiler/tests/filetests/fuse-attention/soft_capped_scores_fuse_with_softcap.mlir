module {
  func.func @main(%q: tensor<1x2x4x8xf32>, %k: tensor<1x2x4x8xf32>, %v: tensor<1x2x4x8xf32>, %mask: tensor<1x1x4x4xf32>) -> tensor<1x2x4x8xf32> {
    %scale = "graph.constant"() {value = dense<0.25> : tensor<f32>} : () -> tensor<f32> loc("scale")
    %cap = "graph.constant"() {value = dense<50.0> : tensor<f32>} : () -> tensor<f32> loc("cap")
    %kt = "graph.transpose"(%k) {perm = array<i64: 0, 1, 3, 2>} : (tensor<1x2x4x8xf32>) -> tensor<1x2x8x4xf32> loc("Transpose")
    %s = "graph.matmul"(%q, %kt) : (tensor<1x2x4x8xf32>, tensor<1x2x8x4xf32>) -> tensor<1x2x4x4xf32> loc("MatMul")
    %ss = "graph.mul"(%s, %scale) : (tensor<1x2x4x4xf32>, tensor<f32>) -> tensor<1x2x4x4xf32> loc("Mul")
    %sd = "graph.div"(%ss, %cap) : (tensor<1x2x4x4xf32>, tensor<f32>) -> tensor<1x2x4x4xf32> loc("Div")
    %t = "graph.tanh"(%sd) : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32> loc("Tanh")
    %c = "graph.mul"(%t, %cap) : (tensor<1x2x4x4xf32>, tensor<f32>) -> tensor<1x2x4x4xf32> loc("Mul_1")
    %m = "graph.add"(%c, %mask) : (tensor<1x2x4x4xf32>, tensor<1x1x4x4xf32>) -> tensor<1x2x4x4xf32> loc("Add")
    %p = "graph.softmax"(%m) {axis = -1 : i64} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32> loc("Softmax")
    %o = "graph.matmul"(%p, %v) : (tensor<1x2x4x4xf32>, tensor<1x2x4x8xf32>) -> tensor<1x2x4x8xf32> loc("MatMul_1")
    func.return %o : tensor<1x2x4x8xf32> loc(unknown)
  } loc("main")
}
