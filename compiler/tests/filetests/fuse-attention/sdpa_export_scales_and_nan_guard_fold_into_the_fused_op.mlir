module {
  func.func @main(%q: tensor<1x4x4x16xf32>, %k: tensor<1x4x4x16xf32>, %v: tensor<1x4x4x16xf32>, %pad: tensor<1x1x4x4xf32>) -> tensor<1x4x4x16xf32> {
    %r = "graph.constant"() {value = dense<0.5> : tensor<f32>} : () -> tensor<f32> loc("sqrt_scale")
    %qs = "graph.mul"(%q, %r) : (tensor<1x4x4x16xf32>, tensor<f32>) -> tensor<1x4x4x16xf32> loc("Mul_q")
    %kt = "graph.transpose"(%k) {perm = array<i64: 0, 1, 3, 2>} : (tensor<1x4x4x16xf32>) -> tensor<1x4x16x4xf32> loc("Transpose_k")
    %kts = "graph.mul"(%kt, %r) : (tensor<1x4x16x4xf32>, tensor<f32>) -> tensor<1x4x16x4xf32> loc("Mul_k")
    %s = "graph.matmul"(%qs, %kts) : (tensor<1x4x4x16xf32>, tensor<1x4x16x4xf32>) -> tensor<1x4x4x4xf32> loc("MatMul")
    %a = "graph.add"(%s, %pad) : (tensor<1x4x4x4xf32>, tensor<1x1x4x4xf32>) -> tensor<1x4x4x4xf32> loc("Add_mask")
    %p = "graph.softmax"(%a) {axis = -1 : i64} : (tensor<1x4x4x4xf32>) -> tensor<1x4x4x4xf32> loc("Softmax")
    %eq = "graph.equal"(%p, %p) : (tensor<1x4x4x4xf32>, tensor<1x4x4x4xf32>) -> tensor<1x4x4x4xi1> loc("IsNaN")
    %nan = "graph.not"(%eq) : (tensor<1x4x4x4xi1>) -> tensor<1x4x4x4xi1> loc("IsNaN")
    %z = "graph.constant"() {value = dense<0.0> : tensor<f32>} : () -> tensor<f32> loc("zero")
    %g = "graph.where"(%nan, %z, %p) : (tensor<1x4x4x4xi1>, tensor<f32>, tensor<1x4x4x4xf32>) -> tensor<1x4x4x4xf32> loc("Where_guard")
    %o = "graph.matmul"(%g, %v) : (tensor<1x4x4x4xf32>, tensor<1x4x4x16xf32>) -> tensor<1x4x4x16xf32> loc("MatMul_pv")
    func.return %o : tensor<1x4x4x16xf32> loc(unknown)
  } loc("main")
}
