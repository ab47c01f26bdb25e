module {
  func.func @main(%x: tensor<4x16xf32>, %g: tensor<16xf32>, %b: tensor<16xf32>) -> tensor<4x16xf32> {
    %m = "graph.reduce_mean"(%x) {axes = array<i64: -1>, keepdims = 1 : i64} : (tensor<4x16xf32>) -> tensor<4x1xf32> loc("ReduceMean_0")
    %d = "graph.sub"(%x, %m) : (tensor<4x16xf32>, tensor<4x1xf32>) -> tensor<4x16xf32> loc("Sub_0")
    %sq = "graph.mul"(%d, %d) : (tensor<4x16xf32>, tensor<4x16xf32>) -> tensor<4x16xf32> loc("Mul_sq")
    %v = "graph.reduce_mean"(%sq) {axes = array<i64: -1>, keepdims = 1 : i64} : (tensor<4x16xf32>) -> tensor<4x1xf32> loc("ReduceMean_1")
    %eps = "graph.constant"() {value = dense<1.0e-5> : tensor<f32>} : () -> tensor<f32> loc("eps")
    %ve = "graph.add"(%v, %eps) : (tensor<4x1xf32>, tensor<f32>) -> tensor<4x1xf32> loc("Add_eps")
    %s = "graph.sqrt"(%ve) : (tensor<4x1xf32>) -> tensor<4x1xf32> loc("Sqrt_0")
    %y = "graph.div"(%d, %s) : (tensor<4x16xf32>, tensor<4x1xf32>) -> tensor<4x16xf32> loc("Div_0")
    %ys = "graph.mul"(%y, %g) : (tensor<4x16xf32>, tensor<16xf32>) -> tensor<4x16xf32> loc("Mul_scale")
    %yb = "graph.add"(%ys, %b) : (tensor<4x16xf32>, tensor<16xf32>) -> tensor<4x16xf32> loc("Add_bias")
    func.return %yb : tensor<4x16xf32> loc(unknown)
  } loc("main")
}
